"""The persistent chains of the negative phase, advanced by the fused GWG op."""
from __future__ import annotations

import torch

from . import ops
from ._validation import LabelData, label_dtype
from .rbm import RBM

# Share of the chains restarted from data at each update (the rest persist).
RESTART_FRACTION = 0.05


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


class PersistentGWG:
    """Gibbs-with-Gradients chains over the visible states, kept across updates.

    The buffer is seeded from the first batch. Each update restarts about
    ``RESTART_FRACTION`` of the chains from rows of the current batch, then runs
    ``n_steps`` Metropolis-Hastings steps on all of them in one kernel call. A
    chain keeps the missing entries of the row it started from: it samples the
    model on that row's observed classifiers only.
    """

    def __init__(self, first_batch: LabelData, generator: torch.Generator, seed: int):
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
        fresh = hard_from(batch.select(source), self.generator)
        self.chains = torch.where(restart.unsqueeze(1), fresh, self.chains)

    def step(self, rbm: RBM, n_steps: int) -> torch.Tensor:
        with torch.no_grad():
            acc = ops.gwg_steps(self.chains, rbm.W, rbm.b_v, rbm.b_h, n_steps=n_steps, seed=self.seed, offset=self.offset)
        self.offset += n_steps
        self.accepted += acc.sum()
        self.proposed += n_steps * self.chains.shape[0]
        return self.chains

    def acceptance_rate(self) -> float:
        return float(self.accepted) / max(self.proposed, 1)
