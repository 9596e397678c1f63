"""Python entry points of the DEEM ops.

Thin wrappers over ``torch.ops.deem.*`` (the compiled library ``deem._C``) with
autograd and fake (meta) implementations registered, and a backend switch:

* ``"auto"`` (default): the compiled op when the extension is loaded and has a
  kernel for the tensors' device, otherwise the plain-PyTorch twin;
* ``"extension"``: always the compiled op (error if it is not available);
* ``"reference"``: always the twin in :mod:`deem._reference`.

If ``deem._C`` cannot be imported a ``RuntimeWarning`` naming the import error
is issued once and the twins are used.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from . import _reference as reference

__all__ = [
    "HAS_EXTENSION", "reference", "set_backend", "get_backend", "use_reference",
    "hidden_logits", "hidden_probs", "hidden_logits_soft", "hidden_probs_soft",
    "energy", "free_energy", "free_energy_soft", "free_energy_backward", "free_energy_soft_backward",
    "cd_grad", "cd_grad_soft", "gwg_steps", "dlp_steps", "log_partition", "soft_evidence_pass",
    "hard_evidence_pass", "csr_evidence_pass", "csr_build", "ell_hidden_probs", "ell_free_energy", "ell_cd_grad",
    "ell_gwg_steps", "ell_dlp_steps", "vb_update",
]

try:
    from . import _C  # noqa: F401  (importing registers torch.ops.deem.*)

    HAS_EXTENSION = True
    IMPORT_ERROR = None
except (ImportError, OSError) as exc:  # pragma: no cover - depends on the build
    HAS_EXTENSION = False
    IMPORT_ERROR = exc
    warnings.warn(
        f"deem: the compiled extension deem._C could not be imported ({exc!r}); "
        "falling back to the (much slower) plain-PyTorch reference ops.",
        RuntimeWarning,
        stacklevel=2,
    )

_BACKENDS = ("auto", "extension", "reference")
_backend = "auto"
_has_kernel_cache: dict = {}


def set_backend(name: str) -> None:
    """Select "auto", "extension" or "reference" for every op."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    if name == "extension" and not HAS_EXTENSION:
        raise RuntimeError(f"deem: backend 'extension' requested but deem._C failed to import: {IMPORT_ERROR!r}")
    _backend = name


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def use_reference(flag: bool = True):
    """Context manager: force the plain-PyTorch twins (flag=True) or the default "auto" (flag=False)."""
    global _backend
    old = _backend
    _backend = "reference" if flag else "auto"
    try:
        yield
    finally:
        _backend = old


def _has_kernel(op: str, device: torch.device) -> bool:
    key = (op, device.type)
    hit = _has_kernel_cache.get(key)
    if hit is None:
        dk = {"cpu": "CPU", "cuda": "CUDA"}.get(device.type)
        try:
            hit = dk is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"deem::{op}", dk)
        except Exception:  # pragma: no cover - private API changed
            hit = device.type == "cpu"
        _has_kernel_cache[key] = hit
    return hit


def _ext(op: str, t: torch.Tensor) -> bool:
    """Whether to call the compiled op (True) or the twin (False)."""
    if _backend == "reference":
        return False
    if _backend == "extension":
        return True
    return HAS_EXTENSION and _has_kernel(op, t.device)


# ----------------------------------------------------------------------------- wrappers

def hidden_logits(labels, W, b_h):
    """(N, H, K) hidden logits of hard labels (N, D), -1 = missing."""
    if _ext("hidden_logits", W):
        return torch.ops.deem.hidden_logits(labels, W, b_h)
    return reference.hidden_logits(labels, W, b_h)


def hidden_probs(labels, W, b_h):
    if _ext("hidden_probs", W):
        return torch.ops.deem.hidden_probs(labels, W, b_h)
    return reference.hidden_probs(labels, W, b_h)


def hidden_logits_soft(v, W, b_h):
    """(N, H, K) hidden logits of soft labels v (N, K, D); differentiable w.r.t. v, W, b_h."""
    if _ext("hidden_logits_soft", W):
        return torch.ops.deem.hidden_logits_soft(v, W, b_h)
    return reference.hidden_logits_soft(v, W, b_h)


def hidden_probs_soft(v, W, b_h):
    if _ext("hidden_probs_soft", W):
        return torch.ops.deem.hidden_probs_soft(v, W, b_h)
    return reference.hidden_probs_soft(v, W, b_h)


