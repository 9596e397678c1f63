"""The one-hidden-unit fits (``solver='exact'`` or ``'bayes'``) with the meaning of a missing label decided.

Glue between the estimator and the solvers: under ``missing='auto'`` the
presence test of :mod:`deem.missingness` decides; the ignorable model is
fitted on the rows that hold a label, the informative one on every row (a row
where every voter abstained is data there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ._validation import LabelData, present_rows
from .missingness import presence_log_bayes_factor
from .rbm import RBM
from .solvers import OneUnitFit, train_exact
from .variational import train_variational


@dataclass
class OneUnitResult:
    rbm: RBM
    fit: OneUnitFit
    missing: str                 # 'ignorable' or 'informative'
    n_dropped_rows: int          # rows left out of the fit (no label, ignorable model)
    log_bayes_factor: Optional[float]  # the presence test's verdict under missing='auto' (None otherwise)


def present_per_voter(data: LabelData) -> torch.Tensor:
    """``(D,)`` rows on which each voter gave a label (soft: a column with mass)."""
    present = data.values.sum(dim=1) > 0 if data.soft else data.values >= 0
    return present.sum(dim=0)


def decide_missing(data: LabelData, missing: str):
    """``(meaning, log Bayes factor or None)``: the user's choice, or the presence test's under ``'auto'``."""
    if missing != "auto":
        return missing, None
    if data.soft or not bool((present_per_voter(data) < data.n_rows).any()):
        return "ignorable", None  # nothing is missing (or soft labels: fitted as ignorable)
    factor = presence_log_bayes_factor(data.values, data.n_classes)
    return ("informative" if factor > 0 else "ignorable"), factor


def fit_one_unit(data: LabelData, solver: str, missing: str, prior_strength: float, device) -> OneUnitResult:
    """Fit ``solver`` ('exact' or 'bayes') on hard labels under ``missing`` ('auto', 'ignorable', 'informative')."""
    if data.soft:
        raise ValueError("fit_one_unit takes hard labels")
    kind, factor = decide_missing(data, missing)
    informative = kind == "informative"
    keep = present_rows(data)
    rows = data if informative else data.select(keep)
    rbm = RBM(data.n_classifiers, data.n_classes, 1, device=device)
    if solver == "bayes":
        fit = train_variational(rbm, rows, informative=informative)
    else:
        fit = train_exact(rbm, rows, prior_strength, informative=informative)
    return OneUnitResult(rbm, fit, kind, 0 if informative else int((~keep).sum()), factor)
