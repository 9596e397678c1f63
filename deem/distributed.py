"""One model fitted across processes: ``DEEM(distributed=True)`` inside an initialized ``torch.distributed`` group.

Each rank passes only its own share of the items to ``fit`` / ``fit_long``. Every sum
over items that a fit reads -- the expected counts, class masses and log-likelihood of
each EM / VB pass, the counts at the majority-vote starts, the presence test's tables,
the alignment's contingency table, coverage -- is all-reduced in float64 (int64 for
counts of rows), so every rank takes the same decisions and ends with the same model:
the one a single process fits on the union of the shards (equal up to the rounding of
the sums' order). Nothing else travels: no labels, no posteriors, no parameter server.
The label coding is agreed first (``fit_long``: the union of the workers and classes
every rank saw), and ranks that disagree on the settings, the number of voters or
classes, or that hold no item, raise the same ``ValueError`` on every rank instead of
hanging. ``predict`` stays local. gloo (CPUs) and NCCL (GPUs) run the same code: a
tensor is reduced on the device it lives on.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch


class Comm:
    """The collectives a distributed fit uses, over one process group."""

    def __init__(self, group=None):
        import torch.distributed as dist

        self.dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def _device(self, t: torch.Tensor) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo takes CPU tensors (and CUDA ones through the host).
        if self.dist.get_backend(self.group) == "nccl" and t.device.type != "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return t.device

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``t`` over the ranks (float tensors in float64), on ``t``'s device."""
        work = t.to(self._device(t), torch.float64 if t.is_floating_point() else torch.int64).contiguous()
        self.dist.all_reduce(work, group=self.group)
        return work.to(t.device, t.dtype if not t.is_floating_point() else torch.float64)

    def sum_many(self, *tensors: torch.Tensor):
        """Several sums in one all-reduce (flattened and concatenated in float64)."""
        if not tensors:
            return ()
        flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
        total = self.sum(flat)
        out, at = [], 0
        for t in tensors:
            out.append(total[at:at + t.numel()].view(t.shape).to(t.device))
            at += t.numel()
        return tuple(out)

    def max_int(self, value: int) -> int:
        t = torch.tensor([int(value)], dtype=torch.int64)
        work = t.to(self._device(t))
        self.dist.all_reduce(work, op=self.dist.ReduceOp.MAX, group=self.group)
        return int(work.item())

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: List[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def agree(self, what: str, value: Any) -> Any:
        """``value`` when every rank holds the same; else the same ``ValueError`` on every rank."""
        values = self.gather(value)
        if any(v != values[0] for v in values[1:]):
            shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise ValueError(f"distributed fit: the ranks disagree on {what} ({shown}); every rank must fit with "
                             "the same settings and label coding")
        return value

    def require_all(self, what: str, ok: bool) -> None:
        """A ``ValueError`` on every rank when ``ok`` fails on any (``what`` says what each needs)."""
        flags = self.gather(bool(ok))
        if not all(flags):
            bad = [r for r, f in enumerate(flags) if not f]
            raise ValueError(f"distributed fit: rank(s) {bad} {what}")


def checked(comm: Optional[Comm], what: str, fn):
    """``fn()``; under a distributed fit a ``ValueError``/``TypeError`` on any rank becomes the same
    ``ValueError`` on every rank (naming the ranks and the first message), so no rank is left waiting in a
    collective for one that failed its own validation."""
    try:
        value, error = fn(), None
    except (ValueError, TypeError) as e:
        if comm is None:
            raise
        value, error = None, e
    if comm is None:
        return value
    messages = comm.gather(None if error is None else f"{type(error).__name__}: {error}")
    bad = [r for r, m in enumerate(messages) if m is not None]
    if bad:
        raise ValueError(f"distributed fit: {what} failed on rank(s) {bad}: {messages[bad[0]]}")
    return value


def resolve(distributed) -> Optional[Comm]:
    """``None`` for a local fit, else the ``Comm`` of ``DEEM(distributed=...)``.

    ``False``: local. ``True``: the default process group (an initialized one is required: distribution
    is never used by surprise). A ``torch.distributed`` process group: that group.
    """
    if distributed is False or distributed is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed=True needs an initialized torch.distributed process group "
                         "(torch.distributed.init_process_group, e.g. under torchrun)")
    return Comm(None if distributed is True else distributed)


def check_distributed(value):
    if value is True or value is False or value is None:
        return bool(value)
    try:
        import torch.distributed as dist

        if isinstance(value, dist.ProcessGroup):
            return value
    except (ImportError, AttributeError):  # pragma: no cover - torch built without distributed
        pass
    raise ValueError(f"distributed must be False, True (the default process group) or a torch.distributed "
                     f"ProcessGroup; got {value!r}")


def total(comm: Optional[Comm], t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (``t`` itself without ``comm``)."""
    return t if comm is None else comm.sum(t)


def total_many(comm: Optional[Comm], *tensors: torch.Tensor):
    return tensors if comm is None else comm.sum_many(*tensors)


def total_int(comm: Optional[Comm], value: int) -> int:
    return int(value) if comm is None else int(comm.sum(torch.tensor([int(value)], dtype=torch.int64))[0])