def energy(labels, hidden, W, b_v, b_h):
    if _ext("energy", W):
        return torch.ops.deem.energy(labels, hidden, W, b_v, b_h)
    return reference.energy(labels, hidden, W, b_v, b_h)


def free_energy(labels, W, b_v, b_h):
    """(N,) free energy of hard labels; differentiable w.r.t. W, b_v, b_h."""
    if _ext("free_energy", W):
        return torch.ops.deem.free_energy(labels, W, b_v, b_h)
    return reference.free_energy(labels, W, b_v, b_h)


def free_energy_soft(v, W, b_v, b_h):
    """(N,) free energy of soft labels; differentiable w.r.t. v, W, b_v, b_h."""
    if _ext("free_energy_soft", W):
        return torch.ops.deem.free_energy_soft(v, W, b_v, b_h)
    return reference.free_energy_soft(v, W, b_v, b_h)


def free_energy_backward(grad, labels, W, b_v, b_h):
    if _ext("free_energy_backward", W):
        return torch.ops.deem.free_energy_backward(grad, labels, W, b_v, b_h)
    return reference.free_energy_backward(grad, labels, W, b_v, b_h)


def free_energy_soft_backward(grad, v, W, b_v, b_h):
    if _ext("free_energy_soft_backward", W):
        return torch.ops.deem.free_energy_soft_backward(grad, v, W, b_v, b_h)
    return reference.free_energy_soft_backward(grad, v, W, b_v, b_h)


def cd_grad(pos, neg, W, b_v, b_h, sample_hidden=False, seed=0, offset=0):
    """(dW, db_v, db_h, loss) of mean F(pos) - mean F(neg)."""
    if _ext("cd_grad", W):
        return torch.ops.deem.cd_grad(pos, neg, W, b_v, b_h, bool(sample_hidden), int(seed), int(offset))
    return reference.cd_grad(pos, neg, W, b_v, b_h, bool(sample_hidden), int(seed), int(offset))


def cd_grad_soft(pos_soft, neg, W, b_v, b_h, sample_hidden=False, seed=0, offset=0):
    if _ext("cd_grad_soft", W):
        return torch.ops.deem.cd_grad_soft(pos_soft, neg, W, b_v, b_h, bool(sample_hidden), int(seed), int(offset))
    return reference.cd_grad_soft(pos_soft, neg, W, b_v, b_h, bool(sample_hidden), int(seed), int(offset))


def gwg_steps(chains, W, b_v, b_h, n_steps=1, seed=0, offset=0):
    """n_steps GWG steps on every chain (B, D), in place; returns the accepted counts (B,) int32."""
    if _ext("gwg_steps", W):
        return torch.ops.deem.gwg_steps(chains, W, b_v, b_h, int(n_steps), int(seed), int(offset))
    return reference.gwg_steps(chains, W, b_v, b_h, int(n_steps), int(seed), int(offset))


def dlp_steps(chains, W, b_v, b_h, step_size=1.0, n_steps=1, seed=0, offset=0):
    """n_steps discrete-Langevin MH steps on every chain (B, D), in place; returns the accepted counts (B,) int32."""
    if _ext("dlp_steps", W):
        return torch.ops.deem.dlp_steps(chains, W, b_v, b_h, float(step_size), int(n_steps), int(seed), int(offset))
    return reference.dlp_steps(chains, W, b_v, b_h, float(step_size), int(n_steps), int(seed), int(offset))


def log_partition(W, b_v, b_h):
    """Exact log Z (0-dim) of the complete-data model."""
    if _ext("log_partition", W):
        return torch.ops.deem.log_partition(W, b_v, b_h)
    return reference.log_partition(W, b_v, b_h)


def soft_evidence_pass(v, logp, logpi, want_counts=True, want_posterior=False):
    """One E-step pass of the virtual-evidence model: (counts, class mass, NLL, rows with evidence, posterior)."""
    if _ext("soft_evidence_pass", v):
        return torch.ops.deem.soft_evidence_pass(v, logp, logpi, bool(want_counts), bool(want_posterior))
    return reference.soft_evidence_pass(v, logp, logpi, bool(want_counts), bool(want_posterior))


def hard_evidence_pass(labels, logp, logpi, log_abstain=None, want_counts=True, want_posterior=False):
    """One E-step pass of the one-hidden-unit model on hard labels: (counts, class mass, NLL, posterior).

    ``log_abstain`` (D, K): log P(voter i abstains | class m), the terms of informative missingness;
    ``None`` (or a (0, K) tensor): missing entries are ignorable and add nothing.
    """
    if log_abstain is None:
        log_abstain = logp.new_empty((0, logp.shape[1]))
    if _ext("hard_evidence_pass", labels):
        return torch.ops.deem.hard_evidence_pass(labels, logp, logpi, log_abstain, bool(want_counts),
                                                 bool(want_posterior))
    return reference.hard_evidence_pass(labels, logp, logpi, log_abstain, bool(want_counts), bool(want_posterior))


