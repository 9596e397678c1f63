"""Where the one-unit fit stops (``DEEM(anchor=...)``): at the majority vote's reading, or at the likelihood's maximum.

EM (``solver='exact'``) and variational Bayes (``'bayes'``) start from the
majority vote: the M-step at its posteriors estimates every voter's confusion
(and, under informative missingness, its rate of voting per class) as if the
majority vote were the truth, and the posterior under those estimates is a
weighted vote -- a voter counts by its estimated reliability. Iterating to
convergence then moves the hidden class to wherever the model's likelihood
is highest. That is the right move when the model holds (a crowd whose
workers err independently given the class), and the wrong one when it does
not: labeling functions written over the same features fire together, and
the latent class of a conditionally independent model then follows those
co-firing groups, or the number of votes on a row, instead of the class.

* ``'none'``: iterate to convergence (the maximum of the penalized
  likelihood, or of the evidence lower bound).
* ``'majority'``: stop at the M-step of the majority-vote start (no EM
  iteration): the model's reading of the majority vote, one update (the
  "one-step" estimator of Gao, Lu & Zhou 2016, optimal at a good start
  under the model, and robust when the model is wrong).
* ``'auto'``: when a missing label is informative (labeling functions, often
  dependent by construction), ``'majority'`` unless EM's converged fit, fitted too,
  passes the checks of :mod:`deem.anchor_checks`. Those ask whether the voters fire
  together beyond the model, whether rows differ in activity, and whether EM
  relabelled more rows than the anchored fit expects to get wrong. Hard labels
  only: soft labels stay anchored. When it is ignorable (crowds; also ``'mixed'``),
  ``'none'`` where most rows carry at least three labels, else ``'majority'``:
  a latent-class model is identified from three conditionally independent views
  of an item (Kruskal 1977; Allman, Matias & Rhodes 2009), and with fewer on most
  rows the iterated fit rests on reliabilities it estimated from its own
  consensus, where two disagreeing labels cannot say which one is wrong. On the
  shared crowds cut to two labels per task EM to convergence fell as far as
  25 points below majority vote (``web``, .36 against .61), the anchored reading
  never more than one (``benchmarks/few_labels_study.py``).

What was measured is in README ("Where the fit stops").
"""
from __future__ import annotations

import torch

from ._validation import LabelData, check_choice, labels_per_row
from .distributed import total

ANCHORS = ("auto", "majority", "none")
# Views of an item that identify a latent-class model (Kruskal 1977): with fewer on most rows, 'auto' anchors.
MIN_VIEWS = 3


def check_anchor(value) -> str:
    return check_choice("anchor", value, ANCHORS, "'majority': the voters' parameters estimated once from the "
                        "majority vote; 'none': EM to convergence; 'auto': 'majority' under informative "
                        "missingness unless the converged fit passes its checks, and under ignorable "
                        "'none' where most rows carry at least three labels")


def few_labels_share(data: LabelData, comm=None) -> float:
    """Share of the rows with a label that carry fewer than ``MIN_VIEWS`` labels. ``comm``
    (:mod:`deem.distributed`): ``data`` is this rank's share of the rows; the two counts are summed."""
    counts = labels_per_row(data)
    given = counts > 0
    few, rows = total(comm, torch.stack([(given & (counts < MIN_VIEWS)).sum(), given.sum()]).double()).tolist()
    return few / rows if rows > 0 else 0.0


def decide_anchor(anchor: str, missing: str, few_share: float = 0.0) -> str:
    """``'majority'`` or ``'none'``: the user's choice, or under ``'auto'`` the one for ``missing`` (the module);
    ``few_share``: ``few_labels_share`` of the data (read under ignorable and mixed missingness)."""
    if anchor != "auto":
        return anchor
    if missing == "informative":
        return "majority"
    return "majority" if few_share > 0.5 else "none"
