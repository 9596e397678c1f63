"""Turn user input into the canonical tensors the kernels read.

Every bad-input error of the package is raised here, before any kernel runs:
hard labels become a compact integer matrix ``(N, D)`` with ``-1`` for missing,
soft labels a float32 tensor ``(N, K, D)`` whose per-classifier rows sum to 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

# A soft row whose sum is off by more than this is an error, not rounding.
SOFT_SUM_TOLERANCE = 1e-2


@dataclass
class LabelData:
    """Validated labels: ``hard`` is ``(N, D)`` integers, ``soft`` is ``(N, K, D)`` floats."""

    values: torch.Tensor
    soft: bool
    n_classes: int

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_classifiers(self) -> int:
        return int(self.values.shape[-1])

    def to(self, device) -> "LabelData":
        return LabelData(self.values.to(device), self.soft, self.n_classes)

    def select(self, rows) -> "LabelData":
        return LabelData(self.values[rows], self.soft, self.n_classes)


def check_choice(name: str, value, choices, meaning: str) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming them and what they mean."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)} ({meaning}); got {value!r}")
    return value


def is_sparse(data) -> bool:
    """Whether ``data`` holds its labels sparse (:class:`deem.sparse.SparseLabels`)."""
    return hasattr(data, "row_ptr")


def evidence_pass(data, logp, logpi, log_abstain=None, want_counts=True, want_posterior=False):
    """The one-unit model's E-step on hard labels in either layout: (counts, class mass, NLL, posterior)."""
    from . import ops

    if is_sparse(data):
        return data.evidence_pass(logp, logpi, log_abstain, want_counts, want_posterior)
    return ops.hard_evidence_pass(data.values, logp, logpi, log_abstain, want_counts, want_posterior)


def label_dtype(n_classes: int) -> torch.dtype:
    """The smallest signed integer type holding 0..n_classes-1 and -1."""
    if n_classes <= 127:
        return torch.int8
    if n_classes <= 32767:
        return torch.int16
    return torch.int32


def _as_tensor(X: Any) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X.detach()
    if hasattr(X, "to_numpy") and hasattr(X, "columns"):  # pandas DataFrame
        X = X.to_numpy()
    elif hasattr(X, "to_numpy") and hasattr(X, "index"):  # pandas Series: one classifier
        X = X.to_numpy()[:, None]
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"predictions must be a rectangular array; got a ragged sequence ({exc})") from None
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                "predictions must be numeric (integer class labels or probabilities); "
                "got non-numeric values. For string labels use fit_long/predict_long."
            ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"predictions must be numeric; got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def check_labels(
    X: Any,
    n_classes: Optional[int] = None,
    n_classifiers: Optional[int] = None,
    name: str = "predictions",
) -> LabelData:
    """Validate hard ``(N, D)`` or soft ``(N, K, D)`` labels; infer ``n_classes`` if not given.

    Hard labels stored sparse -- a :class:`deem.sparse.SparseLabels`, or a ``scipy.sparse`` matrix
    holding label + 1 (0 = missing) -- come back as a ``SparseLabels``, never densified.
    """
    if X is None:
        raise ValueError(f"{name} is None")
    if is_sparse(X) or _is_scipy_sparse(X):
        return _check_sparse(X, n_classes, n_classifiers, name)
    t = _as_tensor(X)
    if t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels or probabilities, not booleans")
    if t.dtype.is_complex:
        raise TypeError(f"{name} must be real-valued; got {t.dtype}")
    if t.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_classifiers) hard labels or 3-D "
            f"(n_samples, n_classes, n_classifiers) soft labels; got {t.ndim}-D with shape {tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    if n_classes is not None:
        n_classes = _check_n_classes(n_classes)
    data = _check_soft(t, n_classes, name) if t.ndim == 3 else _check_hard(t, n_classes, name)
    if n_classifiers is not None and data.n_classifiers != n_classifiers:
        raise ValueError(
            f"{name} has {data.n_classifiers} classifiers (columns) but the model was fitted on {n_classifiers}"
        )
    return data


def _is_scipy_sparse(X) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return sp.issparse(X)