def csr_evidence_pass(row_ptr, voter, label, col_ptr, col_row, col_label, logp, logpi, log_abstain=None,
                      want_counts=True, want_posterior=False):
    """``hard_evidence_pass`` on labels stored sparse: (counts, class mass, NLL, posterior).

    By item: ``row_ptr`` (N + 1) int64, ``voter`` (L) int64, ``label`` (L) integers; by voter (read for
    the counts only): ``col_ptr`` (D + 1), ``col_row`` (L), ``col_label`` (L). :class:`deem.sparse.SparseLabels`
    holds both views. ``log_abstain`` as for ``hard_evidence_pass``.
    """
    if log_abstain is None:
        log_abstain = logp.new_empty((0, logp.shape[1]))
    args = (row_ptr, voter, label, col_ptr, col_row, col_label, logp, logpi, log_abstain, bool(want_counts),
            bool(want_posterior))
    if _ext("csr_evidence_pass", voter):
        return torch.ops.deem.csr_evidence_pass(*args)
    return reference.csr_evidence_pass(*args)


def vb_update(counts, mass, log_prior, modelled=None, class_prior=1.0, lo=1e-3, hi=1e3, learn=True, want_kl=True):
    """The variational step of ``solver='bayes'`` between two passes (csrc/common/vb.h has the math):
    ``(elog_p (K, K, D), elog_pi (K,), elog_abstain (D, K) or (0, K), log prior, kl)``.

    ``counts`` (K, K, D) and ``mass`` (K,): the last pass's expected counts and class mass; ``log_prior``: the
    log of (diag, off) or, informative, (diag, off, vote, abstain), with ``modelled`` (D,) 0/1 the voters
    whose rate of voting is modelled. ``learn``: the prior is set by empirical Bayes within ``[lo, hi]``;
    ``want_kl``: the bound's KL at the new prior (else NaN).
    """
    if modelled is None:
        modelled = counts.new_empty((0,))
    args = (counts, mass, log_prior, modelled, float(class_prior), float(lo), float(hi), bool(learn), bool(want_kl))
    if _ext("vb_update", counts):
        return torch.ops.deem.vb_update(*args)
    return reference.vb_update(*args)


def csr_build(item, voter, label, n_items, n_voters, n_classes):
    """The two views of ``csr_evidence_pass`` from ``(item, voter, label)`` triples in any order.

    Returns ``(row_ptr, voter, label, col_ptr, col_row, col_label, first_duplicate)``: by item with
    voters ascending, by voter with items ascending, ``label`` in its own dtype, and the input position
    of a repeated ``(item, voter)`` pair (0-d int64, ``-1``: none; nothing is dropped or merged).
    Host work: the triples are read on the CPU (a counting sort, O(labels + items + voters)).
    """
    item, voter, label = (t.cpu() for t in (item, voter, label))
    args = (item, voter, label, int(n_items), int(n_voters), int(n_classes))
    if _ext("csr_build", item):
        return torch.ops.deem.csr_build(*args)
    return reference.csr_build(*args)


# Padded rows ("ELL"): B rows of labels stored sparse, voter (B, S) int64 and labels (B, S) integers,
# label -1 = empty slot. Each op is its dense namesake on the densified rows (schemas in csrc/ops.cpp).

def ell_hidden_probs(voter, labels, W, b_h):
    """(B, H, K) p(h | v) of padded rows."""
    if _ext("ell_hidden_probs", W):
        return torch.ops.deem.ell_hidden_probs(voter, labels, W, b_h)
    return reference.ell_hidden_probs(voter, labels, W, b_h)


def ell_free_energy(voter, labels, W, b_v, b_h):
    """(B,) free energy of padded rows (no autograd: the sparse paths read it for scores only)."""
    if _ext("ell_free_energy", W):
        return torch.ops.deem.ell_free_energy(voter, labels, W, b_v, b_h)
    return reference.ell_free_energy(voter, labels, W, b_v, b_h)


