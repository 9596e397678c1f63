"""``solver='gwg'`` / ``'dlp'``: persistent contrastive divergence with a GWG or DLP sampler."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch

from .. import ops
from .._validation import LabelData, is_sparse
from ..preprocessing import Preprocessor
from ..rbm import RBM
from ..distributed import total_int
from .base import Settings, Solver, SolverResult
from .samplers import PersistentChains

SCHEDULERS = ("constant", "cosine", "exponential")
# The exponential schedule ends at this fraction of the initial learning rate.
EXPONENTIAL_FINAL_FRACTION = 0.01
# L2 pull of the preprocessing parameters back to their initial values (per
# unit of squared distance): the free energy of the transformed data alone is
# lowest when every virtual classifier copies the consensus, so without a pull
# the layers would drift toward agreeing with the model rather than informing it.
PREPROCESSING_ANCHOR = 1.0


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    cd_k: int
    sampler_steps: int
    deterministic: bool
    scheduler: str = "constant"
    sampler: str = "gwg"


def learning_rate_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based) under ``cfg.scheduler``.

    ``constant``; ``cosine`` from the initial rate down to 0 over the epochs
    (half a cosine period); ``exponential``: a constant factor per epoch that
    reaches ``EXPONENTIAL_FINAL_FRACTION`` of the initial rate at the last epoch.
    """
    if cfg.scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}; got {cfg.scheduler!r}")
    if cfg.scheduler == "constant" or cfg.epochs <= 1:
        return cfg.learning_rate
    t = epoch / (cfg.epochs - 1)
    if cfg.scheduler == "cosine":
        return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * t))
    return cfg.learning_rate * EXPONENTIAL_FINAL_FRACTION ** t


