"""Majority vote and Hungarian alignment of predicted classes to it."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ._validation import LabelData, is_sparse

# Rows per chunk when counting votes, so memory stays bounded at millions of rows.
_CHUNK = 1 << 16


def vote_counts(data: LabelData) -> torch.Tensor:
    """``(N, K)`` float votes per class: counts of hard labels, sums of soft ones."""
    if is_sparse(data):
        item, _, lab = data.triples()
        out = torch.zeros(data.n_rows, data.n_classes, dtype=torch.float32, device=data.device)
        return out.index_put_((item, lab), torch.ones_like(item, dtype=torch.float32), accumulate=True)
    values, k = data.values, data.n_classes
    if data.soft:
        return values.sum(dim=2)
    out = torch.zeros(values.shape[0], k, dtype=torch.float32, device=values.device)
    for start in range(0, values.shape[0], _CHUNK):
        block = values[start:start + _CHUNK].long()
        present = (block >= 0).to(torch.float32)
        out[start:start + _CHUNK].scatter_add_(1, block.clamp(min=0), present)
    return out


def majority_vote(data: LabelData) -> torch.Tensor:
    """``(N,)`` majority label per row (ties go to the smallest label); ``-1`` where a row has no vote."""
    counts = vote_counts(data)
    mv = counts.argmax(dim=1)
    return torch.where(counts.sum(dim=1) > 0, mv, torch.full_like(mv, -1))


def agreement_with(data: LabelData, reference: torch.Tensor, comm=None) -> torch.Tensor:
    """``(D,)`` each classifier's agreement with ``reference``, over the entries it gave.

    A missing entry is neither a vote nor a disagreement; a classifier that gave
    no label on the rows where ``reference`` is defined gets 0.
    """
    if is_sparse(data):
        item, voter, lab = data.triples()
        ref = reference.to(data.device).long()[item]
        valid = ref >= 0
        d = data.n_classifiers
        given = torch.zeros(d, dtype=torch.float64, device=data.device).index_add_(
            0, voter[valid], torch.ones_like(voter[valid], dtype=torch.float64))
        agree = torch.zeros_like(given).index_add_(0, voter[valid], (lab[valid] == ref[valid]).double())
        return _share(comm, agree, given, 1).to(torch.float32)
    ref = reference.to(data.values.device)
    valid = ref >= 0
    if data.soft:
        # Expected agreement: the probability each classifier put on the reference class.
        # Missing (all-zero) columns weigh nothing: divide by the mass each classifier gave.
        values = data.values[valid]
        picked = values.gather(1, ref[valid].view(-1, 1, 1).expand(-1, 1, data.n_classifiers)).squeeze(1)
        given = values.sum(dim=1).sum(dim=0)
        return _share(comm, picked.sum(dim=0), given, 1e-12).to(given.dtype)
    agree = torch.zeros(data.n_classifiers, dtype=torch.float64, device=ref.device)
    given = torch.zeros_like(agree)
    for start in range(0, data.n_rows, _CHUNK):
        block = data.values[start:start + _CHUNK].long()
        r = ref[start:start + _CHUNK].unsqueeze(1)
        present = (block >= 0) & (r >= 0)
        given += present.sum(dim=0)
        agree += (present & (block == r)).sum(dim=0)
    return _share(comm, agree, given, 1).to(torch.float32)


def _share(comm, agree: torch.Tensor, given: torch.Tensor, floor: float) -> torch.Tensor:
    """``agree / given`` where anything was given (0 elsewhere), the sums over the ranks under ``comm``."""
    if comm is not None:
        agree, given = comm.sum_many(agree, given)
    return torch.where(given > 0, agree / given.clamp(min=floor), torch.zeros_like(agree))


def confusion_counts(data: LabelData, posterior: torch.Tensor) -> torch.Tensor:
    """``(D, K, K)`` weighted counts ``C[i, l, m] = sum_n posterior[n, m] * [classifier i said l on row n]``.

    ``posterior`` is ``(N, K)``: one-hot rows for a hard reference (a zero row
    ignores that row), class probabilities for a soft one. Soft labels count by
    their probabilities. No one-hot tensor of the labels is built.
    """
    k, d = data.n_classes, data.n_classifiers
    if is_sparse(data):
        item, voter, lab = data.triples()
        q = posterior.to(data.device, torch.float64)
        out = torch.zeros(d * k, k, dtype=torch.float64, device=q.device).index_add_(0, voter * k + lab, q[item])
        return out.view(d, k, k)
    q = posterior.to(data.values.device, torch.float64)
    out = torch.zeros(d * k, k, dtype=torch.float64, device=q.device)
    cols = torch.arange(d, device=q.device)
    step = max(1, (1 << 22) // max(d * k, 1))  # bounds the (rows, D, K) expansion below
    for start in range(0, data.n_rows, step):
        qs = q[start:start + step]
        if data.soft:
            v = data.values[start:start + step].double()  # (n, K, D)
            out += torch.einsum("nld,nm->dlm", v, qs).reshape(d * k, k)
            continue
        block = data.values[start:start + step].long()  # (n, D)
        present = block >= 0
        rows = cols.unsqueeze(0) * k + block.clamp(min=0)
        out.index_add_(0, rows[present], qs.unsqueeze(1).expand(-1, d, -1)[present])
    return out.view(d, k, k)


def agreement_table(predicted: np.ndarray, reference: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts of (predicted, reference) pairs; rows where either side is ``-1`` are ignored."""
    predicted = np.asarray(predicted, dtype=np.int64)
    reference = np.asarray(reference, dtype=np.int64)
    keep = (predicted >= 0) & (reference >= 0)
    return np.bincount(predicted[keep] * n_classes + reference[keep],
                       minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def hungarian_map(predicted: np.ndarray, reference: np.ndarray, n_classes: int) -> np.ndarray:
    """Permutation ``map[k]`` of predicted classes maximizing agreement with ``reference``.

    Rows where either side is ``-1`` are ignored.
    """
    return assignment_from_table(agreement_table(predicted, reference, n_classes))


def assignment_from_table(table: np.ndarray) -> np.ndarray:
    """The permutation ``map[k]`` maximizing the agreement ``sum_k table[k, map[k]]`` (Hungarian)."""
    n_classes = table.shape[0]
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.empty(n_classes, dtype=np.int64)
    mapping[rows] = cols
    return mapping
