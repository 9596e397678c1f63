"""The one-hidden-unit fits (``solver='exact'`` or ``'bayes'``) with the meaning of a missing label decided.

Glue between the estimator and the solvers: under ``missing='auto'`` the
presence test of :mod:`deem.missingness` decides; the ignorable model is
fitted on the rows that hold a label, the informative one on every row (a row
where every voter abstained is data there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from .._validation import LabelData, evidence_pass, is_sparse, present_rows
from ..anchor import MIN_VIEWS, decide_anchor, few_labels_share
from ..anchor_checks import ConvergedChecks, check_converged, checkable
from ..distributed import total, total_int
from ..log import log
from ..missingness import read_missingness
from ..rbm import RBM
from .soft_evidence import train_soft_evidence
from .exact import train_exact
from .base import Settings, Solver, SolverResult
from .bayes import train_variational


@dataclass
class OneUnitResult:
    rbm: RBM
    history: List[float]
    prior: Optional[dict]        # what solver='bayes' learned
    missing: str                 # 'ignorable', 'informative' or 'mixed' (the one-class voters' abstentions modelled)
    anchor: str                  # 'majority' (one update from the majority vote) or 'none' (converged)
    n_dropped_rows: int          # rows left out of the fit (no label, ignorable model)
    log_bayes_factor: Optional[float]  # the presence test's verdict under missing='auto' (None otherwise)
    one_class_share: Optional[float] = None  # share of the labels from one-class voters (missing='auto')
    monitored: Optional[list] = None  # the monitor's values at each check
    abstaining: Optional[torch.Tensor] = None  # (D,) bool: whose abstentions the model holds (None: per `missing`)
    anchor_checks: Optional[dict] = None  # anchor='auto' under informative missingness: the converged fit's checks
    few_labels_share: Optional[float] = None  # anchor='auto' under ignorable or mixed: rows with < 3 labels


def present_per_voter(data: LabelData) -> torch.Tensor:
    """``(D,)`` rows on which each voter gave a label (soft: a column with mass)."""
    if is_sparse(data):
        return data.labels_per_voter()
    present = data.values.sum(dim=1) > 0 if data.soft else data.values >= 0
    return present.sum(dim=0)


def decide_missing(data: LabelData, missing: str, comm=None):
    """``(meaning, log Bayes factor, one-class share, abstaining)``: the user's choice (``None`` for the rest), or
    under ``'auto'`` the presence test's and the one-class voters' verdict (:mod:`deem.missingness`):
    ``'informative'``, ``'ignorable'``, or ``'mixed'`` where the tests say ignorable but some voters are one-class
    (``abstaining`` ``(D,)`` marks them: their abstentions are modelled, the other voters' missing labels are
    ignorable). ``comm``: ``data`` is this rank's share of the items (:mod:`deem.distributed`)."""
    if missing != "auto":
        return missing, None, None, None
    if not bool((total(comm, present_per_voter(data)) < total_int(comm, data.n_rows)).any()):
        return "ignorable", None, None, None  # nothing is missing
    values = data
    if not is_sparse(data):
        values = data.values
        if data.soft:  # an all-zero column is the missing entry; the tests read each column's argmax
            values = torch.where(values.sum(dim=1) > 0, values.argmax(dim=1),
                                 torch.full_like(values[:, 0], -1).long())
    kind, factor, share, abstaining = read_missingness(values, data.n_classes, comm)
    if kind == "mixed" and data.soft:  # the per-voter model is for hard labels
        kind, abstaining = "ignorable", None
    return kind, factor, share, abstaining


def fit_one_unit(data: LabelData, solver: str, missing: str, prior_strength: float, device,
                 anchor: str = "auto", comm=None, monitor=None, verbose: bool = False) -> OneUnitResult:
    """Fit ``solver`` ('exact' or 'bayes'; soft labels: 'exact', the virtual-evidence EM) under ``missing``
    ('auto', 'ignorable', 'informative'), stopping where ``anchor`` says (:mod:`deem.anchor`)."""
    kind, factor, share, abstaining = decide_missing(data, missing, comm)
    progress = None
    if verbose and (comm is None or comm.rank == 0):
        what = "negative ELBO per row" if solver == "bayes" else "mean negative log-likelihood"
        starts = ("soft", "hard")
        progress = lambda start, step, value: log(f"  {solver} from the {starts[start]} majority vote: EM step "
                                                  f"{step}, {what} {value:.6f}")
    informative = kind in ("informative", "mixed")
    few = few_labels_share(data, comm) if anchor == "auto" and kind != "informative" else None
    stop = decide_anchor(anchor, kind, few or 0.0)
    steps = {} if stop == "none" else {"max_iter": 0}
    keep = present_rows(data)
    rbm = RBM(data.n_classifiers, data.n_classes, 1, device=device, dtype=torch.float64)  # the fit is float64
    if data.soft:  # rows with no column at all enter the informative fit in closed form
        n_empty = total_int(comm, int((~keep).sum()))
        history, monitored = train_soft_evidence(rbm, data.select(keep), prior_strength, informative, n_empty,
                                                 comm=comm, monitor=monitor, progress=progress, **steps)
        return OneUnitResult(rbm, history, None, kind, stop, 0 if informative else n_empty, factor, share, monitored,
                             few_labels_share=few)
    rows = data if informative or bool(keep.all()) else data.select(keep)

    def train(rbm, steps):
        if solver == "bayes":
            return train_variational(rbm, rows, informative=informative, comm=comm, monitor=monitor,
                                     progress=progress, abstaining=abstaining, **steps)
        return train_exact(rbm, rows, prior_strength, informative=informative, comm=comm, monitor=monitor,
                           progress=progress, abstaining=abstaining, **steps)

    fit = train(rbm, steps)
    checks = None
    if anchor == "auto" and kind == "informative" and checkable(data.n_classifiers):
        # deem/anchor_checks.py: keep EM's converged fit where the data show none of what it would mistake for classes
        converged_rbm = RBM(data.n_classifiers, data.n_classes, 1, device=device, dtype=torch.float64)
        converged = train(converged_rbm, {})
        found = check_converged(rows, _posterior(rows, fit), _posterior(rows, converged), comm)
        if found is not None:
            checks = found.as_dict()
            if found.holds:
                rbm, fit, stop = converged_rbm, converged, "none"
    dropped = 0 if informative else total_int(comm, int((~keep).sum()))
    return OneUnitResult(rbm, fit.history, fit.prior, kind, stop, dropped, factor, share, fit.monitored, abstaining,
                         checks, few)


