"""The persistent chains of the negative phase, advanced by the fused GWG or DLP op."""
from __future__ import annotations

import math

import torch

from .. import ops
from .._validation import LabelData, label_dtype
from ..rbm import RBM

# Share of the chains restarted from data at each update (the rest persist).
RESTART_FRACTION = 0.05
SAMPLERS = ("gwg", "dlp")
# DLP's step size adapts toward this Metropolis-Hastings acceptance rate, from
# this start, reading the acceptance once every DLP_ADAPT_EVERY updates (one host
# sync). 0.7: on fitted RBMs of 10-100 dense classifiers the lag-4 and lag-16
# autocorrelations of f(x) were lowest at step sizes accepting 0.6-0.8
# (benchmarks/samplers.py).
DLP_TARGET_ACCEPTANCE = 0.7
DLP_INITIAL_STEP = 1.0
DLP_ADAPT_EVERY = 10
DLP_STEP_BOUNDS = (1e-2, 1e3)


def hard_from(data: LabelData, generator: torch.Generator) -> torch.Tensor:
    """Hard chain states for a batch: the labels themselves, or a draw from soft labels (-1 where missing)."""
    if not data.soft:
        return data.values.clone()
    v = data.values  # (n, K, D)
    cdf = v.cumsum(dim=1)
    total = cdf[:, -1:]
    u = torch.rand(v.shape[0], 1, v.shape[2], generator=generator, device=v.device)
    # A full column (sum 1 up to rounding) never comes out missing.
    u = u * torch.where(total > 1 - 1e-4, total, torch.ones_like(total))
    drawn = (cdf < u).sum(dim=1)
    # A column's total mass is the chance the entry is present: an all-zero
    # (missing) column stays missing, and so does a draw past a partial mass.
    drawn = torch.where(drawn < v.shape[1], drawn, torch.full_like(drawn, -1))
    return drawn.to(label_dtype(data.n_classes))


class PersistentChains:
    """Chains over the visible states, kept across updates, moved by ``kind``'s sampler.

    ``"gwg"``: Gibbs-with-Gradients, one coordinate per Metropolis-Hastings step;
    ``"dlp"``: the discrete Langevin proposal, every coordinate at once per step,
    with a step size adapted toward ``DLP_TARGET_ACCEPTANCE``.

    The buffer is seeded from the first batch. Each update restarts about
    ``RESTART_FRACTION`` of the chains from rows of the current batch, then runs
    ``n_steps`` Metropolis-Hastings steps on all of them in one kernel call. A
    chain keeps the missing entries of the row it started from: it samples the
    model on that row's observed classifiers only.

    Batches of labels stored sparse come as :class:`deem.sparse.PaddedRows`: the chains are then
    padded rows too (each chain's voters beside its labels, restarted together) and move their
    present slots only (``ops.ell_gwg_steps`` / ``ell_dlp_steps``).
    """

    def __init__(self, first_batch: LabelData, generator: torch.Generator, seed: int, kind: str = "gwg"):
        if kind not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}; got {kind!r}")
        self.kind = kind
        self.step_size = DLP_INITIAL_STEP
        self._window = torch.zeros((), dtype=torch.int64, device=first_batch.values.device)
        self.voter = getattr(first_batch, "voter", None)  # (B, S) voters of padded-row chains, else None
        if self.voter is not None:
            self.voter = self.voter.clone()
        self._window_proposed = 0
        self._updates = 0
        self.generator = generator
        self.seed = seed
        self.offset = 0  # Philox step counter, advanced on the host: no device sync
        self.chains = hard_from(first_batch, generator)
        self.accepted = torch.zeros((), dtype=torch.int64, device=self.chains.device)
        self.proposed = 0

    def restart_from(self, batch: LabelData) -> None:
        b = self.chains.shape[0]
        dev = self.chains.device
        restart = torch.rand(b, generator=self.generator, device=dev) < RESTART_FRACTION
        source = torch.randint(batch.n_rows, (b,), generator=self.generator, device=dev)
        picked = batch.select(source)
        fresh = hard_from(picked, self.generator)
        self.chains = torch.where(restart.unsqueeze(1), fresh, self.chains)
        if self.voter is not None:
            self.voter = torch.where(restart.unsqueeze(1), picked.voter, self.voter)

    def step(self, rbm: RBM, n_steps: int) -> torch.Tensor:
        with torch.no_grad():
            if self.voter is not None and self.kind == "gwg":
                acc = ops.ell_gwg_steps(self.voter, self.chains, rbm.W, rbm.b_v, rbm.b_h, n_steps=n_steps,
                                        seed=self.seed, offset=self.offset)
            elif self.voter is not None:
                acc = ops.ell_dlp_steps(self.voter, self.chains, rbm.W, rbm.b_v, rbm.b_h, step_size=self.step_size,
                                        n_steps=n_steps, seed=self.seed, offset=self.offset)
            elif self.kind == "gwg":
                acc = ops.gwg_steps(self.chains, rbm.W, rbm.b_v, rbm.b_h, n_steps=n_steps, seed=self.seed,
                                    offset=self.offset)
            else:
                acc = ops.dlp_steps(self.chains, rbm.W, rbm.b_v, rbm.b_h, step_size=self.step_size,
                                    n_steps=n_steps, seed=self.seed, offset=self.offset)
        self.offset += n_steps
        total = acc.sum()
        self.accepted += total
        self.proposed += n_steps * self.chains.shape[0]
        if self.kind == "dlp":
            self._adapt(total, n_steps * self.chains.shape[0])
        return self.chains

    def _adapt(self, accepted: torch.Tensor, proposed: int) -> None:
        """Multiplicative step-size update from the last DLP_ADAPT_EVERY updates' acceptance rate."""
        self._window += accepted
        self._window_proposed += proposed
        self._updates += 1
        if self._updates % DLP_ADAPT_EVERY or not self._window_proposed:
            return
        rate = float(self._window) / self._window_proposed
        lo, hi = DLP_STEP_BOUNDS
        self.step_size = min(hi, max(lo, self.step_size * math.exp(2.0 * (rate - DLP_TARGET_ACCEPTANCE))))
        self._window.zero_()
        self._window_proposed = 0

    def acceptance_rate(self) -> float:
        return float(self.accepted) / max(self.proposed, 1)
