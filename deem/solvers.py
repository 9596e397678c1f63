"""Training loops. ``gwg``: persistent contrastive divergence with a GWG sampler."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from . import ops
from ._validation import LabelData
from .rbm import RBM
from .samplers import PersistentGWG


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    cd_k: int
    sampler_steps: int
    deterministic: bool


def train_pcd(
    rbm: RBM,
    data: LabelData,
    cfg: TrainConfig,
    host_generator: torch.Generator,
    device_generator: torch.Generator,
    progress: Optional[Callable] = None,
) -> List[float]:
    """Persistent CD: returns the loss (mean free energy of data minus chains) per epoch.

    Each update: restart ~5% of the chains from the batch, advance all chains by
    ``cd_k * sampler_steps`` GWG steps in one kernel call, take the fused CD
    gradient, pin the gauge, and take an SGD step. Everything stays on the
    data's device; the only host sync is the loss once per epoch.
    """
    n = data.n_rows
    dev = data.values.device
    seed = int(torch.randint(0, 2**62, (1,), generator=host_generator))
    masks = rbm.gauge_masks()
    params = [rbm.W, rbm.b_v, rbm.b_h]
    opt = torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum)
    cd_grad = ops.cd_grad_soft if data.soft else ops.cd_grad
    n_steps = cfg.cd_k * cfg.sampler_steps
    sampler = None
    grad_offset = 0
    history: List[float] = []
    epochs = range(cfg.epochs) if progress is None else progress(range(cfg.epochs))
    for _ in epochs:
        order = torch.randperm(n, generator=device_generator, device=dev)
        epoch_loss = torch.zeros((), dtype=torch.float64, device=dev)
        for start in range(0, n, cfg.batch_size):
            batch = data.select(order[start:start + cfg.batch_size])
            if sampler is None:
                sampler = PersistentGWG(batch, device_generator, seed)
            else:
                sampler.restart_from(batch)
            chains = sampler.step(rbm, n_steps)
            with torch.no_grad():
                dW, db_v, db_h, loss = cd_grad(
                    batch.values, chains, rbm.W, rbm.b_v, rbm.b_h,
                    sample_hidden=not cfg.deterministic, seed=seed ^ 0x5DEECE66D, offset=grad_offset,
                )
            grad_offset += 1
            if masks is not None:
                dW, db_v, db_h = dW * masks[0], db_v * masks[1], db_h * masks[2]
            for p, g in zip(params, (dW, db_v, db_h)):
                p.grad = g
            opt.step()
            epoch_loss += loss.double() * batch.n_rows
        history.append(float(epoch_loss) / n)
        if progress is not None and hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{history[-1]:.4f}", accept=f"{sampler.acceptance_rate():.2f}")
    return history
