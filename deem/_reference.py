"""Plain-PyTorch twins of the compiled ``deem`` ops.

Same names, signatures and math as ``torch.ops.deem.*`` (see notes/ops_spec.md),
vectorized over rows / chains (Python loops only over GWG steps and blocks of
hidden configurations). Random numbers come from the same counter-based
Philox4x32-10 as the C++/CUDA kernels, computed here in int64 tensor
arithmetic, so in float64 the twins reproduce the compiled ops' chains,
acceptance counts and sampled-hidden statistics exactly.

They serve as the fallback when the extension is not available, as the
slow-but-obvious baseline of the benchmarks, and as the oracle of the tests.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "philox4x32", "philox_draw", "philox_uniform",
    "hidden_logits", "hidden_probs", "hidden_logits_soft", "hidden_probs_soft",
    "energy", "free_energy", "free_energy_soft", "free_energy_backward", "free_energy_soft_backward",
    "cd_grad", "cd_grad_soft", "gwg_steps", "dlp_steps", "log_partition", "soft_evidence_pass",
    "hard_evidence_pass", "csr_evidence_pass", "csr_build", "ell_hidden_probs", "ell_free_energy", "ell_cd_grad",
    "ell_gwg_steps", "ell_dlp_steps", "vb_update", "newton_box",
]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_LABEL_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)


# ----------------------------------------------------------------------------- Philox

def _mulhilo(a: int, b: torch.Tensor):
    """(hi, lo) 32-bit halves of a * b for a < 2**32 and int64 tensor b in [0, 2**32), without overflow."""
    bl = b & 0xFFFF
    bh = b >> 16
    t1 = a * bl  # < 2**48
    t2 = a * bh  # < 2**48
    mid = t1 + ((t2 & 0xFFFF) << 16)
    return (t2 >> 16) + (mid >> 32), mid & _M32


def philox4x32(seed: int, c0, c1, c2, c3):
    """Philox4x32-10 with key = (lo(seed), hi(seed)) on int64 tensors holding uint32 counters (broadcast)."""
    seed = int(seed) & _M64
    k0, k1 = seed & _M32, seed >> 32
    ref = next((c for c in (c0, c1, c2, c3) if isinstance(c, torch.Tensor)), None)
    dev = ref.device if ref is not None else None

    def t(c):
        c = c if isinstance(c, torch.Tensor) else torch.tensor(int(c), dtype=torch.int64, device=dev)
        return c.to(torch.int64) & _M32

    x0, x1, x2, x3 = torch.broadcast_tensors(t(c0), t(c1), t(c2), t(c3))
    for _ in range(10):
        hi0, lo0 = _mulhilo(0xD2511F53, x0)
        hi1, lo1 = _mulhilo(0xCD9E8D57, x2)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
        k0 = (k0 + 0x9E3779B9) & _M32
        k1 = (k1 + 0xBB67AE85) & _M32
    return x0, x1, x2, x3


def philox_draw(seed: int, stream, index, step: int):
    """The draw for (stream, index) at `step`: counter (stream, index, lo(step), hi(step))."""
    step = int(step) & _M64
    return philox4x32(seed, stream, index, step & _M32, step >> 32)


def philox_uniform(bits: torch.Tensor) -> torch.Tensor:
    """Uniform float64 in (0, 1) from the top 24 bits of a uint32 draw."""
    return ((bits >> 8).to(torch.float64) + 0.5) * (1.0 / 16777216.0)


# ----------------------------------------------------------------------------- checks

def _dims(name, W, b_v, b_h):
    if W.dim() != 4 or W.shape[0] != W.shape[1]:
        raise RuntimeError(f"{name}: W must have shape (K, K, D, H), got {tuple(W.shape)}")
    if W.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"{name}: parameters must be float32 or float64, got {W.dtype}")
    K, _, D, H = W.shape
    if b_h.shape != (H, K) or b_h.dtype != W.dtype:
        raise RuntimeError(f"{name}: b_h must have shape (H, K) = ({H}, {K}) and dtype {W.dtype}, "
                           f"got {tuple(b_h.shape)} {b_h.dtype}")
    if b_v is not None and (b_v.shape != (D, K) or b_v.dtype != W.dtype):
        raise RuntimeError(f"{name}: b_v must have shape (D, K) = ({D}, {K}) and dtype {W.dtype}, "
                           f"got {tuple(b_v.shape)} {b_v.dtype}")
    return K, D, H


def _check_labels(name, what, labels, K, D):
    if labels.dim() != 2 or labels.shape[1] != D:
        raise RuntimeError(f"{name}: {what} must have shape (N, D) with D = {D}, got {tuple(labels.shape)}")
    if labels.dtype not in _LABEL_DTYPES:
        raise RuntimeError(f"{name}: {what} must be int8, int16, int32 or int64, got {labels.dtype}")
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < -1 or hi >= K:
            bad = lo if lo < -1 else hi
            raise RuntimeError(f"{name}: label {bad} in {what} is out of range; "
                               f"expected -1 (missing) or a value in [0, {K})")
    return labels.long()


def _check_soft(name, what, v, W, K, D):
    if v.dim() != 3 or v.shape[1] != K or v.shape[2] != D:
        raise RuntimeError(f"{name}: {what} must have shape (N, K, D) = (N, {K}, {D}), got {tuple(v.shape)}")
    if v.dtype != W.dtype:
        raise RuntimeError(f"{name}: {what} dtype {v.dtype} differs from W dtype {W.dtype}")


def _one_hot(x: torch.Tensor, K: int, dtype) -> torch.Tensor:
    """(N, D) labels with -1 -> (N, D, K) one-hot, all-zero rows for missing entries."""
    oh = torch.nn.functional.one_hot(x.clamp(min=0), K).to(dtype)
    return oh * (x >= 0).unsqueeze(-1).to(dtype)


# ----------------------------------------------------------------------------- hidden units

def _logits_hard(x: torch.Tensor, W, b_h):
    """x: validated int64 labels (N, D). Gathers W rows by label; missing entries add nothing."""
    K, _, D, H = W.shape
    Wt = W.permute(2, 0, 3, 1)  # (D, K_v, H, K_h)
    rows = Wt[torch.arange(D, device=x.device), x.clamp(min=0)]  # (N, D, H, K)
    rows = torch.where((x >= 0)[:, :, None, None], rows, torch.zeros((), dtype=W.dtype, device=W.device))
    return b_h + rows.sum(1)


def hidden_logits(labels, W, b_h):
    K, D, H = _dims("hidden_logits", W, None, b_h)
    return _logits_hard(_check_labels("hidden_logits", "labels", labels, K, D), W, b_h)


def hidden_probs(labels, W, b_h):
    return torch.softmax(hidden_logits(labels, W, b_h), -1)


def hidden_logits_soft(v, W, b_h):
    K, D, H = _dims("hidden_logits_soft", W, None, b_h)
    _check_soft("hidden_logits_soft", "v", v, W, K, D)
    return b_h + torch.einsum("nli,lmij->njm", v, W)


def hidden_probs_soft(v, W, b_h):
    return torch.softmax(hidden_logits_soft(v, W, b_h), -1)


# ----------------------------------------------------------------------------- energies

def _bv_term(x, b_v):
    D = b_v.shape[0]
    t = b_v[torch.arange(D, device=x.device), x.clamp(min=0)]  # (N, D)
    return torch.where(x >= 0, t, torch.zeros((), dtype=b_v.dtype, device=b_v.device)).sum(-1)


def energy(labels, hidden, W, b_v, b_h):
    K, D, H = _dims("energy", W, b_v, b_h)
    x = _check_labels("energy", "labels", labels, K, D)
    if hidden.dim() != 2 or hidden.shape != (labels.shape[0], H):
        raise RuntimeError(f"energy: hidden must have shape (N, H) = ({labels.shape[0]}, {H}), got {tuple(hidden.shape)}")
    h = hidden.long()
    if h.numel() and (int(h.min()) < 0 or int(h.max()) >= K):
        raise RuntimeError(f"energy: hidden states must be in [0, {K})")
    N = x.shape[0]
    bh = b_h[torch.arange(H, device=h.device), h].sum(-1)  # (N,)
    wv = W[x.clamp(min=0)[:, :, None], h[:, None, :],
           torch.arange(D, device=x.device)[None, :, None], torch.arange(H, device=x.device)[None, None, :]]
    wv = torch.where((x >= 0)[:, :, None], wv, torch.zeros((), dtype=W.dtype, device=W.device)).reshape(N, -1).sum(-1)
    return -(_bv_term(x, b_v) + bh + wv)


def free_energy(labels, W, b_v, b_h):
    K, D, H = _dims("free_energy", W, b_v, b_h)
    x = _check_labels("free_energy", "labels", labels, K, D)
    L = _logits_hard(x, W, b_h)
    return -(_bv_term(x, b_v) + torch.logsumexp(L, -1).sum(-1))


def free_energy_soft(v, W, b_v, b_h):
    K, D, H = _dims("free_energy_soft", W, b_v, b_h)
    _check_soft("free_energy_soft", "v", v, W, K, D)
    L = b_h + torch.einsum("nli,lmij->njm", v, W)
    return -(torch.einsum("nli,il->n", v, b_v) + torch.logsumexp(L, -1).sum(-1))


def free_energy_backward(grad, labels, W, b_v, b_h):
    K, D, H = _dims("free_energy_backward", W, b_v, b_h)
    x = _check_labels("free_energy_backward", "labels", labels, K, D)
    P = torch.softmax(_logits_hard(x, W, b_h), -1)
    oh = _one_hot(x, K, W.dtype)
    dW = -torch.einsum("n,nil,njm->lmij", grad, oh, P)
    return dW, -torch.einsum("n,nil->il", grad, oh), -torch.einsum("n,njm->jm", grad, P)


def free_energy_soft_backward(grad, v, W, b_v, b_h):
    K, D, H = _dims("free_energy_soft_backward", W, b_v, b_h)
    _check_soft("free_energy_soft_backward", "v", v, W, K, D)
    P = torch.softmax(b_h + torch.einsum("nli,lmij->njm", v, W), -1)
    dv = -grad[:, None, None] * (b_v.t()[None] + torch.einsum("njm,lmij->nli", P, W))
    dW = -torch.einsum("n,nli,njm->lmij", grad, v, P)
    return dv, dW, -torch.einsum("n,nli->il", grad, v), -torch.einsum("n,njm->jm", grad, P)


# ----------------------------------------------------------------------------- contrastive divergence

def _hidden_stat(P, sample_hidden, seed, offset, row0):
    """P (N, H, K), or its one-hot Philox sample for rows row0 .. row0 + N - 1 of [pos; neg]."""
    if not sample_hidden:
        return P
    N, H, K = P.shape
    rows = torch.arange(row0, row0 + N, device=P.device, dtype=torch.int64)
    units = torch.arange(H, device=P.device, dtype=torch.int64)
    bits = philox_draw(seed, units[None, :], rows[:, None], offset)[0]
    u = philox_uniform(bits)  # (N, H)
    cum = P.to(torch.float64).cumsum(-1)
    h = (cum <= u[..., None]).sum(-1).clamp(max=K - 1)
    return torch.nn.functional.one_hot(h, K).to(P.dtype)


def _cd(name, pos_oh, pos_logits, pos_F, neg, W, b_v, b_h, sample_hidden, seed, offset):
    K, D, H = _dims(name, W, b_v, b_h)
    xn = _check_labels(name, "neg", neg, K, D)
    Np, Nn = pos_oh.shape[0], xn.shape[0]
    if Np == 0 or Nn == 0:
        raise RuntimeError(f"{name}: pos and neg must each have at least one row, got {Np} and {Nn}")
    Ln = _logits_hard(xn, W, b_h)
    Fn = -(_bv_term(xn, b_v) + torch.logsumexp(Ln, -1).sum(-1))
    Sp = _hidden_stat(torch.softmax(pos_logits, -1), sample_hidden, seed, offset, 0)
    Sn = _hidden_stat(torch.softmax(Ln, -1), sample_hidden, seed, offset, Np)
    ohn = _one_hot(xn, K, W.dtype)
    dW = -torch.einsum("nil,njm->lmij", pos_oh, Sp) / Np + torch.einsum("nil,njm->lmij", ohn, Sn) / Nn
    dbv = -pos_oh.sum(0) / Np + ohn.sum(0) / Nn
    dbh = -Sp.sum(0) / Np + Sn.sum(0) / Nn
    return dW, dbv, dbh, pos_F.mean() - Fn.mean()


def cd_grad(pos, neg, W, b_v, b_h, sample_hidden=False, seed=0, offset=0):
    K, D, H = _dims("cd_grad", W, b_v, b_h)
    xp = _check_labels("cd_grad", "pos", pos, K, D)
    Lp = _logits_hard(xp, W, b_h)
    Fp = -(_bv_term(xp, b_v) + torch.logsumexp(Lp, -1).sum(-1))
    return _cd("cd_grad", _one_hot(xp, K, W.dtype), Lp, Fp, neg, W, b_v, b_h, sample_hidden, seed, offset)


def cd_grad_soft(pos, neg, W, b_v, b_h, sample_hidden=False, seed=0, offset=0):
    K, D, H = _dims("cd_grad_soft", W, b_v, b_h)
    _check_soft("cd_grad_soft", "pos", pos, W, K, D)
    Lp = b_h + torch.einsum("nli,lmij->njm", pos, W)
    Fp = -(torch.einsum("nli,il->n", pos, b_v) + torch.logsumexp(Lp, -1).sum(-1))
    return _cd("cd_grad_soft", pos.transpose(1, 2), Lp, Fp, neg, W, b_v, b_h, sample_hidden, seed, offset)


# ----------------------------------------------------------------------------- Gibbs-with-Gradients

def _start_chains(name, chains, W, b_v, b_h, n_steps):
    """(K, D, checked int64 copy of the chains, zeroed (B,) int32 accepted counts); the copy is None when no
    chain can move (no chains, no steps, or K == 1)."""
    K, D, _ = _dims(name, W, b_v, b_h)
    x = _check_labels(name, "chains", chains, K, D).clone()
    if n_steps < 0:
        raise RuntimeError(f"{name}: n_steps must be >= 0, got {n_steps}")
    accepted = torch.zeros(x.shape[0], dtype=torch.int32, device=x.device)
    if x.shape[0] == 0 or n_steps == 0 or K == 1:
        x = None
    return K, D, x, accepted


def _f_and_gradient(x, W, b_v, b_h):
    """At states x (B, D): f = -F (float64), the gradient g = df/dx (B, D, K) and g at x itself (B, D, 1)."""
    L = _logits_hard(x, W, b_h)
    P = torch.softmax(L, -1)
    f = _bv_term(x, b_v).to(torch.float64) + torch.logsumexp(L, -1).to(torch.float64).sum(-1)
    g = b_v + torch.einsum("njm,lmij->nil", P, W)
    return f, g, g.gather(2, x.clamp(min=0)[..., None])


def _gwg_eval(x, W, b_v, b_h):
    """At states x (B, D): f = -F (float64), proposal logits (B, D*K) with -inf where excluded,
    the float64 running sums of exp(logits - max), their total, and the logsumexp of the logits."""
    K, _, D, H = W.shape
    B = x.shape[0]
    f, g, gx = _f_and_gradient(x, W, b_v, b_h)
    logits = (g - gx) * 0.5
    elig = (x >= 0)[..., None] & (torch.arange(K, device=x.device) != x[..., None])
    logits = torch.where(elig, logits, torch.full((), float("-inf"), dtype=W.dtype, device=W.device))
    logits = logits.reshape(B, D * K)
    mx = logits.max(-1).values
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    cs = torch.exp(logits - mx[:, None]).to(torch.float64).cumsum(-1)
    tot = cs[:, -1]
    return f, logits, cs, tot, mx.to(torch.float64) + torch.log(tot)


def gwg_steps(chains, W, b_v, b_h, n_steps=1, seed=0, offset=0):
    """n_steps GWG Metropolis-Hastings steps on every chain, in place; returns accepted counts (B,) int32."""
    K, D, x, accepted = _start_chains("gwg_steps", chains, W, b_v, b_h, n_steps)
    if x is None:
        return accepted
    B = x.shape[0]
    dev = x.device
    present = x >= 0
    movable = present.any(-1)
    last_i = torch.where(present, torch.arange(D, device=dev), torch.full((), -1, device=dev)).max(-1).values
    last_i = last_i.clamp(min=0)
    rows = torch.arange(B, device=dev)
    DK = D * K
    f, logits, cs, tot, lse = _gwg_eval(x, W, b_v, b_h)
    for s in range(n_steps):
        r = philox_draw(seed, 0, rows, int(offset) + s)
        u1, u2 = philox_uniform(r[0]), philox_uniform(r[1])
        idx = (cs <= (u1 * tot)[:, None]).sum(-1)
        x_last = x.gather(1, last_i[:, None]).squeeze(1)
        last_elig = last_i * K + torch.where(x_last == K - 1, K - 2, K - 1)
        idx = torch.where(idx >= DK, last_elig, idx)
        i, l = idx // K, idx % K
        xi = x.gather(1, i[:, None]).squeeze(1)
        lq_fwd = logits.gather(1, idx[:, None]).squeeze(1).to(torch.float64) - lse
        xp = x.clone()
        xp.scatter_(1, i[:, None], l[:, None])
        fp, logits_p, cs_p, tot_p, lse_p = _gwg_eval(xp, W, b_v, b_h)
        lq_rev = logits_p.gather(1, (i * K + xi.clamp(min=0))[:, None]).squeeze(1).to(torch.float64) - lse_p
        log_alpha = fp - f + lq_rev - lq_fwd
        acc = (torch.log(u2) < log_alpha) & movable
        a1 = acc[:, None]
        x = torch.where(a1, xp, x)
        f = torch.where(acc, fp, f)
        logits = torch.where(a1, logits_p, logits)
        cs = torch.where(a1, cs_p, cs)
        tot = torch.where(acc, tot_p, tot)
        lse = torch.where(acc, lse_p, lse)
        accepted += acc.to(torch.int32)
    chains.copy_(x.to(chains.dtype))
    return accepted

# ----------------------------------------------------------------------------- discrete Langevin proposal

# Philox streams of dlp_steps: coordinate i draws lane i % 4 of stream DLP_STREAM | (i // 4);
# the Metropolis-Hastings uniform is lane 0 of stream DLP_ACCEPT_STREAM.
DLP_STREAM = 0x80000000
DLP_ACCEPT_STREAM = 0x7FFFFFFF


def _dlp_eval(x, W, b_v, b_h, inv_step):
    """At states x (B, D): f = -F (float64) and the per-coordinate proposal log-probabilities (B, D, K), float64."""
    K = W.shape[0]
    f, g, gx = _f_and_gradient(x, W, b_v, b_h)
    move = torch.arange(K, device=x.device) != x[..., None]
    a = ((g - gx) * 0.5).to(torch.float64) - move.to(torch.float64) * inv_step
    mx = a.max(-1, keepdim=True).values
    cdf = torch.exp(a - mx).cumsum(-1)
    s = cdf[..., -1:]  # the running sum's end, as the kernels add them
    return f, a - mx - torch.log(s), cdf, s


def dlp_steps(chains, W, b_v, b_h, step_size=1.0, n_steps=1, seed=0, offset=0):
    """n_steps discrete-Langevin Metropolis-Hastings steps on every chain, in place; accepted counts (B,) int32.

    Each step proposes a new value for every present coordinate at once, independently,
    q_i(l | x) ∝ exp((g[i, l] - g[i, x_i]) / 2 - [l != x_i] / step_size) with g = df/dx at x
    (Zhang, Liu & Liu 2022, "A Langevin-like sampler for discrete distributions"), and accepts
    or rejects the whole move.
    """
    if not (step_size > 0 and step_size < float("inf")):
        raise RuntimeError(f"dlp_steps: step_size must be a positive finite number, got {step_size}")
    K, D, x, accepted = _start_chains("dlp_steps", chains, W, b_v, b_h, n_steps)
    if x is None:
        return accepted
    B = x.shape[0]
    dev = x.device
    inv_step = 1.0 / float(step_size)
    present = x >= 0
    movable = present.any(-1)
    rows = torch.arange(B, device=dev)[:, None]
    coords = torch.arange(D, device=dev)[None, :]
    f, lq, cdf, tot = _dlp_eval(x, W, b_v, b_h, inv_step)
    for s in range(n_steps):
        step = int(offset) + s
        r = philox_draw(seed, DLP_STREAM | (coords >> 2), rows, step)
        bits = torch.stack(r, -1).gather(-1, (coords & 3).expand(B, D)[..., None]).squeeze(-1)
        u = philox_uniform(bits)
        xp = (cdf <= (u[..., None] * tot)).sum(-1).clamp(max=K - 1)
        xp = torch.where(present, xp, x)
        lq_fwd = torch.where(present, lq.gather(2, xp.clamp(min=0)[..., None]).squeeze(-1), 0.0).sum(-1)
        fp, lq_p, cdf_p, tot_p = _dlp_eval(xp, W, b_v, b_h, inv_step)
        lq_rev = torch.where(present, lq_p.gather(2, x.clamp(min=0)[..., None]).squeeze(-1), 0.0).sum(-1)
        u2 = philox_uniform(philox_draw(seed, DLP_ACCEPT_STREAM, rows[:, 0], step)[0])
        acc = (torch.log(u2) < fp - f + lq_rev - lq_fwd) & movable
        a1 = acc[:, None]
        x = torch.where(a1, xp, x)
        f = torch.where(acc, fp, f)
        lq = torch.where(a1[..., None], lq_p, lq)
        cdf = torch.where(a1[..., None], cdf_p, cdf)
        tot = torch.where(a1[..., None], tot_p, tot)
        accepted += acc.to(torch.int32)
    chains.copy_(x.to(chains.dtype))
    return accepted


# ----------------------------------------------------------------------------- partition function

def log_partition(W, b_v, b_h):
    K, D, H = _dims("log_partition", W, b_v, b_h)
    if K ** H > 2 ** 20:
        raise RuntimeError(f"log_partition: K^H = {K}^{H} hidden configurations exceeds the limit of 2^20")
    C = K ** H
    Wp = W.permute(3, 1, 0, 2)  # (H, K_h, K_v, D)
    units = torch.arange(H, device=W.device)
    pows = torch.tensor([K ** j for j in range(H)], device=W.device, dtype=torch.int64)
    vals = []
    for c0 in range(0, C, 4096):
        c = torch.arange(c0, min(C, c0 + 4096), device=W.device, dtype=torch.int64)
        hs = (c[:, None] // pows) % K  # (C, H), unit 0 the least significant digit
        a = b_v.t()[None] + Wp[units[None, :], hs].sum(1)  # (C, K_v, D)
        vals.append(b_h[units[None, :], hs].sum(-1) + torch.logsumexp(a, 1).sum(-1))
    return torch.logsumexp(torch.cat(vals), 0)


# ----------------------------------------------------------------------------- virtual-evidence E-step

_SOFT_TINY = 1e-300
_SOFT_CHUNK_ELEMENTS = 1 << 22  # elements of one (rows, K, D) float64 working tensor


def soft_evidence_pass(v, logp, logpi, want_counts=True, want_posterior=False):
    """One E-step pass of the virtual-evidence Dawid-Skene model (see deem/solvers/soft_evidence.py).

    v (N, K_l, D) soft labels, logp (K_l, K_m, D) and logpi (K,) float64. Returns (counts (K, K, D)
    or (0, K, D), class mass (K,), summed NLL, rows with evidence, posterior (N, K) or (0, K)), float64.
    """
    if v.dim() != 3:
        raise RuntimeError(f"soft_evidence_pass: v must have shape (N, K, D), got {tuple(v.shape)}")
    n, k, d = v.shape
    if logp.shape != (k, k, d) or logpi.shape != (k,):
        raise RuntimeError(f"soft_evidence_pass: logp must have shape {(k, k, d)} and logpi {(k,)}, "
                           f"got {tuple(logp.shape)} and {tuple(logpi.shape)}")
    if logp.dtype != torch.float64 or logpi.dtype != torch.float64:
        raise RuntimeError("soft_evidence_pass: logp and logpi must be float64")
    dev = v.device
    p_d = logp.exp().permute(2, 0, 1).contiguous()  # (D, K_l, K_m)
    ratio_counts = torch.zeros(d, k, k, dtype=torch.float64, device=dev)
    mass = torch.zeros(k, dtype=torch.float64, device=dev)
    nll = torch.zeros((), dtype=torch.float64, device=dev)
    rows = torch.zeros((), dtype=torch.float64, device=dev)
    post = torch.empty(n if want_posterior else 0, k, dtype=torch.float64, device=dev)
    step = max(1, _SOFT_CHUNK_ELEMENTS // max(k * d, 1))
    for start in range(0, n, step):
        vc = v[start:start + step].to(torch.float64)  # (c, K_l, D)
        v_d = vc.permute(2, 0, 1).contiguous()  # (D, c, K_l)
        present = vc.sum(dim=1) > 0  # (c, D)
        a = torch.bmm(v_d, p_d)  # (D, c, K_m): a_ni(m) = sum_l v_nil P_i(l|m)
        loga = a.clamp_(min=_SOFT_TINY).log_()
        loga.masked_fill_(~present.t().unsqueeze(-1), 0.0)  # missing: factor 1
        scores = loga.sum(dim=0) + logpi  # (c, K_m)
        lse = torch.logsumexp(scores, dim=1)
        has = present.any(dim=1)
        logq = scores - lse.unsqueeze(1)
        if want_posterior:
            post[start:start + step] = logq.exp()  # rows without evidence get the prior
        hasf = has.to(torch.float64)
        nll -= (lse * hasf).sum()
        rows += hasf.sum()
        mass += (logq.exp() * hasf.unsqueeze(1)).sum(dim=0)
        if want_counts:
            ratio = (logq.unsqueeze(0) - loga).exp_()  # q_nm / a_ni(m), in logs: both may be tiny
            ratio.mul_(hasf.view(1, -1, 1))
            ratio_counts += torch.bmm(v_d.transpose(1, 2), ratio)  # (D, K_l, K_m)
    counts = (logp.exp() * ratio_counts.permute(1, 2, 0) if want_counts
              else torch.empty(0, k, d, dtype=torch.float64, device=dev))
    return counts, mass, nll, rows, post


# ----------------------------------------------------------------------------- hard-label E-step

_HARD_CHUNK_ELEMENTS = 1 << 22  # elements of one (rows, D, K) float64 working tensor


def hard_evidence_pass(labels, logp, logpi, log_abstain, want_counts=True, want_posterior=False):
    """One E-step pass of the one-hidden-unit (Dawid-Skene) model on hard labels, float64.

    labels (N, D) integers, -1 = missing; logp (K_l, K_m, D), logpi (K,), log_abstain (D, K) or (0, K).
    Per row ``s[m] = logpi[m] + sum_{i present} logp[x_i, m, i]`` plus, when ``log_abstain`` has rows
    (informative missingness), ``sum_{i absent} log_abstain[i, m]``. Returns (expected counts of the
    present labels (K, K, D) or (0, K, D), class mass (K,), summed NLL, posterior (N, K) or (0, K)).
    """
    name = "hard_evidence_pass"
    if labels.dim() != 2 or labels.dtype not in _LABEL_DTYPES:
        raise RuntimeError(f"{name}: labels must be a 2-D integer tensor (N, D), got {tuple(labels.shape)} "
                           f"{labels.dtype}")
    n, d = labels.shape
    if logp.dim() != 3 or logp.shape[0] != logp.shape[1] or logp.shape[2] != d:
        raise RuntimeError(f"{name}: logp must have shape (K, K, D={d}), got {tuple(logp.shape)}")
    k = logp.shape[0]
    informative = log_abstain.shape[0] > 0
    if logpi.shape != (k,) or log_abstain.dim() != 2 or log_abstain.shape[1] != k or (
            informative and log_abstain.shape[0] != d):
        raise RuntimeError(f"{name}: logpi must have shape ({k},) and log_abstain ({d}, {k}) or (0, {k}), got "
                           f"{tuple(logpi.shape)} and {tuple(log_abstain.shape)}")
    if any(t.dtype != torch.float64 for t in (logp, logpi, log_abstain)):
        raise RuntimeError(f"{name}: logp, logpi and log_abstain must be float64")
    if n and (int(labels.min()) < -1 or int(labels.max()) >= k):
        raise RuntimeError(f"{name}: labels must be -1 (missing) or in [0, {k})")
    dev = labels.device
    f64 = torch.float64
    logp_d = logp.permute(2, 0, 1)  # (D, K_l, K_m)
    counts = torch.zeros(d, k, k, dtype=f64, device=dev)
    mass = torch.zeros(k, dtype=f64, device=dev)
    nll = torch.zeros((), dtype=f64, device=dev)
    post = torch.empty(n if want_posterior else 0, k, dtype=f64, device=dev)
    base = logpi + (log_abstain.sum(dim=0) if informative else 0.0)
    cols = torch.arange(d, device=dev)
    step = max(1, _HARD_CHUNK_ELEMENTS // max(k * d, 1))
    for start in range(0, n, step):
        x = labels[start:start + step].long()
        present = x >= 0
        terms = logp_d[cols, x.clamp(min=0)]  # (c, D, K_m)
        if informative:
            terms = terms - log_abstain
        terms = terms * present.unsqueeze(-1)
        scores = terms.sum(dim=1) + base  # (c, K_m)
        lse = torch.logsumexp(scores, dim=1)
        q = (scores - lse.unsqueeze(1)).exp()
        nll -= lse.sum()
        mass += q.sum(dim=0)
        if want_posterior:
            post[start:start + step] = q
        if want_counts:  # scatter each present label's posterior into its (voter, label) row
            row, col = present.nonzero(as_tuple=True)
            counts.view(d * k, k).index_add_(0, col * k + x[row, col], q[row])
    counts = counts.permute(1, 2, 0).contiguous() if want_counts else torch.empty(0, k, d, dtype=f64, device=dev)
    return counts, mass, nll, post


def csr_evidence_pass(row_ptr, voter, label, col_ptr, col_row, col_label, logp, logpi, log_abstain,
                      want_counts=True, want_posterior=False):
    """``hard_evidence_pass`` on labels stored sparse (the op's schema in csrc/ops.cpp), float64.

    Reads the by-item view (``row_ptr`` (N + 1), ``voter`` (L), ``label`` (L)) only; the by-voter view
    (``col_ptr``, ``col_row``, ``col_label``), which the kernels read for the counts, is shape-checked.
    """
    name = "csr_evidence_pass"
    for what, t in (("row_ptr", row_ptr), ("voter", voter)):
        if t.dim() != 1 or t.dtype != torch.int64:
            raise RuntimeError(f"{name}: {what} must be a 1-D int64 tensor, got {tuple(t.shape)} {t.dtype}")
    if label.dim() != 1 or label.dtype not in _LABEL_DTYPES or label.shape[0] != voter.shape[0]:
        raise RuntimeError(f"{name}: label must be a 1-D integer tensor as long as voter")
    if row_ptr.shape[0] < 1:
        raise RuntimeError(f"{name}: row_ptr must hold N + 1 >= 1 offsets")
    if logp.dim() != 3 or logp.shape[0] != logp.shape[1]:
        raise RuntimeError(f"{name}: logp must have shape (K, K, D), got {tuple(logp.shape)}")
    k, d = logp.shape[0], logp.shape[2]
    informative = log_abstain.shape[0] > 0
    if logpi.shape != (k,) or log_abstain.dim() != 2 or log_abstain.shape[1] != k or (
            informative and log_abstain.shape[0] != d):
        raise RuntimeError(f"{name}: logpi must have shape ({k},) and log_abstain ({d}, {k}) or (0, {k})")
    if any(t.dtype != torch.float64 for t in (logp, logpi, log_abstain)):
        raise RuntimeError(f"{name}: logp, logpi and log_abstain must be float64")
    if want_counts and (col_ptr.shape != (d + 1,) or col_row.shape != voter.shape or col_label.shape != voter.shape):
        raise RuntimeError(f"{name}: the by-voter view must hold D + 1 = {d + 1} offsets and the same labels")
    n, n_labels = row_ptr.shape[0] - 1, voter.shape[0]
    lengths = row_ptr[1:] - row_ptr[:-1]
    if int(row_ptr[0]) != 0 or int(row_ptr[-1]) != n_labels or bool((lengths < 0).any()):
        raise RuntimeError(f"{name}: row_ptr must rise from 0 to the number of labels {n_labels}")
    if n_labels and (int(voter.min()) < 0 or int(voter.max()) >= d or int(label.min()) < 0 or int(label.max()) >= k):
        raise RuntimeError(f"{name}: voter must be in [0, {d}) and label in [0, {k})")
    dev, f64 = logp.device, torch.float64
    base = logpi + (log_abstain.sum(dim=0) if informative else 0.0)
    lp = logp.permute(2, 0, 1)  # (D, K_l, K_m)
    if informative:
        lp = lp - log_abstain.unsqueeze(1)
    item = torch.repeat_interleave(torch.arange(n, device=dev), lengths)
    lab = label.long()
    scores = base.expand(n, k).clone().index_add_(0, item, lp[voter, lab])  # (N, K_m)
    lse = torch.logsumexp(scores, dim=1) if n else scores.new_zeros(0)
    q = (scores - lse.unsqueeze(1)).exp()
    counts = torch.empty(0, k, d, dtype=f64, device=dev)
    if want_counts:
        flat = torch.zeros(d * k, k, dtype=f64, device=dev).index_add_(0, voter * k + lab, q[item])
        counts = flat.view(d, k, k).permute(1, 2, 0).contiguous()
    post = q if want_posterior else torch.empty(0, k, dtype=f64, device=dev)
    return counts, q.sum(dim=0), -lse.sum(), post


def csr_build(item, voter, label, n_items, n_voters, n_classes):
    """Twin of the ``csr_build`` op (schema in csrc/ops.cpp): stable sorts instead of counting sorts."""
    name = "csr_build"
    if item.dim() != 1 or voter.dim() != 1 or item.dtype != torch.int64 or voter.dtype != torch.int64:
        raise RuntimeError(f"{name}: item and voter must be 1-D int64 tensors")
    if label.dim() != 1 or label.dtype not in _LABEL_DTYPES:
        raise RuntimeError(f"{name}: label must be a 1-D integer tensor, got {label.dtype}")
    n_labels = item.shape[0]
    if voter.shape[0] != n_labels or label.shape[0] != n_labels:
        raise RuntimeError(f"{name}: item, voter and label must have the same length")
    for what, t, bound in (("item", item, n_items), ("voter", voter, n_voters), ("label", label, n_classes)):
        if n_labels and (int(t.min()) < 0 or int(t.max()) >= bound):
            raise RuntimeError(f"{name}: {what} is outside [0, {bound})")
    by_voter = torch.sort(voter, stable=True).indices
    order = by_voter[torch.sort(item[by_voter], stable=True).indices]  # by item, then voter, then input order
    it, vo, la = item[order], voter[order], label[order]
    row_ptr = torch.zeros(n_items + 1, dtype=torch.int64)
    row_ptr[1:] = torch.cumsum(torch.bincount(it, minlength=n_items), 0)
    col_ptr = torch.zeros(n_voters + 1, dtype=torch.int64)
    col_ptr[1:] = torch.cumsum(torch.bincount(vo, minlength=n_voters), 0)
    same = (it[1:] == it[:-1]) & (vo[1:] == vo[:-1])
    first = int(order[1:][same][0]) if bool(same.any()) else -1
    by_col = torch.sort(vo, stable=True).indices
    return row_ptr, vo, la, col_ptr, it[by_col], la[by_col], torch.tensor(first, dtype=torch.int64)


# ----------------------------------------------------------------------------- padded rows ("ELL")
# Labels stored sparse, a batch at a time: row b's present labels in its S slots, voter (B, S) int64 and
# labels (B, S) integer, label -1 = empty slot (its voter is not read). Each ell_* op is its dense namesake
# on the densified rows X[b, voter[b, s]] = labels[b, s]; the twins densify (memory B x D: an oracle, and
# a fallback for batches), the kernels read the present slots only.

def _densify_ell(name, what, voter, labels, K, D):
    """(B, D) int64 labels of the padded rows (voter, labels), -1 = missing, and the (B, S) present mask."""
    if voter.dim() != 2 or voter.dtype != torch.int64:
        raise RuntimeError(f"{name}: {what}_voter must be a 2-D int64 tensor, got {tuple(voter.shape)} {voter.dtype}")
    if labels.dim() != 2 or labels.dtype not in _LABEL_DTYPES:
        raise RuntimeError(f"{name}: {what} must be a 2-D integer tensor, got {tuple(labels.shape)} {labels.dtype}")
    if voter.shape != labels.shape:
        raise RuntimeError(f"{name}: {what}_voter and {what} must have the same shape, got {tuple(voter.shape)} "
                           f"and {tuple(labels.shape)}")
    x = labels.long()
    present = x >= 0
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < -1 or hi >= K:
            raise RuntimeError(f"{name}: label {lo if lo < -1 else hi} in {what} is out of range; "
                               f"expected -1 (empty slot) or a value in [0, {K})")
        v = voter[present]
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= D):
            bad = int(v.min()) if int(v.min()) < 0 else int(v.max())
            raise RuntimeError(f"{name}: voter {bad} in {what}_voter is outside [0, {D})")
    dense = torch.full((x.shape[0], D), -1, dtype=torch.int64, device=x.device)
    rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(x)
    dense[rows[present], voter[present]] = x[present]
    return dense, present


def ell_hidden_probs(voter, labels, W, b_h):
    K, D, _ = _dims("ell_hidden_probs", W, None, b_h)
    return hidden_probs(_densify_ell("ell_hidden_probs", "labels", voter, labels, K, D)[0], W, b_h)


def ell_free_energy(voter, labels, W, b_v, b_h):
    K, D, _ = _dims("ell_free_energy", W, b_v, b_h)
    return free_energy(_densify_ell("ell_free_energy", "labels", voter, labels, K, D)[0], W, b_v, b_h)


def ell_cd_grad(pos_voter, pos, neg_voter, neg, W, b_v, b_h, sample_hidden=False, seed=0, offset=0):
    K, D, _ = _dims("ell_cd_grad", W, b_v, b_h)
    xp = _densify_ell("ell_cd_grad", "pos", pos_voter, pos, K, D)[0]
    xn = _densify_ell("ell_cd_grad", "neg", neg_voter, neg, K, D)[0]
    return cd_grad(xp, xn, W, b_v, b_h, sample_hidden, seed, offset)


def _ell_chain_steps(name, step, voter, chains, W, b_v, b_h):
    K, D, _ = _dims(name, W, b_v, b_h)
    x, present = _densify_ell(name, "chains", voter, chains, K, D)
    accepted = step(x)
    moved = x.gather(1, voter.clamp(0, max(D - 1, 0))) if D else x.new_empty(chains.shape)
    chains.copy_(torch.where(present, moved, chains.long()).to(chains.dtype))
    return accepted


def ell_gwg_steps(voter, chains, W, b_v, b_h, n_steps=1, seed=0, offset=0):
    """gwg_steps on padded rows, in place: a chain moves its present slots only."""
    return _ell_chain_steps("ell_gwg_steps", lambda x: gwg_steps(x, W, b_v, b_h, n_steps, seed, offset),
                            voter, chains, W, b_v, b_h)


def ell_dlp_steps(voter, chains, W, b_v, b_h, step_size=1.0, n_steps=1, seed=0, offset=0):
    """dlp_steps on padded rows, in place: a chain moves its present slots only."""
    return _ell_chain_steps("ell_dlp_steps", lambda x: dlp_steps(x, W, b_v, b_h, step_size, n_steps, seed, offset),
                            voter, chains, W, b_v, b_h)


# ----------------------------------------------------------------------------- variational step

def _special(values):
    """``(digamma, lgamma, trigamma)`` of a few floats, as float lists."""
    t = torch.tensor(values, dtype=torch.float64)
    return (torch.special.digamma(t).tolist(), torch.lgamma(t).tolist(), torch.special.polygamma(1, t).tolist())


def _confusion_prior(n, k, trace, total):
    """The confusion prior's part of the bound (csrc/common/vb_math.h, ConfusionPrior): x = (diag, off) ->
    (value, gradient, Hessian (d00, d01, d11))."""
    def f(x):
        d, o = x
        (ps, pa, po), (ls, la, lo_), (ts, ta, to) = _special([k * o + d, o + d, o])
        to = to if k > 1 else 0.0
        nk = n * k
        return (nk * (ls - la - (k - 1) * lo_) + d * trace + (o - 1) * total,
                (nk * (ps - pa) + trace, nk * (k * ps - pa - (k - 1) * po) + total),
                (nk * (ts - ta), nk * (k * ts - ta), nk * (k * k * ts - ta - (k - 1) * to)))
    return f


def _rate_prior(n, e0, e1):
    """The Beta prior of the rates of voting (vb_math.h, RatePrior): x = (vote, abstain)."""
    def f(x):
        a, b = x
        (ps, pa, pb), (ls, la, lb), (ts, ta, tb) = _special([a + b, a, b])
        return (n * (ls - la - lb) + (a - 1) * e0 + (b - 1) * e1, (n * (ps - pa) + e0, n * (ps - pb) + e1),
                (n * (ts - ta), n * ts, n * (ts - tb)))
    return f


def newton_box(f, x, lo, hi, max_steps=100):
    """Maximize the concave ``f`` (``x -> (value, gradient, Hessian)``) of two numbers over ``[lo, hi]^2``
    from ``x``: projected Newton, as ``vb::newton_box`` in csrc/common/vb_math.h."""
    x = [min(max(float(v), lo), hi) for v in x]
    v, g, h = f(x)
    near = 0
    for _ in range(max_steps):
        held = [(x[i] <= lo and g[i] < 0) or (x[i] >= hi and g[i] > 0) for i in range(2)]
        det = h[0] * h[2] - h[1] * h[1]
        if not any(held) and h[0] < 0 and det > 0:
            step = [-(h[2] * g[0] - h[1] * g[1]) / det, -(h[0] * g[1] - h[1] * g[0]) / det]
        else:
            step = [-g[i] / h[2 * i] if not held[i] and h[2 * i] < 0 else 0.0 for i in range(2)]
        gain = g[0] * step[0] + g[1] * step[1]
        if not gain > 0:
            return x
        if near or not gain > 1e-10 * (1.0 + abs(v)):  # Newton's quadratic region: whole steps to rounding
            y = [min(max(x[i] + step[i], lo), hi) for i in range(2)]
            still = all(abs(y[i] - x[i]) <= 1e-14 * abs(x[i]) for i in range(2))
            x, near = y, near + 1
            if still or near >= 8:
                return x
            v, g, h = f(x)
            continue
        t = 1.0
        for _ in range(60):
            y = [min(max(x[i] + t * step[i], lo), hi) for i in range(2)]
            vy, gy, hy = f(y)
            if vy >= v:
                x, v, g, h = y, vy, gy, hy
                break
            t *= 0.5
        else:
            return x
    return x


def vb_update(counts, mass, log_prior, modelled, class_prior, lo, hi, learn, want_kl):
    """The variational step of solver='bayes' between two passes (the op's schema in csrc/ops.cpp; the math in
    csrc/common/vb.h): ``(elog_p (K, K, D), elog_pi (K), elog_abstain (D, K) or (0, K), log prior, kl)``."""
    name = "vb_update"
    if counts.dim() != 3 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 1:
        raise RuntimeError(f"{name}: counts must have shape (K, K, D), got {tuple(counts.shape)}")
    k, d = counts.shape[0], counts.shape[2]
    informative = log_prior.dim() == 1 and log_prior.shape[0] == 4
    if mass.shape != (k,) or log_prior.dim() != 1 or log_prior.shape[0] not in (2, 4) or (
            modelled.shape != ((d,) if informative else (0,))):
        raise RuntimeError(f"{name}: mass must have shape ({k},), log_prior (2) or (4) and modelled (D) with four")
    if any(t.dtype != torch.float64 for t in (counts, mass, log_prior, modelled)):
        raise RuntimeError(f"{name}: counts, mass, log_prior and modelled must be float64")
    if not (class_prior > 0 and 0 < lo <= hi):
        raise RuntimeError(f"{name}: class_prior must be positive and the bounds 0 < lo <= hi")
    if informative and bool(((modelled != 0) & (modelled != 1)).any()):
        raise RuntimeError(f"{name}: modelled must hold 0 or 1")
    x = [float(v) for v in log_prior.exp()]
    eye = torch.eye(k, dtype=counts.dtype, device=counts.device)
    post = counts + (x[1] + x[0] * eye).unsqueeze(-1)
    total = post.sum(dim=0, keepdim=True)
    elog = torch.special.digamma(post) - torch.special.digamma(total)
    E = elog.sum(dim=2)
    trace, esum = float(E.trace()), float(E.sum())
    elog_p, elog_abstain = elog, counts.new_empty((0, k))
    post_pi = mass + class_prior
    elog_pi = torch.special.digamma(post_pi) - torch.special.digamma(post_pi.sum())
    conf = _confusion_prior(d, k, trace, esum)
    if informative:
        w = modelled
        present = counts.sum(dim=0)  # (K_m, D)
        vote, abstain = present + x[2], (mass.unsqueeze(1) - present).clamp(min=0.0) + x[3]
        r0 = torch.special.digamma(vote) - torch.special.digamma(vote + abstain)
        r1 = torch.special.digamma(abstain) - torch.special.digamma(vote + abstain)
        elog_p = elog + (r0 * w).unsqueeze(0)
        elog_abstain = (r1 * w).t().contiguous()
        e0, e1, n_keep = float((r0 * w).sum()), float((r1 * w).sum()), float((w > 0).sum())
        rate = _rate_prior(n_keep * k, e0, e1)
    new = list(x)
    if learn:
        new[:2] = newton_box(conf, x[:2], lo, hi)
        if informative and n_keep > 0:
            new[2:] = newton_box(rate, x[2:], lo, hi)
    log_out = torch.tensor([lp if a == b else math.log(b) for lp, a, b in zip(log_prior.tolist(), x, new)],
                           dtype=torch.float64, device=counts.device)
    kl = float("nan")
    if want_kl:
        lg = torch.lgamma
        kl = float((lg(total).sum() - lg(post).sum() + (post * elog).sum())
                   - (new[1] * esum + new[0] * trace))
        kl += d * k * ((k - 1) * math.lgamma(new[1]) + math.lgamma(new[1] + new[0]) - math.lgamma(k * new[1] + new[0]))
        kl += float(lg(post_pi.sum()) - lg(post_pi).sum() + ((post_pi - class_prior) * elog_pi).sum())
        kl += k * math.lgamma(class_prior) - math.lgamma(k * class_prior)
        if informative and n_keep > 0:
            keep = w > 0
            v, a = vote[:, keep], abstain[:, keep]
            kl += float((lg(v + a) - lg(v) - lg(a) + v * r0[:, keep] + a * r1[:, keep]).sum())
            kl += -(new[2] * e0 + new[3] * e1) + n_keep * k * (
                math.lgamma(new[2]) + math.lgamma(new[3]) - math.lgamma(new[2] + new[3]))
    return elog_p, elog_pi, elog_abstain, log_out, torch.tensor(kl, dtype=torch.float64, device=counts.device)
