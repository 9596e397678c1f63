"""What a missing label means, and how the data decide it (``DEEM(missing=...)``).

* ``'ignorable'``: the voter never saw the item (crowds): a missing entry says
  nothing about the class. The one-unit model scores only the present labels,
  ``p(v) = sum_m pi_m prod_{i present} P_i(v_i | m)``.
* ``'informative'``: the voter looked and abstained (labeling functions, models
  that refuse to answer): abstaining is one more visible state, learned per voter
  and class, ``P_i(abstain | m)``, so ``p(v) = sum_m pi_m prod_{i present}
  P_i(v_i | m) prod_{i absent} P_i(abstain | m)``. A row with no label at all is
  data too (every voter abstained).
* ``'mixed'`` (chosen by ``'auto'`` only): the abstentions of some voters are
  modelled as under informative, the other voters' missing labels are ignorable.
* ``'auto'``: the data decide, before any fit, by a Bayes factor. Missingness is
  informative when whether a voter answers depends on the class; the class is
  not known, but what the *other* voters say about the row is a proxy that does
  not involve the voter itself. For each voter, the rows are grouped by the
  majority vote of the other voters (one more group where none of them voted),
  and two models of its presence are compared by their marginal likelihood
  under uniform Beta priors: one rate for every row (ignorable) or one rate per
  group (informative). The log Bayes factors add up over the voters (a voter
  present on every row, or on none, says nothing and is left out); ``'auto'``
  picks ``'informative'`` when the sum is positive. Labeling functions, which
  fire on the items of their class, give large positive sums; crowds, whose
  workers are shown tasks regardless of the answer, negative ones, also where
  workers take tasks in batches (a pattern the latent-class fit would otherwise
  mistake for classes). The test reads every label once: O(labels * K).
  A second reading decides too: when more than half of the labels come from
  *one-class voters* -- a voter whose labels all name one class, beyond what
  chance gives at the labels' overall class shares (probability under 5%) --
  the ignorable model would read most of the evidence as saying nothing (a
  voter that always names the same class tells nothing about the class when
  its answering does not depend on it), so ``'auto'`` picks informative. This
  catches sparse labeling-function ensembles where the Bayes factor lacks
  power; on crowds such voters hold at most 5% of the labels (``product``).
  Where both readings say ignorable, a third decides per voter (``'mixed'``,
  ``agreeing_one_class_voters``): a one-class voter whose presence follows its
  class (the other voters name its class on its rows more often than on all
  rows) has its abstentions modelled; the other voters stay ignorable.
"""
from __future__ import annotations


import numpy as np
import torch
from scipy.special import betaln

from ._validation import check_choice
from .distributed import total, total_many

MISSING = ("auto", "ignorable", "informative")


def check_missing(value) -> str:
    return check_choice("missing", value, MISSING, "'ignorable': a missing label says nothing, as in crowds; "
                        "'informative': an abstention is evidence, as with labeling functions; 'auto': the data "
                        "decide")


