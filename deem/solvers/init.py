"""Starts of the sampler solvers (``init_method``): where persistent CD begins."""
from __future__ import annotations

import torch

from .._validation import LabelData
from ..distributed import total
from ..alignment import agreement_with, confusion_counts, majority_vote
from ..rbm import RBM
from .exact import train_exact

INIT_METHODS = ("mv", "mv_rand", "mv_lo", "rand", "ds")

# Diagonal weight of the majority-vote initializations: about the log-odds of a
# classifier that is right 70% of the time among 5 classes.
MV_DIAGONAL = 2.0
MV_RAND_NOISE = 0.01
RAND_STD = 0.1
# Additive smoothing of the confusion counts behind 'mv_lo'.
LO_SMOOTHING = 1.0


@torch.no_grad()
def initialize(rbm: RBM, data: LabelData, method: str, use_weighted: bool, generator: torch.Generator,
               prior_strength: float = 2.0, comm=None) -> None:
    """Set the RBM's parameters from the data.

    - ``mv``: hidden state m mirrors class m: ``W[l, m, i, 0] = c * [l == m]``, so
      the initial prediction is the (weighted) majority vote.
    - ``mv_rand``: ``mv`` plus small Gaussian noise (breaks symmetry between units).
    - ``mv_lo``: log-odds against the majority vote: ``W[:, m, i, 0]`` is the log of
      classifier i's smoothed confusion column P(v_i = l | MV = m) and ``b_h`` the log
      class prior of the majority vote: one Dawid-Skene step from majority vote.
    - ``rand``: small Gaussian weights, zero biases.
    - ``ds``: the exact Dawid-Skene maximum (``solver='exact'``'s EM, run to
      convergence on the labels, soft ones hardened, with ``prior_strength``) for hidden unit 0; sampler
      training then refines the exact solution instead of starting from scratch.

    ``use_weighted`` scales each classifier's weights by its agreement with the
    majority vote, counted over the entries it gave. Hidden units beyond the first
    start from small noise so they can learn something the first does not. ``comm``: ``data`` is this
    rank's share; the counts are summed over the ranks (and ``generator`` seeded alike on every rank), so
    every rank starts from the same parameters.
    """
    if method not in INIT_METHODS:
        raise ValueError(f"init_method must be one of {INIT_METHODS}; got {method!r}")
    k, d, h = rbm.n_classes, rbm.n_visible, rbm.n_hidden
    if method == "ds":
        _initialize_ds(rbm, data, generator, prior_strength, comm)
        return
    dev, dt = rbm.W.device, rbm.W.dtype

    def noise(std, *shape):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * std).to(device=dev, dtype=dt)

    rbm.b_v.zero_()
    rbm.b_h.zero_()
    W = torch.zeros(k, k, d, h, device=dev, dtype=dt)
    if h > 1:
        W[..., 1:] = noise(RAND_STD, k, k, d, h - 1)
    mv = majority_vote(data) if (method != "rand" or use_weighted) else None
    if method in ("mv", "mv_rand"):
        W[..., 0] = MV_DIAGONAL * torch.eye(k, device=dev, dtype=dt).unsqueeze(-1)
        if method == "mv_rand":
            W[..., 0] += noise(MV_RAND_NOISE, k, k, d)
    elif method == "mv_lo":
        reference = torch.nn.functional.one_hot(mv.clamp(min=0), k) * (mv >= 0).unsqueeze(1)
        counts = total(comm, confusion_counts(data, reference)).to(dev)  # (D, K_l, K_m)
        conf = (counts + LO_SMOOTHING) / (counts.sum(dim=1, keepdim=True) + k * LO_SMOOTHING)
        W[..., 0] = conf.log().permute(1, 2, 0).to(dt)
        prior = total(comm, torch.bincount(mv[mv >= 0], minlength=k).double()) + LO_SMOOTHING
        rbm.b_h[0] = (prior / prior.sum()).log().to(device=dev, dtype=dt)
    else:  # rand
        W[..., 0] = noise(RAND_STD, k, k, d)
    if use_weighted:
        weight = agreement_with(data, mv, comm).to(device=dev, dtype=dt)  # (D,)
        W *= weight.view(1, 1, d, 1)
    rbm.W.copy_(W)



def _initialize_ds(rbm: RBM, data: LabelData, generator: torch.Generator, prior_strength: float = 2.0,
                   comm=None) -> None:

    hard = data
    if data.soft:
        # A soft column's argmax, or missing where it carries under half a label of mass.
        mass = data.values.sum(dim=1)
        labels = data.values.argmax(dim=1)
        labels = torch.where(mass >= 0.5, labels, torch.full_like(labels, -1))
        hard = LabelData(labels.to(torch.int32), False, data.n_classes)
    k, d, h = rbm.n_classes, rbm.n_visible, rbm.n_hidden
    single = RBM(d, k, 1, device=rbm.W.device, dtype=rbm.W.dtype)
    train_exact(single, hard, prior_strength, comm=comm)
    rbm.b_v.zero_()
    rbm.b_h.zero_()
    rbm.b_h[0] = single.b_h[0]
    W = torch.zeros_like(rbm.W)
    W[..., 0] = single.W[..., 0]
    if h > 1:
        W[..., 1:] = (torch.randn(k, k, d, h - 1, generator=generator, dtype=torch.float64) * RAND_STD).to(W)
    rbm.W.copy_(W)
