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


# ----------------------------------------------------------------------------- exact
def normalized_params(W: torch.Tensor, b_v: torch.Tensor, b_h: torch.Tensor):
    """The one-hidden-unit RBM rewritten so that every classifier's conditional is normalized.

    ``W'[l, m, i] = log softmax_l (b_v[i, l] + W[l, m, i])`` = log P_i(l | m) and
    ``b_h' = log softmax(b_h)``, ``b_v' = 0``. Then ``exp(-F(v))`` sums to 1 over
    the observed entries of every row, so ``F(v) = -log p(v_obs)`` exactly: a
    missing entry's terms cancel. With complete rows this is the same model.
    """
    theta = W[..., 0] + b_v.t().unsqueeze(1)  # (K_l, K_m, D)
    logp = torch.log_softmax(theta, dim=0)
    return logp.unsqueeze(-1), torch.zeros_like(b_v), torch.log_softmax(b_h, dim=1)


def dirichlet_log_prior(logp: torch.Tensor, pooled_logits: torch.Tensor, strength: float) -> torch.Tensor:
    """Hierarchical prior on the confusion columns: P_i(.|m) ~ Dir(strength * Pbar(.|m) + 1).

    ``Pbar = softmax(pooled_logits)`` is shared by every classifier and learned
    jointly: classifiers with few labels are pulled towards the population's
    typical confusion, classifiers with many labels follow their own evidence.
    """
    pbar = torch.softmax(pooled_logits, dim=0)  # (K_l, K_m)
    a = strength * pbar
    k, d = logp.shape[0], logp.shape[2]
    norm = torch.lgamma(a.sum(0) + k) - torch.lgamma(a + 1).sum(0)  # (K_m,)
    return (a.unsqueeze(-1) * logp).sum() + d * norm.sum()


def train_exact(rbm: RBM, data: LabelData, prior_strength: float, max_iter: int = 500, progress=None) -> List[float]:
    """Maximize the exact (penalized) log-likelihood of a one-hidden-unit RBM, full batch, with L-BFGS.

    The objective and its gradient go through the fused ``free_energy`` op and
    its fused backward; the only other work is on the (K, K, D) parameters.
    Returns the mean negative log-likelihood per L-BFGS iteration; on return the
    RBM holds the normalized parameters (``normalized_params``).
    """
    if rbm.n_hidden != 1:
        raise ValueError("solver='exact' needs hidden_dim=1 (the likelihood is exact for one hidden unit)")
    free_energy = ops.free_energy_soft if data.soft else ops.free_energy
    n = data.n_rows
    k = rbm.n_classes
    pooled = torch.zeros(k, k, dtype=rbm.W.dtype, device=rbm.W.device)
    pooled += 2.0 * torch.eye(k, dtype=rbm.W.dtype, device=rbm.W.device)
    pooled.requires_grad_(prior_strength > 0)
    params = [rbm.W, rbm.b_v, rbm.b_h] + ([pooled] if prior_strength > 0 else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)
    history: List[float] = []

    def objective():
        W, b_v, b_h = normalized_params(rbm.W, rbm.b_v, rbm.b_h)
        nll = free_energy(data.values, W, b_v, b_h).sum()
        if prior_strength > 0:
            nll = nll - dirichlet_log_prior(W[..., 0], pooled, prior_strength)
        return nll / n

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        history.append(float(loss.detach()))
        return loss

    opt.step(closure)
    with torch.no_grad():
        W, b_v, b_h = normalized_params(rbm.W, rbm.b_v, rbm.b_h)
        rbm.W.copy_(W)
        rbm.b_v.copy_(b_v)
        rbm.b_h.copy_(b_h)
    return history
