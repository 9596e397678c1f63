"""Meta-features of a label matrix: the inputs of the hyperparameter predictor.

``meta_features(data)`` summarizes a validated :class:`~deem._validation.LabelData`
(hard ``(N, D)`` labels with ``-1`` for missing, or soft ``(N, K, D)`` probabilities)
in a fixed set of numbers, ``FEATURE_NAMES`` in this order:

=========================  ===================================================================
``log_n_samples``          ``log(N)``
``log_n_classifiers``      ``log(D)``
``n_classes``              ``K``
``density``                fraction of the ``N * D`` entries that hold a label (soft: 1)
``log_labels_per_row``     ``log`` of the mean number of labels per row
``row_label_cv``           coefficient of variation of the labels per row
``classifier_activity_cv`` coefficient of variation of the labels per classifier (crowd skew)
``mv_agreement_mean``      mean over classifiers of the agreement with the majority vote
``mv_agreement_std``       standard deviation of the same
``mv_agreement_min``       lowest agreement of a classifier with the majority vote
``pairwise_agreement``     agreement of two classifiers on a row both labelled, pooled over
                           all such (row, pair) combinations
``pairwise_kappa``         the same, chance-corrected by the label marginal (Fleiss-style)
``mv_margin``              mean over rows of (top - second vote share) of the vote counts
``mv_balance``             normalized entropy of the majority vote's class distribution
``frac_below_chance``      fraction of classifiers agreeing with the majority vote less than 1/K
``soft``                   1 for soft labels, 0 for hard
=========================  ===================================================================

Agreement with the majority vote is the share of a classifier's own labels equal to
it (soft: the mean probability it put on the majority-vote class). Pairwise agreement
is computed from the per-row vote counts ``c[n, k]`` without any ``D x D`` table:
the agreeing ordered pairs on row ``n`` are ``sum_k c[n,k]^2 - sum_i [i labelled n]``
(soft: ``sum_k c[n,k]^2 - sum_i sum_k p[n,k,i]^2``, the expected agreement of two
classifiers' draws) and the co-labelled pairs ``m_n (m_n - 1)``. Everything is
``O(N * D)`` and streamed in row chunks, so a 1M x 100 matrix takes a few seconds
on one CPU core. Column order never changes any feature.
"""
from __future__ import annotations

import math
from typing import Dict

import torch

from ._validation import LabelData
from .alignment import agreement_with, vote_counts

FEATURE_NAMES = (
    "log_n_samples",
    "log_n_classifiers",
    "n_classes",
    "density",
    "log_labels_per_row",
    "row_label_cv",
    "classifier_activity_cv",
    "mv_agreement_mean",
    "mv_agreement_std",
    "mv_agreement_min",
    "pairwise_agreement",
    "pairwise_kappa",
    "mv_margin",
    "mv_balance",
    "frac_below_chance",
    "soft",
)

_CHUNK = 1 << 16


def _cv(x: torch.Tensor) -> float:
    mean = float(x.mean())
    return float(x.std(unbiased=False)) / mean if mean > 0 else 0.0


def meta_features(data: LabelData) -> Dict[str, float]:
    """Meta-features of ``data`` as ``{name: float}`` in the order of ``FEATURE_NAMES``.

    Rows without any label are ignored (``DEEM.fit`` drops them too).
    """
    if not isinstance(data, LabelData):
        raise TypeError(f"meta_features takes a deem._validation.LabelData; got {type(data).__name__}")
    values = data.values
    if values.ndim != (3 if data.soft else 2):
        raise ValueError(f"meta_features: values of shape {tuple(values.shape)} do not match soft={data.soft}")
    n, k, d = data.n_rows, data.n_classes, data.n_classifiers

    counts = vote_counts(data).double()  # (N, K) votes per class
    per_row = counts.sum(dim=1)  # labels per row
    keep = per_row > 0
    if not bool(keep.all()):
        counts, per_row = counts[keep], per_row[keep]
        data = data.select(keep.to(values.device))
        values = data.values
        n = data.n_rows
    if n == 0:
        raise ValueError("meta_features: every row is missing")

    # Majority vote (ties to the smallest label, as deem.alignment.majority_vote).
    mv = counts.argmax(dim=1)
    if data.soft:
        given = torch.full((d,), float(n), dtype=torch.float64)
        agree = agreement_with(data, mv).double().cpu()
        self_sq = torch.zeros(n, dtype=torch.float64, device=counts.device)
        for start in range(0, n, _CHUNK):
            block = values[start:start + _CHUNK].double()
            self_sq[start:start + _CHUNK] = (block * block).sum(dim=(1, 2))
    else:
        # One pass for the labels each classifier gave and its agreement with the vote
        # (agreement_with would take a second pass over the matrix for the same numbers).
        given = torch.zeros(d, dtype=torch.int64, device=values.device)
        hits = torch.zeros(d, dtype=torch.int64, device=values.device)
        mv_small = mv.to(values.dtype)
        for start in range(0, n, _CHUNK):
            block = values[start:start + _CHUNK]
            given += (block >= 0).sum(dim=0)
            hits += (block == mv_small[start:start + _CHUNK].unsqueeze(1)).sum(dim=0)
        given, hits = given.double().cpu(), hits.double().cpu()
        agree = torch.where(given > 0, hits / given.clamp(min=1), torch.zeros_like(hits))
        self_sq = per_row

    density = 1.0 if data.soft else float(per_row.sum()) / (n * d)
    mean_per_row = float(per_row.mean())
    active = given > 0
    agree_active = agree[active] if bool(active.any()) else agree

    pairs = per_row * (per_row - 1)  # ordered pairs of distinct classifiers that both labelled the row
    agreeing = (counts * counts).sum(dim=1) - self_sq
    total_pairs = float(pairs.sum())
    pairwise = float(agreeing.sum()) / total_pairs if total_pairs > 0 else 1.0
    marginal = counts.sum(dim=0) / counts.sum()
    chance = float((marginal * marginal).sum())
    kappa = (pairwise - chance) / (1.0 - chance) if chance < 1.0 - 1e-12 else 0.0

    shares = counts / per_row.unsqueeze(1)
    top2 = shares.topk(2, dim=1).values
    margin = float((top2[:, 0] - top2[:, 1]).mean())

    mv_dist = torch.bincount(mv, minlength=k).double() / n
    nz = mv_dist[mv_dist > 0]
    balance = float(-(nz * nz.log()).sum()) / math.log(k)

    feats = {
        "log_n_samples": math.log(n),
        "log_n_classifiers": math.log(d),
        "n_classes": float(k),
        "density": density,
        "log_labels_per_row": math.log(mean_per_row),
        "row_label_cv": 0.0 if data.soft else _cv(per_row),
        "classifier_activity_cv": _cv(given),
        "mv_agreement_mean": float(agree_active.mean()),
        "mv_agreement_std": float(agree_active.std(unbiased=False)),
        "mv_agreement_min": float(agree_active.min()),
        "pairwise_agreement": pairwise,
        "pairwise_kappa": kappa,
        "mv_margin": margin,
        "mv_balance": balance,
        "frac_below_chance": float((agree_active < 1.0 / k).double().mean()),
        "soft": 1.0 if data.soft else 0.0,
    }
    return {name: float(feats[name]) for name in FEATURE_NAMES}