def train_pcd(
    rbm: RBM,
    data: LabelData,
    cfg: TrainConfig,
    host_generator: torch.Generator,
    device_generator: torch.Generator,
    progress: Optional[Callable] = None,
    preprocessor: Optional[Preprocessor] = None,
    comm=None,
    monitor: Optional[Callable] = None,
    monitored: Optional[list] = None,
) -> List[float]:
    """Persistent CD: returns the loss (mean free energy of data minus chains) per epoch.

    Each update: restart ~5% of the chains from the batch, advance all chains by
    ``sampler_steps`` steps of ``cfg.sampler`` (GWG or DLP) in one kernel call, take the fused CD gradient
    (with ``deterministic=False``, averaged over ``cd_k`` draws of the hidden
    units), pin the gauge, and take an SGD step. Everything stays on the
    data's device; the only host sync is the loss once per epoch.

    Labels stored sparse (:class:`deem.sparse.SparseLabels`) are read a batch at a time as padded rows
    (``SparseLabels.padded``, a gather on the device): the chains are padded rows too and the sampler
    and gradient ops are the ``ell_*`` ones, which move and read the present slots only; the fit is the
    dense layout's, parameter for parameter.

    With a ``preprocessor`` the RBM sees the batch through the Multinomial
    layers (soft virtual classifiers); the layers take an SGD step on the
    gradient of the batch's mean free energy, which flows from the fused
    free-energy op back through them, plus a pull toward their initial values
    (``PREPROCESSING_ANCHOR``).

    ``comm`` (:mod:`deem.distributed`): ``data`` is this rank's share. Every rank makes the same
    ``ceil(N / batch_size)`` updates an epoch (N over the ranks), rank r taking ``ceil(batch_size *
    N_r / N)`` of its rows each time (none once its rows are used up); the gradient is the mean over
    every rank's batch rows (one float64 all-reduce an update), so every rank takes the same step and
    keeps the same model. Each rank has its own chains and random streams (its rank mixed into the
    seeds), reproducible with ``random_state``.
    """
    n = data.n_rows
    sparse = is_sparse(data)  # then each batch is padded rows (deem.sparse.PaddedRows), read by the ell_* ops
    if sparse and preprocessor is not None:
        raise ValueError("preprocessing layers read labels dense")
    dev = data.device if sparse else data.values.device
    seed = int(torch.randint(0, 2**62, (1,), generator=host_generator))
    batch_size, updates = cfg.batch_size, None
    if comm is not None:
        stream = int(torch.randint(0, 2**62, (1,), generator=host_generator))
        seed = (seed + comm.rank * RANK_SEED_STRIDE) % 2**62  # distinct chains and hidden draws per rank
        device_generator = torch.Generator(device=dev).manual_seed((stream + comm.rank * RANK_SEED_STRIDE) % 2**62)
        n_total = total_int(comm, n)
        updates = -(-n_total // cfg.batch_size)
        batch_size = -(-cfg.batch_size * n // n_total)
    masks = rbm.gauge_masks()
    params = [rbm.W, rbm.b_v, rbm.b_h]
    # SGD with momentum (PyTorch's update rule, no dampening), written out: a few
    # small tensors do not need torch.optim, whose first use costs seconds of imports.
    velocity = [torch.zeros_like(p) for p in params]
    pre_params = [] if preprocessor is None else list(preprocessor.parameters())
    pre_start = [p.detach().clone() for p in pre_params]
    pre_velocity = [torch.zeros_like(p) for p in pre_params]
    n_steps = cfg.sampler_steps
    hidden_draws = 1 if cfg.deterministic else cfg.cd_k
    sampler = None
    grad_offset = 0
    history: List[float] = []
    epochs = range(cfg.epochs) if progress is None else progress(range(cfg.epochs))
    if preprocessor is not None:
        preprocessor.train()
    for epoch in epochs:
        lr = learning_rate_at(cfg, epoch)
        order = torch.randperm(n, generator=device_generator, device=dev)
        epoch_loss = torch.zeros((), dtype=torch.float64, device=dev)
        starts = range(0, n, batch_size) if updates is None else range(0, updates * batch_size, batch_size)
        for start in starts:
            pick = order[start:start + batch_size]
            if pick.numel() == 0:  # distributed: this rank's rows are used up; it still joins the mean
                _join_step(comm, params, velocity, cfg, lr, masks)
                continue
            batch = data.padded(pick) if sparse else data.select(pick)
            transformed = None
            if preprocessor is not None:
                transformed = preprocessor(batch, device_generator)
                batch = LabelData(transformed.values.detach(), True, batch.n_classes)
            if sampler is None:
                sampler = PersistentChains(batch, device_generator, seed, cfg.sampler)
            else:
                sampler.restart_from(batch)
            chains = sampler.step(rbm, n_steps)
            cd_grad = _cd_grad_for(batch, sampler)
            with torch.no_grad():
                dW, db_v, db_h, loss = cd_grad(
                    batch.values, chains, rbm.W, rbm.b_v, rbm.b_h,
                    sample_hidden=not cfg.deterministic, seed=seed ^ 0x5DEECE66D, offset=grad_offset,
                )
                for draw in range(1, hidden_draws):
                    more = cd_grad(batch.values, chains, rbm.W, rbm.b_v, rbm.b_h, sample_hidden=True,
                                   seed=seed ^ 0x5DEECE66D, offset=grad_offset + draw)
                    dW, db_v, db_h = dW + more[0], db_v + more[1], db_h + more[2]
                if hidden_draws > 1:
                    dW, db_v, db_h = dW / hidden_draws, db_v / hidden_draws, db_h / hidden_draws
            grad_offset += hidden_draws
            if comm is not None:  # the mean over every rank's batch rows
                dW, db_v, db_h, loss = _mean_over_ranks(comm, batch.n_rows, dW, db_v, db_h, loss)
            if masks is not None:
                dW, db_v, db_h = dW * masks[0], db_v * masks[1], db_h * masks[2]
            if transformed is not None:
                free = ops.free_energy_soft(transformed.values, rbm.W.detach(), rbm.b_v.detach(), rbm.b_h.detach())
                pre_grads = torch.autograd.grad(free.mean(), pre_params)
            _sgd_step(params, velocity, (dW, db_v, db_h), cfg.momentum, lr)
            with torch.no_grad():
                if transformed is not None:
                    for p, v, g, p0 in zip(pre_params, pre_velocity, pre_grads, pre_start):
                        v.mul_(cfg.momentum).add_(g).add_(p - p0, alpha=PREPROCESSING_ANCHOR)
                        p.sub_(v, alpha=lr)
            epoch_loss += loss.double() * batch.n_rows
        if comm is not None:  # each update's mean loss times this rank's rows, summed: the union's sum
            epoch_loss = comm.sum(epoch_loss)
        history.append(float(epoch_loss) / (n if comm is None else n_total))
        if monitor is not None and monitored is not None:
            monitored.append(monitor(rbm))
        if progress is not None and hasattr(epochs, "set_postfix"):
            extra = {"step": f"{sampler.step_size:.3g}"} if sampler.kind == "dlp" else {}
            epochs.set_postfix(loss=f"{history[-1]:.4f}", accept=f"{sampler.acceptance_rate():.2f}", **extra)
    if preprocessor is not None:
        preprocessor.eval()
    return history


def _cd_grad_for(batch, sampler: PersistentChains) -> Callable:
    """``cd_grad(pos, neg, W, b_v, b_h, ...)`` for this batch: the padded-row op (the batch's and the chains'
    voters bound), the soft op, or the hard one."""
    if sampler.voter is not None:
        return functools.partial(_ell_cd_grad, batch.voter, sampler.voter)
    return ops.cd_grad_soft if batch.soft else ops.cd_grad


def _ell_cd_grad(pos_voter, neg_voter, pos, neg, *params, **kwargs):
    return ops.ell_cd_grad(pos_voter, pos, neg_voter, neg, *params, **kwargs)


# Added times the rank to a distributed fit's seeds (an odd 62-bit constant: distinct, well-spread streams).
RANK_SEED_STRIDE = 0x1E3779B97F4A7C15


def _mean_over_ranks(comm, rows: int, dW, db_v, db_h, loss):
    """The gradient and loss averaged over every rank's batch rows (float64 sums), in the parameters' dtype."""
    w = float(rows)
    sums = comm.sum_many(dW * w, db_v * w, db_h * w, loss.reshape(1) * w,
                         torch.tensor([w], dtype=torch.float64, device=dW.device))
    count = sums[-1].clamp(min=1.0)
    return tuple((t / count).to(ref.dtype) for t, ref in zip(sums[:3], (dW, db_v, db_h))) + (
        (sums[3] / count)[0].to(loss.dtype),)


def _join_step(comm, params, velocity, cfg, lr, masks) -> None:
    """A distributed update on a rank with no rows left this epoch: it adds nothing to the mean, but takes the
    same step as the others (so the models stay equal)."""
    zeros = [torch.zeros_like(p) for p in params]
    dW, db_v, db_h, _ = _mean_over_ranks(comm, 0, *zeros, torch.zeros((), dtype=torch.float64,
                                                                     device=params[0].device))
    if masks is not None:
        dW, db_v, db_h = dW * masks[0], db_v * masks[1], db_h * masks[2]
    _sgd_step(params, velocity, (dW, db_v, db_h), cfg.momentum, lr)


@torch.no_grad()
def _sgd_step(params, velocity, grads, momentum: float, lr: float) -> None:
    """SGD with momentum (PyTorch's rule, no dampening) on the RBM's parameters."""
    for p, v, g in zip(params, velocity, grads):
        v.mul_(momentum).add_(g)
        p.sub_(v, alpha=lr)


# Rows of the transformed data the RBM's initialization reads when preprocessing.
INIT_ROWS = 1 << 16


def transform_all(preprocessor: Preprocessor, data: LabelData) -> LabelData:
    """The virtual classifiers' soft labels for every row (``N * K * D_out`` floats), chunked."""
    step = max(1, (1 << 24) // (data.n_classes * max(preprocessor.widths)))
    preprocessor.eval()
    with torch.no_grad():
        parts = [preprocessor(data.select(slice(i, i + step))).values for i in range(0, data.n_rows, step)]
    return LabelData(torch.cat(parts), True, data.n_classes)


def transform_sample(preprocessor: Preprocessor, data: LabelData, generator: torch.Generator) -> LabelData:
    """The virtual classifiers' labels on (up to ``INIT_ROWS`` random) rows, for the RBM's initialization."""
    rows = data
    if data.n_rows > INIT_ROWS:
        pick = torch.randperm(data.n_rows, generator=generator)[:INIT_ROWS].to(data.values.device)
        rows = data.select(pick)
    preprocessor.eval()
    with torch.no_grad():
        return preprocessor(rows)


def progress_bar(desc: str):
    from tqdm.auto import tqdm

    return lambda it: tqdm(it, desc=desc, unit="epoch")


class PCDSolver(Solver):
    """``solver='gwg'`` / ``'dlp'``: persistent CD with that sampler, optionally through preprocessing layers."""

    def __init__(self, name: str):
        self.name = name

    def check(self, data, settings: Settings) -> None:
        if settings.comm is not None and settings.preprocessing is not None:
            raise ValueError("a distributed fit (distributed=True) of preprocessing layers is not supported yet; "
                             "use_preprocessing=False")
        if settings.missing == "informative":
            raise ValueError(f"missing='informative' is fitted by solver='exact' or 'bayes' (hidden_dim=1); "
                             f"solver={self.name!r} treats a missing label as ignorable")

    def fit(self, data, all_rows, settings: Settings) -> SolverResult:
        from ..preprocessing import initialize_preprocessor, layer_widths
        from .init import initialize
        from .soft_evidence import train_soft_evidence

        host_gen, dev_gen = settings.host_generator, settings.device_generator
        preprocessor, visible = None, data
        pre = settings.preprocessing
        if pre is not None:
            widths = layer_widths(data.n_classifiers, pre.layers, pre.widths)
            preprocessor = Preprocessor(data.n_classifiers, widths, data.n_classes, pre.activation,
                                        use_softmax=pre.use_softmax, one_hot=pre.one_hot, jitter=float(pre.jitter),
                                        device=settings.device)
            initialize_preprocessor(preprocessor, data, pre.init, host_gen)
            visible = transform_sample(preprocessor, data, host_gen)
        rbm = RBM(visible.n_classifiers, data.n_classes, settings.hidden_dim, device=settings.device)
        cfg = TrainConfig(epochs=int(settings.epochs), batch_size=int(settings.batch_size),
                          learning_rate=float(settings.learning_rate), momentum=float(settings.momentum),
                          cd_k=int(settings.cd_k), sampler_steps=int(settings.sampler_steps),
                          deterministic=bool(settings.deterministic), scheduler=settings.scheduler, sampler=self.name)
        initialize(rbm, visible, settings.init_method, settings.use_weighted, host_gen, settings.prior_strength,
                   settings.comm)
        first = settings.comm is None or settings.comm.rank == 0
        progress = progress_bar("DEEM fit") if settings.verbose and first else None
        monitored: list = []
        watch = settings.monitor if preprocessor is None else None  # the layers change what the RBM reads
        history = train_pcd(rbm, data, cfg, host_gen, dev_gen, progress, preprocessor, settings.comm, watch,
                            monitored)
        if settings.refit:
            train_soft_evidence(rbm, transform_all(preprocessor, data), settings.prior_strength)
        return SolverResult(rbm, history, posterior="virtual_evidence" if settings.refit else "rbm",
                            preprocessor=preprocessor,
                            history_extra={"lr": [learning_rate_at(cfg, e) for e in range(len(history))]},
                            monitored=monitored if watch is not None else None,
                            attributes={"variational_prior_": None, "missing_": "ignorable",
                                        "missing_log_bayes_factor_": None, "missing_one_class_share_": None,
                                        "anchor_": "none", "anchor_checks_": None,
                                        "anchor_few_labels_share_": None,
                                        "informative_voters_": np.zeros(data.n_classifiers, bool),
                                        "init_method_": settings.init_method})