def ell_cd_grad(pos_voter, pos, neg_voter, neg, W, b_v, b_h, sample_hidden=False, seed=0, offset=0):
    """``cd_grad`` of padded rows: (dW, db_v, db_h, loss) of mean F(pos) - mean F(neg)."""
    args = (pos_voter, pos, neg_voter, neg, W, b_v, b_h, bool(sample_hidden), int(seed), int(offset))
    if _ext("ell_cd_grad", W):
        return torch.ops.deem.ell_cd_grad(*args)
    return reference.ell_cd_grad(*args)


def ell_gwg_steps(voter, chains, W, b_v, b_h, n_steps=1, seed=0, offset=0):
    """``gwg_steps`` on padded rows (B, S), in place: a chain moves its present slots only."""
    if _ext("ell_gwg_steps", W):
        return torch.ops.deem.ell_gwg_steps(voter, chains, W, b_v, b_h, int(n_steps), int(seed), int(offset))
    return reference.ell_gwg_steps(voter, chains, W, b_v, b_h, int(n_steps), int(seed), int(offset))


def ell_dlp_steps(voter, chains, W, b_v, b_h, step_size=1.0, n_steps=1, seed=0, offset=0):
    """``dlp_steps`` on padded rows (B, S), in place: a chain moves its present slots only."""
    if _ext("ell_dlp_steps", W):
        return torch.ops.deem.ell_dlp_steps(voter, chains, W, b_v, b_h, float(step_size), int(n_steps), int(seed),
                                            int(offset))
    return reference.ell_dlp_steps(voter, chains, W, b_v, b_h, float(step_size), int(n_steps), int(seed),
                                   int(offset))


# ----------------------------------------------------------------------------- registrations

