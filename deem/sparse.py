"""Hard labels stored sparse: memory O(labels), whatever items x voters is.

A crowd gives each task a handful of labels out of thousands of workers; a dense
``(tasks, workers)`` matrix is almost all "missing". :class:`SparseLabels` keeps
only the ``(item, voter, label)`` triples, in two views of the same labels:

* by item (CSR): ``row_ptr`` ``(N + 1)``, ``voter`` ``(L)``, ``label`` ``(L)`` -- a row's
  labels are ``[row_ptr[n], row_ptr[n + 1])``, voters ascending;
* by voter (CSC): ``col_ptr`` ``(D + 1)``, ``col_row`` ``(L)``, ``col_label`` ``(L)`` --
  what the CUDA kernels read to give each voter's expected counts one owner (the CPU kernel fuses
  the counts into the by-item pass).

A missing label is an absent triple. Build one with :meth:`SparseLabels.from_triples`
(three integer arrays, e.g. the coded columns of a long-format frame),
:meth:`SparseLabels.from_dense` (``-1`` = missing) or :meth:`SparseLabels.from_scipy`
(a ``scipy.sparse`` matrix whose stored value is **label + 1**: a stored 0, or no entry,
is missing -- so label 0 survives scipy's habit of dropping explicit zeros).

The samplers and the multi-unit models read a batch of rows at a time as :class:`PaddedRows`
(the ``ell_*`` ops' layout): each row's labels in ``S`` slots, ``S`` the longest row, gathered from
the by-item view on the device (memory batch x S, never items x voters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ._validation import label_dtype


@dataclass
class SparseLabels:
    row_ptr: torch.Tensor
    voter: torch.Tensor
    label: torch.Tensor
    col_ptr: torch.Tensor
    col_row: torch.Tensor
    col_label: torch.Tensor
    n_classes: int
    soft: bool = False

    # ---------------------------------------------------------------- shape
    @property
    def n_rows(self) -> int:
        return int(self.row_ptr.shape[0]) - 1

    @property
    def n_classifiers(self) -> int:
        return int(self.col_ptr.shape[0]) - 1

    @property
    def n_labels(self) -> int:
        return int(self.voter.shape[0])

    @property
    def device(self) -> torch.device:
        return self.voter.device

    def row_of_label(self) -> torch.Tensor:
        """``(L,)`` the item of every label in the by-item view (computed once: the views never change)."""
        rows = self.__dict__.get("_row_of_label")
        if rows is None:
            lengths = self.row_ptr[1:] - self.row_ptr[:-1]
            rows = torch.repeat_interleave(torch.arange(self.n_rows, device=self.device), lengths)
            self.__dict__["_row_of_label"] = rows
        return rows

    def labels_per_row(self) -> torch.Tensor:
        """``(N,)`` labels per item (computed once: the samplers read it every batch)."""
        lengths = self.__dict__.get("_labels_per_row")
        if lengths is None:
            lengths = self.row_ptr[1:] - self.row_ptr[:-1]
            self.__dict__["_labels_per_row"] = lengths
        return lengths

    def max_row_length(self) -> int:
        """The most labels any item has (0 without items): the slot count of :meth:`padded` (cached)."""
        width = self.__dict__.get("_max_row_length")
        if width is None:
            width = int(self.labels_per_row().max()) if self.n_rows else 0
            self.__dict__["_max_row_length"] = width
        return width

    def padded(self, rows=None) -> "PaddedRows":
        """The items ``rows`` (indices on the labels' device; default all) as :class:`PaddedRows`.

        A gather on the device, no host round trip (the width, :meth:`max_row_length`, is read once)."""
        width = self.max_row_length()
        if rows is None:
            rows = torch.arange(self.n_rows, device=self.device)
        rows = torch.as_tensor(rows, device=self.device).long()
        lengths = self.labels_per_row()[rows]
        slot = torch.arange(width, device=self.device)
        valid = slot.unsqueeze(0) < lengths.unsqueeze(1)
        if self.n_labels == 0:
            empty = torch.full((rows.shape[0], width), -1, dtype=torch.int64, device=self.device)
            return PaddedRows(empty, empty.to(self.label.dtype), self.n_classes)
        at = (self.row_ptr[:-1][rows].unsqueeze(1) + slot.unsqueeze(0)).clamp(max=self.n_labels - 1)
        missing = torch.full((), -1, dtype=torch.int64, device=self.device)
        voter = torch.where(valid, self.voter[at], missing)
        values = torch.where(valid, self.label[at], missing.to(self.label.dtype))
        return PaddedRows(voter, values, self.n_classes)

    def labels_per_voter(self) -> torch.Tensor:
        return self.col_ptr[1:] - self.col_ptr[:-1]

    # --------------------------------------------------------- constructors
    @classmethod
    def from_triples(cls, items, voters, labels, n_rows: Optional[int] = None, n_voters: Optional[int] = None,
                     n_classes: Optional[int] = None, device=None) -> "SparseLabels":
        """From three equal-length integer arrays: item index, voter index, label (``0..K-1``).

        ``n_rows`` / ``n_voters`` / ``n_classes`` default to one more than the largest index seen.
        A repeated ``(item, voter)`` pair is an error: one voter gives one label per item.
        """
        items, voters, labels = (_int_array(a, name) for a, name in
                                 ((items, "items"), (voters, "voters"), (labels, "labels")))
        if not (items.shape == voters.shape == labels.shape):
            raise ValueError(f"items, voters and labels must have the same length; got {items.shape[0]}, "
                             f"{voters.shape[0]} and {labels.shape[0]}")
        for arr, name in ((items, "items"), (voters, "voters"), (labels, "labels")):
            if arr.size and arr.min() < 0:
                raise ValueError(f"{name} must be non-negative (a missing label is an absent triple); "
                                 f"got {int(arr.min())}")
        n_rows = _count(items, n_rows, "n_rows", "items")
        n_voters = _count(voters, n_voters, "n_voters", "voters")
        n_classes = _count(labels, n_classes, "n_classes", "labels")
        if n_classes < 1:
            raise ValueError("n_classes must be at least 1 (no labels given and no n_classes)")
        return cls._build(items, voters, labels, n_rows, n_voters, n_classes, device,
                          duplicate=lambda j: f"voter {int(voters[j])} labels item {int(items[j])} more than once; "
                          "give one label per (item, voter)")

    @classmethod
    def from_dense(cls, values, n_classes: Optional[int] = None, device=None) -> "SparseLabels":
        """From a dense ``(N, D)`` matrix of labels, ``-1`` = missing."""
        arr = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        if arr.ndim != 2:
            raise ValueError(f"a dense label matrix must be 2-D (items, voters); got shape {arr.shape}")
        arr = _int_array(arr, "values")
        if arr.size and arr.min() < -1:
            raise ValueError(f"labels must be -1 (missing) or 0..K-1; got {int(arr.min())}")
        items, voters = np.nonzero(arr >= 0)
        return cls._build(items, voters, arr[items, voters], arr.shape[0], arr.shape[1],
                          _count(arr[arr >= 0], n_classes, "n_classes", "labels"), device)

    @classmethod
    def from_scipy(cls, matrix, n_classes: Optional[int] = None, device=None) -> "SparseLabels":
        """From a ``scipy.sparse`` matrix ``(N, D)`` whose stored values are **label + 1** (0 = missing)."""
        import scipy.sparse as sp

        if not sp.issparse(matrix):
            raise TypeError(f"from_scipy expects a scipy.sparse matrix; got {type(matrix).__name__}")
        coo = sp.coo_matrix(matrix)  # duplicates kept: a repeated (item, voter) is an error, never a sum
        values = np.asarray(coo.data)
        if values.size and not np.issubdtype(values.dtype, np.integer):
            if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
                raise ValueError("a scipy.sparse label matrix must hold whole numbers (label + 1)")
        values = values.astype(np.int64)
        keep = values != 0
        if (values[keep] < 0).any():
            raise ValueError("a scipy.sparse label matrix holds label + 1 >= 1 (0 = missing); got a negative entry")
        return cls._build(coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64), values[keep] - 1,
                          coo.shape[0], coo.shape[1], _count(values[keep] - 1, n_classes, "n_classes", "labels"),
                          device)

    @classmethod
    def _build(cls, items, voters, labels, n_rows, n_voters, n_classes, device, duplicate=None) -> "SparseLabels":
        """Both views from triples in any order (``ops.csr_build``, a counting sort: O(labels + items + voters)).

        A repeated ``(item, voter)`` pair is a ``ValueError``; ``duplicate(j)`` words its message for the
        pair at input position ``j`` in the caller's terms (default: by index)."""
        from . import ops

        labels = np.asarray(labels)
        if labels.size and (int(labels.max()) >= n_classes or int(labels.min()) < 0):
            bad = int(labels.max()) if int(labels.max()) >= n_classes else int(labels.min())
            raise ValueError(f"labels must be in 0..{n_classes - 1} (n_classes={n_classes}); got {bad}")
        index = lambda a: torch.from_numpy(np.require(a, np.int64, ["C", "W"]))
        row_ptr, voter, label, col_ptr, col_row, col_label, first = ops.csr_build(
            index(items), index(voters), index(labels).to(label_dtype(n_classes)),
            n_rows, n_voters, n_classes)
        j = int(first)
        if j >= 0:
            raise ValueError(duplicate(j) if duplicate else (f"voter {int(np.asarray(voters)[j])} labels item "
                                                             f"{int(np.asarray(items)[j])} more than once; give "
                                                             "one label per (item, voter)"))
        return cls(*(v.to(device) if device is not None else v for v in (row_ptr, voter, label, col_ptr, col_row,
                                                                           col_label)), int(n_classes))

    def triples(self):
        """``(item, voter, label)`` of every label, by item (int64, int64, int64)."""
        return self.row_of_label(), self.voter, self.label.long()

    def evidence_pass(self, logp, logpi, log_abstain=None, want_counts=True, want_posterior=False):
        """The one-unit model's E-step on these labels (``ops.csr_evidence_pass``)."""
        from . import ops

        return ops.csr_evidence_pass(self.row_ptr, self.voter, self.label, self.col_ptr, self.col_row,
                                     self.col_label, logp, logpi, log_abstain, want_counts, want_posterior)

    def density(self) -> float:
        return self.n_labels / max(self.n_rows * self.n_classifiers, 1)

    def validate(self, name: str = "labels") -> "SparseLabels":
        """``ValueError``/``TypeError`` unless the two views are well formed and hold the same labels.

        The constructors build valid values; this guards one assembled by hand before any kernel reads
        it (the kernels bounds-check as well). O(labels)."""
        views = (("row_ptr", self.row_ptr), ("voter", self.voter), ("col_ptr", self.col_ptr),
                 ("col_row", self.col_row))
        for what, t in views:
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype != torch.int64:
                raise TypeError(f"{name}.{what} must be a 1-D int64 tensor")
        for what, t in (("label", self.label), ("col_label", self.col_label)):
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype not in (torch.int8, torch.int16,
                                                                                  torch.int32, torch.int64):
                raise TypeError(f"{name}.{what} must be a 1-D integer tensor")
        k, n, d, n_labels = int(self.n_classes), self.n_rows, self.n_classifiers, self.n_labels
        if k < 1 or n < 0 or d < 0:
            raise ValueError(f"{name}: n_classes, row_ptr and col_ptr must describe at least one class")
        if not (self.label.shape[0] == self.col_row.shape[0] == self.col_label.shape[0] == n_labels):
            raise ValueError(f"{name}: the by-item and by-voter views must hold the same number of labels")
        for what, ptr in (("row_ptr", self.row_ptr), ("col_ptr", self.col_ptr)):
            if int(ptr[0]) != 0 or int(ptr[-1]) != n_labels or bool((ptr[1:] < ptr[:-1]).any()):
                raise ValueError(f"{name}.{what} must rise from 0 to the number of labels ({n_labels})")
        if n_labels:
            for what, t, bound in (("voter", self.voter, d), ("col_row", self.col_row, n), ("label", self.label, k),
                                   ("col_label", self.col_label, k)):
                lo, hi = int(t.min()), int(t.max())
                if lo < 0 or hi >= bound:
                    raise ValueError(f"{name}.{what} holds {lo if lo < 0 else hi}, outside 0..{bound - 1}")
            if not torch.equal(torch.bincount(self.voter, minlength=d), self.labels_per_voter()):
                raise ValueError(f"{name}: the by-voter view does not hold the by-item view's voters")
        return self

    # ------------------------------------------------------------- views
    def to_dense(self) -> torch.Tensor:
        """``(N, D)`` labels, ``-1`` = missing (memory N x D: for tests and small data)."""
        out = torch.full((self.n_rows, self.n_classifiers), -1, dtype=self.label.dtype, device=self.device)
        out[self.row_of_label(), self.voter] = self.label
        return out

    def to(self, device) -> "SparseLabels":
        return SparseLabels(*(t.to(device) for t in (self.row_ptr, self.voter, self.label, self.col_ptr,
                                                      self.col_row, self.col_label)), self.n_classes)

    def select(self, rows) -> "SparseLabels":
        """The items ``rows`` (a slice, a boolean mask or indices), in that order, same voters."""
        if isinstance(rows, slice):
            rows = torch.arange(self.n_rows, device=self.device)[rows]
        rows = torch.as_tensor(rows, device=self.device)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        rows = rows.long()
        lengths = self.labels_per_row()[rows]
        starts = self.row_ptr[:-1][rows]
        offsets = torch.arange(int(lengths.sum()), device=self.device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths)
        pick = torch.repeat_interleave(starts, lengths) + offsets
        new_items = torch.repeat_interleave(torch.arange(rows.shape[0], device=self.device), lengths)
        return SparseLabels._build(new_items.cpu().numpy(), self.voter[pick].cpu().numpy(),
                                   self.label[pick].cpu().numpy(), int(rows.shape[0]), self.n_classifiers,
                                   self.n_classes, self.device)


@dataclass
class PaddedRows:
    """A batch of rows of labels stored sparse, each row's labels in ``S`` slots (the ``ell_*`` ops' layout).

    ``voter`` ``(B, S)`` int64 and ``values`` ``(B, S)`` labels; a slot with label ``-1`` is empty (its
    voter ``-1``). A row's voters ascend, as in the by-item view, so the ops draw what their dense
    namesakes draw on the densified rows. Built by :meth:`SparseLabels.padded`.
    """

    voter: torch.Tensor
    values: torch.Tensor
    n_classes: int
    soft: bool = False

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def device(self) -> torch.device:
        return self.values.device

    def select(self, rows) -> "PaddedRows":
        return PaddedRows(self.voter[rows], self.values[rows], self.n_classes)


def _int_array(a, name: str) -> np.ndarray:
    arr = a.cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be whole numbers")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must be integers; got dtype {arr.dtype}")
    return arr.astype(np.int64).reshape(arr.shape)


def _count(values: np.ndarray, given: Optional[int], name: str, what: str) -> int:
    seen = int(values.max()) + 1 if values.size else 0
    if given is None:
        return seen
    given = int(given)
    if given < seen:
        raise ValueError(f"{what} reach {seen - 1}, beyond {name}={given}")
    return given
