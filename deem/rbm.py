"""The multinomial RBM: parameters, initializations, and its energies via the fused ops."""
from __future__ import annotations

import torch
from torch import nn

from . import ops
from ._validation import LabelData
from .alignment import agreement_with, confusion_counts, majority_vote

INIT_METHODS = ("mv", "mv_rand", "mv_lo", "rand", "ds")

# Diagonal weight of the majority-vote initializations: about the log-odds of a
# classifier that is right 70% of the time among 5 classes.
MV_DIAGONAL = 2.0
MV_RAND_NOISE = 0.01
RAND_STD = 0.1
# Additive smoothing of the confusion counts behind 'mv_lo'.
LO_SMOOTHING = 1.0


class RBM(nn.Module):
    """``D`` visible units and ``H`` hidden units, each with ``K`` states.

    ``W`` is ``(K, K, D, H)`` (visible state, hidden state, classifier, hidden unit),
    ``b_v`` is ``(D, K)`` and ``b_h`` is ``(H, K)``.
    """

    def __init__(self, n_visible: int, n_classes: int, n_hidden: int = 1, device=None, dtype=torch.float32):
        super().__init__()
        k, d, h = n_classes, n_visible, n_hidden
        self.W = nn.Parameter(torch.zeros(k, k, d, h, device=device, dtype=dtype))
        self.b_v = nn.Parameter(torch.zeros(d, k, device=device, dtype=dtype))
        self.b_h = nn.Parameter(torch.zeros(h, k, device=device, dtype=dtype))
        # (D, K) log P_i(abstain | m) of informative missingness, folded into W and b_h (see set_one_unit);
        # (0, K) when missing labels are ignorable.
        self.register_buffer("log_abstain", torch.zeros(0, k, device=device, dtype=torch.float64))

    @property
    def n_classes(self) -> int:
        return self.W.shape[0]

    @property
    def n_visible(self) -> int:
        return self.W.shape[2]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[3]

    @property
    def informative(self) -> bool:
        """Whether an abstention is evidence in this model (``log_abstain`` is set)."""
        return self.log_abstain.shape[0] > 0

    @torch.no_grad()
    def set_one_unit(self, logp: torch.Tensor, logpi: torch.Tensor, log_abstain=None) -> None:
        """Hold a one-unit (Dawid-Skene) fit: ``logp`` ``(K_l, K_m, D)``, ``logpi`` ``(K,)``, ``log_abstain`` ``(D, K)``.

        The abstention terms fold in exactly: a row's hidden logits are
        ``logpi[m] + sum_{i absent} a[i, m] + sum_{i present} logp[x_i, m, i]``
        ``= (logpi + sum_i a[i, :])[m] + sum_{i present} (logp[x_i, m, i] - a[i, m])``,
        so ``W = logp - a`` and ``b_h = logpi + sum_i a`` make the RBM's posterior the
        informative model's, at the cost of the present labels only.
        """
        if self.n_hidden != 1:
            raise ValueError("a one-unit fit needs hidden_dim=1")
        if log_abstain is not None:
            logp = logp - log_abstain.t().unsqueeze(0)
            logpi = logpi + log_abstain.sum(dim=0)
            self.log_abstain = log_abstain.detach().to(device=self.W.device, dtype=torch.float64).clone()
        else:
            self.log_abstain = torch.zeros(0, self.n_classes, device=self.W.device, dtype=torch.float64)
        self.W.copy_(logp.unsqueeze(-1).to(self.W.dtype))
        self.b_v.zero_()
        self.b_h.copy_(logpi.unsqueeze(0).to(self.b_h.dtype))

    def class_log_prior(self) -> torch.Tensor:
        """``(K,)`` log of the class prior of hidden unit 0 (the abstention terms taken back out of ``b_h``)."""
        b = self.b_h[0].detach().double()
        if self.informative:
            b = b - self.log_abstain.sum(dim=0)
        return torch.log_softmax(b, dim=0)

    def hidden_probs(self, data: LabelData) -> torch.Tensor:
        """``(N, H, K)`` p(h | v); labels stored sparse go through the one-unit E-step op (H = 1)."""
        if hasattr(data, "row_ptr"):
            if self.n_hidden != 1:
                raise ValueError("labels stored sparse are scored by one-hidden-unit models; densify them "
                                 "(SparseLabels.to_dense) for hidden_dim > 1")
            post = data.evidence_pass(self.W[..., 0].double(), self.b_h[0].double(), None, False, True)[3]
            return post.to(self.W.dtype).unsqueeze(1)
        fn = ops.hidden_probs_soft if data.soft else ops.hidden_probs
        return fn(data.values, self.W, self.b_h)

    def free_energy(self, data: LabelData) -> torch.Tensor:
        fn = ops.free_energy_soft if data.soft else ops.free_energy
        return fn(data.values, self.W, self.b_v, self.b_h)

    def gauge_masks(self):
        """Gradient masks fixing the first visible and first hidden state when ``H == 1``.

        With one hidden unit, adding a constant across visible states (or across
        hidden states) of a classifier's weights is absorbed by the biases, so one
        state of each is pinned; ``None`` when there is nothing to pin.
        """
        if self.n_hidden != 1:
            return None
        w = torch.ones_like(self.W)
        w[0] = 0
        w[:, 0] = 0
        bv = torch.ones_like(self.b_v)
        bv[:, 0] = 0
        bh = torch.ones_like(self.b_h)
        bh[:, 0] = 0
        return w, bv, bh