def _check_sparse(X, n_classes, n_classifiers, name):
    from .sparse import SparseLabels

    if n_classes is not None:
        n_classes = _check_n_classes(n_classes)
    X = SparseLabels.from_scipy(X, n_classes=n_classes) if not is_sparse(X) else X.validate(name)
    if X.n_labels == 0:
        raise ValueError(f"{name} holds no label: nothing to learn from")
    if n_classes is not None and X.n_classes != n_classes:
        if X.n_classes > n_classes and int(X.label.max()) >= n_classes:
            raise ValueError(f"{name} contains the label {int(X.label.max())}, but n_classes={n_classes} allows "
                             f"only 0..{n_classes - 1}")
        X = SparseLabels(X.row_ptr, X.voter, X.label.to(label_dtype(n_classes)), X.col_ptr, X.col_row,
                         X.col_label.to(label_dtype(n_classes)), n_classes)
    elif X.n_classes < 2:
        X = SparseLabels(X.row_ptr, X.voter, X.label, X.col_ptr, X.col_row, X.col_label, 2)
    if n_classifiers is not None and X.n_classifiers != n_classifiers:
        raise ValueError(f"{name} has {X.n_classifiers} classifiers (columns) but the model was fitted on "
                         f"{n_classifiers}")
    return X


def _check_n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise TypeError(f"n_classes must be an integer; got {type(n_classes).__name__}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2; got {n_classes}")
    return int(n_classes)


def _check_hard(t: torch.Tensor, n_classes: Optional[int], name: str) -> LabelData:
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{name} contains NaN or infinite values; mark a missing label with -1 "
                "(for a DataFrame: df.fillna(-1))"
            )
        if not bool((t == torch.round(t)).all()):
            raise ValueError(
                f"{name} is 2-D, so it is read as hard class labels, but it holds non-integer values; "
                "pass soft labels as a 3-D array (n_samples, n_classes, n_classifiers)"
            )
    lo, hi = int(t.min()), int(t.max())
    if lo < -1:
        raise ValueError(f"{name} contains the label {lo}; labels must be in 0..n_classes-1, or -1 for missing")
    if n_classes is None:
        if hi < 0:
            raise ValueError(f"every entry of {name} is missing (-1): nothing to learn from")
        n_classes = max(hi + 1, 2)
    elif hi >= n_classes:
        raise ValueError(f"{name} contains the label {hi}, but n_classes={n_classes} allows only 0..{n_classes - 1}")
    values = t.to(label_dtype(n_classes)).contiguous()
    return LabelData(values, soft=False, n_classes=n_classes)


def _check_soft(t: torch.Tensor, n_classes: Optional[int], name: str) -> LabelData:
    t = t.to(torch.float32) if t.dtype != torch.float64 else t
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} (soft labels) contains NaN or infinite values")
    if n_classes is not None and t.shape[1] != n_classes:
        raise ValueError(
            f"{name} is 3-D, read as soft labels (n_samples, n_classes, n_classifiers), but its second "
            f"dimension is {t.shape[1]} while n_classes={n_classes}"
        )
    if t.shape[1] < 2:
        raise ValueError(f"soft labels need at least 2 classes on axis 1; got shape {tuple(t.shape)}")
    if bool((t < 0).any()):
        raise ValueError(f"{name} (soft labels) contains negative probabilities")
    sums = t.sum(dim=1)
    missing = sums == 0  # an all-zero column: this classifier gave no label on this row
    worst = float(torch.where(missing, torch.zeros_like(sums), (sums - 1).abs()).max())
    if worst > SOFT_SUM_TOLERANCE:
        raise ValueError(
            f"{name} (soft labels) must sum to 1 over axis 1 (classes) for every sample and classifier "
            f"(or be all zero where a classifier gave no label); the worst sum is off by {worst:.3g}. "
            "Check the axis order: (n_samples, n_classes, n_classifiers)"
        )
    values = (t / torch.where(missing, torch.ones_like(sums), sums).unsqueeze(1)).to(torch.float32).contiguous()
    return LabelData(values, soft=True, n_classes=int(t.shape[1]))


def labels_per_row(data: LabelData) -> torch.Tensor:
    """``(N,)`` the labels each row carries (soft: its non-zero columns)."""
    if is_sparse(data):
        return data.labels_per_row()
    present = data.values.sum(dim=1) > 0 if data.soft else data.values >= 0
    return present.sum(dim=1)


def present_rows(data: LabelData) -> torch.Tensor:
    """Boolean mask of the rows with at least one label (soft: at least one non-zero column)."""
    return labels_per_row(data) > 0


def check_true_labels(y: Any, n_rows: int) -> np.ndarray:
    """Gold labels for ``score``: integers, ``-1`` (or NaN) where a task has no gold label."""
    arr = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if arr.ndim != 1:
        raise ValueError(f"true_labels must be 1-D; got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"true_labels has {arr.shape[0]} entries but predictions has {n_rows} rows")
    if arr.dtype.kind == "f":
        arr = np.where(np.isnan(arr), -1, arr)
        if not np.all(arr == np.round(arr)):
            raise ValueError("true_labels must be integer class labels")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"true_labels must be integer class labels; got dtype {arr.dtype}")
    return arr.astype(np.int64)