def _register() -> None:
    lib = "deem::"

    def new(t, shape, dtype=None):
        return t.new_empty(shape, dtype=dtype)

    @torch.library.register_fake(lib + "hidden_logits")
    def _(labels, W, b_h):
        return new(W, (labels.shape[0], b_h.shape[0], b_h.shape[1]))

    @torch.library.register_fake(lib + "hidden_probs")
    def _(labels, W, b_h):
        return new(W, (labels.shape[0], b_h.shape[0], b_h.shape[1]))

    @torch.library.register_fake(lib + "hidden_logits_soft")
    def _(v, W, b_h):
        return new(W, (v.shape[0], b_h.shape[0], b_h.shape[1]))

    @torch.library.register_fake(lib + "hidden_probs_soft")
    def _(v, W, b_h):
        return new(W, (v.shape[0], b_h.shape[0], b_h.shape[1]))

    @torch.library.register_fake(lib + "energy")
    def _(labels, hidden, W, b_v, b_h):
        return new(W, (labels.shape[0],))

    @torch.library.register_fake(lib + "free_energy")
    def _(labels, W, b_v, b_h):
        return new(W, (labels.shape[0],))

    @torch.library.register_fake(lib + "free_energy_soft")
    def _(v, W, b_v, b_h):
        return new(W, (v.shape[0],))

    @torch.library.register_fake(lib + "free_energy_backward")
    def _(grad, labels, W, b_v, b_h):
        return torch.empty_like(W), torch.empty_like(b_v), torch.empty_like(b_h)

    @torch.library.register_fake(lib + "free_energy_soft_backward")
    def _(grad, v, W, b_v, b_h):
        return torch.empty_like(v), torch.empty_like(W), torch.empty_like(b_v), torch.empty_like(b_h)

    @torch.library.register_fake(lib + "cd_grad")
    def _(pos, neg, W, b_v, b_h, sample_hidden, seed, offset):
        return torch.empty_like(W), torch.empty_like(b_v), torch.empty_like(b_h), new(W, ())

    @torch.library.register_fake(lib + "cd_grad_soft")
    def _(pos, neg, W, b_v, b_h, sample_hidden, seed, offset):
        return torch.empty_like(W), torch.empty_like(b_v), torch.empty_like(b_h), new(W, ())

    @torch.library.register_fake(lib + "gwg_steps")
    def _(chains, W, b_v, b_h, n_steps, seed, offset):
        return new(chains, (chains.shape[0],), dtype=torch.int32)

    @torch.library.register_fake(lib + "dlp_steps")
    def _(chains, W, b_v, b_h, step_size, n_steps, seed, offset):
        return new(chains, (chains.shape[0],), dtype=torch.int32)

    @torch.library.register_fake(lib + "soft_evidence_pass")
    def _(v, logp, logpi, want_counts, want_posterior):
        n, k, d = v.shape
        f64 = torch.float64
        return (v.new_empty((k if want_counts else 0, k, d), dtype=f64), v.new_empty((k,), dtype=f64),
                v.new_empty((), dtype=f64), v.new_empty((), dtype=f64),
                v.new_empty((n if want_posterior else 0, k), dtype=f64))

    @torch.library.register_fake(lib + "hard_evidence_pass")
    def _(labels, logp, logpi, log_abstain, want_counts, want_posterior):
        n, d = labels.shape
        k = logp.shape[0]
        f64 = torch.float64
        return (labels.new_empty((k if want_counts else 0, k, d), dtype=f64), labels.new_empty((k,), dtype=f64),
                labels.new_empty((), dtype=f64), labels.new_empty((n if want_posterior else 0, k), dtype=f64))

    @torch.library.register_fake(lib + "csr_evidence_pass")
    def _(row_ptr, voter, label, col_ptr, col_row, col_label, logp, logpi, log_abstain, want_counts, want_posterior):
        n, k, d = row_ptr.shape[0] - 1, logp.shape[0], logp.shape[2]
        f64 = torch.float64
        return (logp.new_empty((k if want_counts else 0, k, d), dtype=f64), logp.new_empty((k,), dtype=f64),
                logp.new_empty((), dtype=f64), logp.new_empty((n if want_posterior else 0, k), dtype=f64))

    @torch.library.register_fake(lib + "vb_update")
    def _(counts, mass, log_prior, modelled, class_prior, lo, hi, learn, want_kl):
        k, d = counts.shape[0], counts.shape[2]
        informative = log_prior.shape[0] == 4
        return (counts.new_empty((k, k, d)), counts.new_empty((k,)), counts.new_empty((d if informative else 0, k)),
                log_prior.new_empty(log_prior.shape), counts.new_empty(()))

    @torch.library.register_fake(lib + "csr_build")
    def _(item, voter, label, n_items, n_voters, n_classes):
        n_labels = item.shape[0]
        return (new(item, (n_items + 1,)), new(item, (n_labels,)), new(label, (n_labels,)), new(item, (n_voters + 1,)),
                new(item, (n_labels,)), new(label, (n_labels,)), new(item, ()))

    @torch.library.register_fake(lib + "ell_hidden_probs")
    def _(voter, labels, W, b_h):
        return new(W, (labels.shape[0], b_h.shape[0], b_h.shape[1]))

    @torch.library.register_fake(lib + "ell_free_energy")
    def _(voter, labels, W, b_v, b_h):
        return new(W, (labels.shape[0],))

    @torch.library.register_fake(lib + "ell_cd_grad")
    def _(pos_voter, pos, neg_voter, neg, W, b_v, b_h, sample_hidden, seed, offset):
        return torch.empty_like(W), torch.empty_like(b_v), torch.empty_like(b_h), new(W, ())

    @torch.library.register_fake(lib + "ell_gwg_steps")
    def _(voter, chains, W, b_v, b_h, n_steps, seed, offset):
        return new(chains, (chains.shape[0],), dtype=torch.int32)

    @torch.library.register_fake(lib + "ell_dlp_steps")
    def _(voter, chains, W, b_v, b_h, step_size, n_steps, seed, offset):
        return new(chains, (chains.shape[0],), dtype=torch.int32)

    @torch.library.register_fake(lib + "log_partition")
    def _(W, b_v, b_h):
        return new(W, ())

    # free_energy: d/d(W, b_v, b_h) through the fused statistics op.
    def fe_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def fe_backward(ctx, grad):
        labels, W, b_v, b_h = ctx.saved_tensors
        dW, dbv, dbh = torch.ops.deem.free_energy_backward(grad.contiguous(), labels, W, b_v, b_h)
        return None, dW, dbv, dbh

    torch.library.register_autograd(lib + "free_energy", fe_backward, setup_context=fe_setup)

    def fes_backward(ctx, grad):
        v, W, b_v, b_h = ctx.saved_tensors
        return torch.ops.deem.free_energy_soft_backward(grad.contiguous(), v, W, b_v, b_h)

    torch.library.register_autograd(lib + "free_energy_soft", fes_backward, setup_context=fe_setup)

    # hidden_logits_soft is linear: its backward is three contractions.
    def hls_backward(ctx, grad):
        v, W, b_h = ctx.saved_tensors
        dv = torch.einsum("njm,lmij->nli", grad, W)
        dW = torch.einsum("nli,njm->lmij", v, grad)
        return dv, dW, grad.sum(0)

    torch.library.register_autograd(lib + "hidden_logits_soft", hls_backward, setup_context=fe_setup)


if HAS_EXTENSION:
    _register()