def _posterior(rows, fit) -> torch.Tensor:
    """``(N, K)`` the row posteriors of a one-unit fit."""
    return evidence_pass(rows, fit.logp, fit.logpi, fit.log_abstain, False, True)[3]


# history_ names the objective each solver records at its checks (besides 'loss', the same numbers).
OBJECTIVE_KEY = {"exact": "mean_negative_log_likelihood", "bayes": "negative_elbo_per_row"}


class OneUnitSolver(Solver):
    """``solver='exact'`` (MAP EM) or ``'bayes'`` (variational Bayes) of the one-hidden-unit model;
    on soft labels ``'exact'`` is the virtual-evidence EM."""

    one_unit = True

    def __init__(self, name: str):
        self.name = name

    def check(self, data, settings: Settings) -> None:
        if settings.preprocessing is not None:
            raise ValueError("preprocessing layers are trained by gradient: use solver='gwg' (or 'auto') with them")
        if self.name == "bayes" and data.soft:
            raise ValueError("solver='bayes' takes hard labels; for soft labels use solver='exact' (or 'auto')")

    def fit(self, data, all_rows, settings: Settings) -> SolverResult:
        result = fit_one_unit(all_rows, self.name, settings.missing, settings.prior_strength, settings.device,
                              settings.anchor, settings.comm, settings.monitor, settings.verbose)
        attributes = {"variational_prior_": result.prior, "missing_": result.missing,
                      "missing_log_bayes_factor_": result.log_bayes_factor,
                      "missing_one_class_share_": result.one_class_share, "anchor_": result.anchor,
                      "n_dropped_rows_": result.n_dropped_rows, "init_method_": None,
                      "anchor_checks_": result.anchor_checks, "anchor_few_labels_share_": result.few_labels_share,
                      "informative_voters_": self._informative_voters(result, data.n_classifiers)}
        return SolverResult(result.rbm, result.history,
                            posterior="virtual_evidence" if (self.name == "exact" and data.soft) else "rbm",
                            fitted_all_rows=result.missing in ("informative", "mixed"), attributes=attributes,
                            report=self._report(result, settings, data.soft),
                            history_extra={OBJECTIVE_KEY[self.name]: list(result.history)},
                            monitored=result.monitored)

    @staticmethod
    def _informative_voters(result, d: int):
        """``(D,)`` bool: the voters whose abstentions the fitted model holds."""
        if result.abstaining is not None:
            return result.abstaining.cpu().numpy().astype(bool)
        return np.full(d, result.missing == "informative")

    def _report(self, result, settings: Settings, soft: bool) -> str:
        last = result.history[-1]
        if self.name == "bayes":
            prior = " ".join(f"{k}={v:.3g}" for k, v in result.prior.items())
            learned = "learned prior" if result.anchor == "none" else "prior at its start"
            line = f"DEEM fit (variational Bayes, {learned} {prior}): negative evidence lower bound per row {last:.4f}"
        else:
            line = (f"DEEM fit (exact EM{' of the virtual-evidence model' if soft else ''}, "
                    f"prior_strength={settings.prior_strength}): mean negative log-likelihood {last:.4f}")
        if result.log_bayes_factor is not None:
            why = (f"missing='auto' chose {result.missing!r}: log Bayes factor of class-dependent presence "
                   f"{result.log_bayes_factor:+.1f} (positive: an abstention is evidence); one-class voters give "
                   f"{result.one_class_share:.0%} of the labels (over half: an abstention is evidence)")
            if result.missing == "mixed":
                why += (f"; the abstentions of the {int(result.abstaining.sum())} one-class voter(s) are modelled, "
                        "the other voters' missing labels are ignorable")
        else:
            why = f"missing labels fitted as {result.missing}"
        stop = ("anchor='majority': the voters' parameters estimated once from the majority vote (no EM iteration)"
                if result.anchor == "majority" else "anchor='none': iterated to convergence")
        if result.few_labels_share is not None:
            verdict = "over half: anchored at the majority vote" if result.anchor == "majority" else "half or fewer"
            stop += (f"\nanchor='auto' under {result.missing} missingness: {result.few_labels_share:.0%} of the rows "
                     f"with a label carry fewer than {MIN_VIEWS} ({verdict})")
        if result.anchor_checks is not None:
            checks = ConvergedChecks(**result.anchor_checks)
            verdict = "pass: the converged fit is kept" if checks.holds else "fail: the anchored reading is kept"
            stop += f"\nanchor='auto' checked EM's converged fit ({checks.why()}): {verdict}"
        return f"{line}\n{why}\n{stop}"