@torch.no_grad()
def initialize(rbm: RBM, data: LabelData, method: str, use_weighted: bool, generator: torch.Generator,
               prior_strength: float = 2.0) -> None:
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
    start from small noise so they can learn something the first does not.
    """
    if method not in INIT_METHODS:
        raise ValueError(f"init_method must be one of {INIT_METHODS}; got {method!r}")
    k, d, h = rbm.n_classes, rbm.n_visible, rbm.n_hidden
    if method == "ds":
        _initialize_ds(rbm, data, generator, prior_strength)
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
        counts = confusion_counts(data, reference).to(dev)  # (D, K_l, K_m)
        conf = (counts + LO_SMOOTHING) / (counts.sum(dim=1, keepdim=True) + k * LO_SMOOTHING)
        W[..., 0] = conf.log().permute(1, 2, 0).to(dt)
        prior = torch.bincount(mv[mv >= 0], minlength=k).double() + LO_SMOOTHING
        rbm.b_h[0] = (prior / prior.sum()).log().to(device=dev, dtype=dt)
    else:  # rand
        W[..., 0] = noise(RAND_STD, k, k, d)
    if use_weighted:
        weight = agreement_with(data, mv).to(device=dev, dtype=dt)  # (D,)
        W *= weight.view(1, 1, d, 1)
    rbm.W.copy_(W)



def _initialize_ds(rbm: RBM, data: LabelData, generator: torch.Generator, prior_strength: float = 2.0) -> None:
    from .solvers import train_exact

    hard = data
    if data.soft:
        # A soft column's argmax, or missing where it carries under half a label of mass.
        mass = data.values.sum(dim=1)
        labels = data.values.argmax(dim=1)
        labels = torch.where(mass >= 0.5, labels, torch.full_like(labels, -1))
        hard = LabelData(labels.to(torch.int32), False, data.n_classes)
    k, d, h = rbm.n_classes, rbm.n_visible, rbm.n_hidden
    single = RBM(d, k, 1, device=rbm.W.device, dtype=rbm.W.dtype)
    train_exact(single, hard, prior_strength)
    rbm.b_v.zero_()
    rbm.b_h.zero_()
    rbm.b_h[0] = single.b_h[0]
    W = torch.zeros_like(rbm.W)
    W[..., 0] = single.W[..., 0]
    if h > 1:
        W[..., 1:] = (torch.randn(k, k, d, h - 1, generator=generator, dtype=torch.float64) * RAND_STD).to(W)
    rbm.W.copy_(W)