def abstention_counts(counts: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """``(D, K)`` expected abstentions per voter and class: the class mass minus the voter's present labels.

    ``counts`` ``(K_l, K_m, D)`` are the expected counts of the present labels over the same rows as ``mass``.
    """
    return (mass.unsqueeze(0) - counts.sum(dim=0).t()).clamp(min=0.0)


# Share of the labels above which one-class voters decide for informative missingness; and the chance
# level below which a voter's labels naming a single class count as "one-class" rather than luck.
ONE_CLASS_MAJORITY = 0.5
ONE_CLASS_CHANCE = 0.05


def _triples(values):
    """``(n, d, item, voter, label)`` of dense ``(N, D)`` labels (``-1`` missing) or a ``SparseLabels``."""
    if hasattr(values, "row_ptr"):
        return (values.n_rows, values.n_classifiers, *values.triples())
    x = values.long()
    row, col = (x >= 0).nonzero(as_tuple=True)
    return x.shape[0], x.shape[1], row, col, x[row, col]


def _tally(a: torch.Tensor, b: torch.Tensor, n_a: int, n_b: int) -> torch.Tensor:
    """``(n_a, n_b)`` float64 counts of the pairs ``(a_j, b_j)`` (a bincount: integer, exact, deterministic)."""
    return torch.bincount(a.long() * n_b + b.long(), minlength=n_a * n_b).view(n_a, n_b).double()


class _Labels:
    """The labels every reading reads, tallied once: this rank's ``(item, voter, label)`` triples, the labels
    per voter and class (summed over ranks), and, on first use, each row's majority vote and each label's
    leave-one-out majority vote (``votes``)."""

    def __init__(self, values, k: int, comm=None):
        self.k = k
        self.n, self.d, self.row, self.col, self.lab = _triples(values)
        self.voter_counts = total(comm, _tally(self.col, self.lab, self.d, k))  # (D, K)
        self._votes = None

    def votes(self):
        """``(group (N,), loo (labels,))``: a row's majority vote (``k``: no vote) and, for each label, the
        majority vote of the *other* voters on its row (``k``: none of them voted)."""
        if self._votes is None:
            k, n, row, lab = self.k, self.n, self.row, self.lab
            votes = torch.bincount(row.long() * k + lab.long(), minlength=n * k).view(n, k)
            given = votes.sum(dim=1)
            none = torch.full((n,), k, device=lab.device)
            group = torch.where(given > 0, votes.argmax(dim=1), none)
            # The others' vote, without an (labels, K) table: a label that is not its row's (first) majority
            # leaves that majority first; one that is leaves the row's majority with one vote less.
            rows = torch.arange(n, device=lab.device)
            less = votes.clone()
            less[rows, group.clamp(max=k - 1)] -= 1
            second = torch.where(given > 1, less.argmax(dim=1), none)
            loo = torch.where(lab.long() == group[row], second[row], group[row])
            self._votes = group, loo
        return self._votes


def _labels(values, k: int, comm=None) -> _Labels:
    return values if isinstance(values, _Labels) else _Labels(values, k, comm)


def _one_class(labels: _Labels):
    """``(one-class mask (D,), labels per voter (D,))``."""
    counts = labels.voter_counts
    given = counts.sum(dim=1)
    if float(given.sum()) == 0:
        return torch.zeros(labels.d, dtype=torch.bool, device=given.device), given
    shares = counts.sum(dim=0) / given.sum()
    chance = (shares.unsqueeze(0) ** given.unsqueeze(1)).sum(dim=1)  # (D,)
    return ((counts > 0).sum(dim=1) == 1) & (chance < ONE_CLASS_CHANCE), given


def one_class_voters(values, n_classes: int, comm=None) -> torch.Tensor:
    """``(D,)`` bool: the one-class voters (see the module): all their labels name one class, and the chance of
    that at the labels' overall class shares, ``sum_c share_c ** n``, is under ``ONE_CLASS_CHANCE``.
    ``comm`` (:mod:`deem.distributed`): ``values`` is this rank's share of the items; the counts are summed."""
    return _one_class(_labels(values, n_classes, comm))[0]


def one_class_share(values, n_classes: int, comm=None) -> float:
    """Share of the labels given by one-class voters (``one_class_voters``)."""
    one_class, given = _one_class(_labels(values, n_classes, comm))
    if float(given.sum()) == 0:
        return 0.0
    return float(given[one_class].sum() / given.sum())


def presence_log_bayes_factor(values, n_classes: int, comm=None) -> float:
    """Log Bayes factor of "a voter's presence depends on the class" against "it does not" (see the module).

    ``values`` ``(N, D)`` hard labels, ``-1`` missing, or a :class:`deem.sparse.SparseLabels`.
    Positive: the data favour informative missingness. ``comm``: ``values`` is this rank's share of the
    items; the tables the test reads (rows per group, a voter's presence per group) are summed.
    """
    labels = _labels(values, n_classes, comm)
    k, d, row, col = n_classes, labels.d, labels.row, labels.col
    group, loo = labels.votes()
    g1 = k + 1
    rows_per_group = torch.bincount(group, minlength=g1).double()  # (G,)
    present_in = _tally(col, loo, d, g1)  # present rows by the others' vote
    present_mv = _tally(col, group[row], d, g1)  # present rows by the full vote
    total_present = torch.bincount(col, minlength=d).double()
    rows_per_group, present_in, present_mv, total_present = total_many(comm, rows_per_group, present_in, present_mv,
                                                                       total_present)
    n = int(round(float(rows_per_group.sum())))
    size = rows_per_group.unsqueeze(0) - present_mv + present_in  # (D, G): rows in each group, per voter
    hits = present_in
    keep = (total_present > 0) & (total_present < n)
    size, hits, total_present = (t.cpu().numpy() for t in (size[keep], hits[keep], total_present[keep]))
    grouped = np.where(size > 0, betaln(1.0 + hits, 1.0 + size - hits), 0.0).sum()
    pooled = betaln(1.0 + total_present, 1.0 + n - total_present).sum()
    return float(grouped - pooled)


def agreeing_one_class_voters(values, n_classes: int, comm=None) -> torch.Tensor:
    """``(D,)`` bool: one-class voters (``one_class_voters``) whose presence goes with their class.

    Take a one-class voter naming class c, and the rows it labelled on which another voter gave a label.
    If whether it answers does not depend on the class, the other voters' majority vote on those rows
    names c at the rate it does on every row, ``p_c`` (a spammer that always says c: its rows are any
    rows). If it answers on the items of class c (a labeling function), the others name c more often.
    Its ``h`` of ``m`` rows where they do are compared under ``Binomial(m, p_c)`` and ``Binomial(m, q)``,
    ``q ~ U(0, 1)``: the voter is kept when the log Bayes factor ``log B(h + 1, m - h + 1) - h log p_c -
    (m - h) log(1 - p_c)`` is positive. ``p_c`` is the share of the rows with a vote whose majority
    vote is c. ``comm``: ``values`` is this rank's share of the items; the tables are summed.
    """
    labels = _labels(values, n_classes, comm)
    k, d, col, lab = n_classes, labels.d, labels.col, labels.lab
    one_class = _one_class(labels)[0]
    if not bool(one_class.any()):
        return one_class
    group, loo = labels.votes()
    rows_per_group = torch.bincount(group, minlength=k + 1).double()
    seen = loo < k
    agree = _tally(col[seen], (loo[seen] == lab[seen]).long(), d, 2)  # (D, 2): others disagree, agree
    rows_per_group, agree = total_many(comm, rows_per_group, agree)
    share = (rows_per_group[:k] / rows_per_group[:k].sum().clamp(min=1.0)).cpu().numpy()
    c = labels.voter_counts.argmax(dim=1).cpu().numpy()
    h, m = agree[:, 1].cpu().numpy(), agree.sum(dim=1).cpu().numpy()
    p = np.clip(share[c], 1e-12, 1.0 - 1e-12)
    log_factor = betaln(h + 1.0, m - h + 1.0) - h * np.log(p) - (m - h) * np.log1p(-p)
    return one_class & torch.as_tensor((m > 0) & (log_factor > 0), device=one_class.device)


def read_missingness(values, n_classes: int, comm=None):
    """``(meaning, log Bayes factor, one-class share, abstaining)``: the three readings of ``'auto'`` (see the
    module) over one tally of the labels. ``meaning`` is ``'informative'`` when the Bayes factor is positive
    or one-class voters give over half the labels; else ``'mixed'`` when some one-class voters agree
    (``abstaining`` ``(D,)`` marks them), else ``'ignorable'`` (``abstaining`` None for both)."""
    labels = _Labels(values, n_classes, comm)
    factor = presence_log_bayes_factor(labels, n_classes, comm)
    share = one_class_share(labels, n_classes, comm)
    if factor > 0 or share > ONE_CLASS_MAJORITY:
        return "informative", factor, share, None
    abstaining = agreeing_one_class_voters(labels, n_classes, comm)
    if bool(abstaining.any()):
        return "mixed", factor, share, abstaining
    return "ignorable", factor, share, None
