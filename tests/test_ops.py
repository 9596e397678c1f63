"""The compiled ops (torch.ops.deem.*) against their plain-PyTorch twins.

Every op test takes the `device` parameter: on "cuda" the op runs on the GPU
and is compared with both the twin and the CPU kernel.
"""
import itertools

import pytest
import torch

from deem import _reference as R
from deem import ops

pytestmark = pytest.mark.skipif(not ops.HAS_EXTENSION, reason=f"deem._C not built: {ops.IMPORT_ERROR!r}")

LABEL_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-11, atol=1e-11)}


def params(K, D, H, dtype, scale=0.7, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(K, K, D, H, generator=g, dtype=torch.float64) * scale).to(dtype)
    b_v = (torch.randn(D, K, generator=g, dtype=torch.float64) * scale).to(dtype)
    b_h = (torch.randn(H, K, generator=g, dtype=torch.float64) * scale).to(dtype)
    return W, b_v, b_h


def labels(N, D, K, ldtype=torch.int64, p_missing=0.25, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, K, (N, D), generator=g)
    x[torch.rand(N, D, generator=g) < p_missing] = -1
    if N > 1:
        x[0] = -1  # a row with nothing observed
    return x.to(ldtype)


def soft(N, K, D, dtype, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(N, K, D, generator=g, dtype=torch.float64) * 2, 1).to(dtype)


def to(xs, device):
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in xs)


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def close(a, b, dtype, scale=1.0):
    for p, q in zip(as_tuple(a), as_tuple(b)):
        tol = {k: v * scale for k, v in TOL[dtype].items()}
        torch.testing.assert_close(p.cpu(), q.cpu(), **tol)


def run_op(name, args, device):
    """torch.ops.deem.<name> on `device` (outputs on CPU); on cuda also checked against the CPU kernel."""
    out = as_tuple(getattr(torch.ops.deem, name)(*to(args, device)))
    if device != "cpu":
        ref = as_tuple(getattr(torch.ops.deem, name)(*args))
        dtype = next(a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point())
        close(tuple(o.cpu() for o in out), ref, dtype, scale=10)
    out = tuple(o.cpu() for o in out)
    return out if len(out) > 1 else out[0]


SHAPES = [(2, 4, 1), (5, 6, 3), (5, 7, 1), (2, 3, 3)]  # (K, D, H)


# ----------------------------------------------------------------------------- forward values

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K,D,H", SHAPES)
@pytest.mark.parametrize("ldtype", LABEL_DTYPES)
def test_hard_forward_ops_match_twin(device, dtype, K, D, H, ldtype):
    W, b_v, b_h = params(K, D, H, dtype)
    x = labels(40, D, K, ldtype)
    h = torch.randint(0, K, (40, H), generator=torch.Generator().manual_seed(5))
    for name, args in [("hidden_logits", (x, W, b_h)), ("hidden_probs", (x, W, b_h)),
                       ("energy", (x, h, W, b_v, b_h)), ("free_energy", (x, W, b_v, b_h))]:
        close(run_op(name, args, device), getattr(R, name)(*args), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K,D,H", SHAPES)
def test_soft_forward_ops_match_twin(device, dtype, K, D, H):
    W, b_v, b_h = params(K, D, H, dtype)
    v = soft(30, K, D, dtype)
    for name, args in [("hidden_logits_soft", (v, W, b_h)), ("hidden_probs_soft", (v, W, b_h)),
                       ("free_energy_soft", (v, W, b_v, b_h))]:
        close(run_op(name, args, device), getattr(R, name)(*args), dtype)


def test_free_energy_of_hard_labels_equals_soft_one_hot(device):
    K, D, H = 5, 6, 3
    W, b_v, b_h = params(K, D, H, torch.float64)
    x = labels(20, D, K, p_missing=0.0)
    x[0] = 0
    v = torch.nn.functional.one_hot(x, K).transpose(1, 2).to(torch.float64)
    close(run_op("free_energy", (x, W, b_v, b_h), device), run_op("free_energy_soft", (v, W, b_v, b_h), device),
          torch.float64)


def test_energy_free_energy_consistency(device):
    """F(v) = -log sum_h exp(-E(v, h)), all hidden configurations enumerated."""
    K, D, H = 3, 4, 2
    W, b_v, b_h = params(K, D, H, torch.float64)
    x = labels(10, D, K)
    hs = torch.tensor(list(itertools.product(range(K), repeat=H)))
    E = torch.stack([run_op("energy", (x, hs[c].expand(10, H).contiguous(), W, b_v, b_h), device)
                     for c in range(len(hs))], 1)
    close(-torch.logsumexp(-E, 1), run_op("free_energy", (x, W, b_v, b_h), device), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K,D,H", [(2, 4, 1), (3, 3, 2), (5, 3, 1)])
def test_log_partition(device, dtype, K, D, H):
    W, b_v, b_h = params(K, D, H, dtype)
    out = run_op("log_partition", (W, b_v, b_h), device)
    close(out, R.log_partition(W, b_v, b_h), dtype)
    # brute force over every complete v: log Z = logsumexp_v -F(v)
    allv = torch.tensor(list(itertools.product(range(K), repeat=D)))
    F = R.free_energy(allv, W.double(), b_v.double(), b_h.double())
    close(out.double(), torch.logsumexp(-F, 0), torch.float64, scale=1e6 if dtype == torch.float32 else 1)


def test_log_partition_too_many_configs():
    W, b_v, b_h = params(2, 2, 21, torch.float64)
    with pytest.raises(RuntimeError, match="2\\^20"):
        torch.ops.deem.log_partition(W, b_v, b_h)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K,D,H", SHAPES)
def test_backward_ops_match_twin(device, dtype, K, D, H):
    W, b_v, b_h = params(K, D, H, dtype)
    x = labels(50, D, K, torch.int16)
    v = soft(50, K, D, dtype)
    grad = torch.randn(50, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    close(run_op("free_energy_backward", (grad, x, W, b_v, b_h), device),
          R.free_energy_backward(grad, x, W, b_v, b_h), dtype, scale=10)
    close(run_op("free_energy_soft_backward", (grad, v, W, b_v, b_h), device),
          R.free_energy_soft_backward(grad, v, W, b_v, b_h), dtype, scale=10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K,D,H", [(2, 4, 1), (5, 6, 3)])
def test_autograd_matches_twin_autograd(device, dtype, K, D, H):
    x = labels(30, D, K, torch.int32)
    v0 = soft(30, K, D, dtype)
    wt = torch.randn(30, generator=torch.Generator().manual_seed(4), dtype=torch.float64).to(dtype)

    def grads(fn, soft_input, dev):
        W, b_v, b_h = (p.to(dev).requires_grad_() for p in params(K, D, H, dtype))
        v = v0.to(dev).requires_grad_()
        out = fn(v, W, b_v, b_h) if soft_input else fn(x.to(dev), W, b_v, b_h)
        (out * wt.to(dev)).sum().backward()
        gs = (W.grad, b_v.grad, b_h.grad) + ((v.grad,) if soft_input else ())
        return tuple(torch.zeros(()) if g is None else g.cpu() for g in gs)

    close(grads(ops.free_energy, False, device), grads(R.free_energy, False, "cpu"), dtype, scale=10)
    close(grads(ops.free_energy_soft, True, device), grads(R.free_energy_soft, True, "cpu"), dtype, scale=10)
    hl = lambda v, W, b_v, b_h: ops.hidden_logits_soft(v, W, b_h).sin().sum((1, 2))  # noqa: E731
    hr = lambda v, W, b_v, b_h: R.hidden_logits_soft(v, W, b_h).sin().sum((1, 2))  # noqa: E731
    close(grads(hl, True, device), grads(hr, True, "cpu"), dtype, scale=10)


def test_gradcheck(device):
    K, D, H = 3, 3, 2
    W, b_v, b_h = (p.to(device).requires_grad_() for p in params(K, D, H, torch.float64))
    x = labels(6, D, K).to(device)
    v = soft(6, K, D, torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda W, b_v, b_h: ops.free_energy(x, W, b_v, b_h), (W, b_v, b_h))
    assert torch.autograd.gradcheck(ops.free_energy_soft, (v, W, b_v, b_h))
    assert torch.autograd.gradcheck(ops.hidden_logits_soft, (v, W, b_h))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K,D,H", SHAPES)
@pytest.mark.parametrize("sample_hidden", [False, True])
def test_cd_grad_matches_twin(device, dtype, K, D, H, sample_hidden):
    W, b_v, b_h = params(K, D, H, dtype)
    pos, neg = labels(70, D, K, torch.int8), labels(40, D, K, torch.int64, seed=9)
    args = (pos, neg, W, b_v, b_h, sample_hidden, 1234, 77)
    out = run_op("cd_grad", args, device)
    assert out[3].shape == ()
    if sample_hidden and dtype == torch.float32:
        # float32 softmax rounding may, very rarely, move one inverse-CDF draw: compare loosely
        close(out, R.cd_grad(*args), dtype, scale=1e4)
    else:
        close(out, R.cd_grad(*args), dtype, scale=10)
    v = soft(70, K, D, dtype)
    args = (v, neg, W, b_v, b_h, sample_hidden, 1234, 77)
    close(run_op("cd_grad_soft", args, device), R.cd_grad_soft(*args), dtype,
          scale=1e4 if sample_hidden and dtype == torch.float32 else 10)


@pytest.mark.parametrize("K,D,H", SHAPES)
def test_cd_grad_is_gradient_of_loss(device, K, D, H):
    W, b_v, b_h = (p.requires_grad_() for p in params(K, D, H, torch.float64))
    pos, neg = labels(60, D, K), labels(45, D, K, seed=8)
    loss = R.free_energy(pos, W, b_v, b_h).mean() - R.free_energy(neg, W, b_v, b_h).mean()
    expect = torch.autograd.grad(loss, (W, b_v, b_h)) + (loss.detach(),)
    out = run_op("cd_grad", (pos, neg, W.detach(), b_v.detach(), b_h.detach(), False, 0, 0), device)
    close(out, expect, torch.float64, scale=10)
    v = soft(60, K, D, torch.float64)
    loss = R.free_energy_soft(v, W, b_v, b_h).mean() - R.free_energy(neg, W, b_v, b_h).mean()
    expect = torch.autograd.grad(loss, (W, b_v, b_h)) + (loss.detach(),)
    out = run_op("cd_grad_soft", (v, neg, W.detach(), b_v.detach(), b_h.detach(), False, 0, 0), device)
    close(out, expect, torch.float64, scale=10)


def test_cd_grad_sampled_hidden_close_to_exact(device):
    """The sampled-hidden statistics are a noisy version of the exact ones."""
    K, D, H = 3, 4, 2
    W, b_v, b_h = params(K, D, H, torch.float64)
    pos, neg = labels(400, D, K), labels(300, D, K, seed=3)
    exact = run_op("cd_grad", (pos, neg, W, b_v, b_h, False, 0, 0), device)
    samp = run_op("cd_grad", (pos, neg, W, b_v, b_h, True, 11, 0), device)
    assert not torch.equal(samp[0], exact[0])
    torch.testing.assert_close(samp[1], exact[1])  # db_v and the loss do not depend on h
    torch.testing.assert_close(samp[3], exact[3])
    assert (samp[0] - exact[0]).abs().max() < 0.25
    assert (samp[2] - exact[2]).abs().max() < 0.25


def test_sample_hidden_determinism(device):
    K, D, H = 5, 6, 3
    W, b_v, b_h = params(K, D, H, torch.float64)
    pos, neg = labels(100, D, K), labels(100, D, K, seed=4)
    a = run_op("cd_grad", (pos, neg, W, b_v, b_h, True, 5, 10), device)
    b = run_op("cd_grad", (pos, neg, W, b_v, b_h, True, 5, 10), device)
    c = run_op("cd_grad", (pos, neg, W, b_v, b_h, True, 5, 11), device)
    d = run_op("cd_grad", (pos, neg, W, b_v, b_h, True, 6, 10), device)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], d[0])


def test_thread_count_independence(restore_threads):
    K, D, H = 5, 8, 3
    W, b_v, b_h = params(K, D, H, torch.float32)
    pos, neg = labels(1500, D, K), labels(1100, D, K, seed=6)  # several 512-row chunks
    v = soft(1300, K, D, torch.float32)
    grad = torch.randn(1500)
    outs = []
    for n in (1, 2):
        torch.set_num_threads(n)
        ch = neg.clone()
        acc = torch.ops.deem.gwg_steps(ch, W, b_v, b_h, 5, 3, 0)
        ev = torch.ops.deem.soft_evidence_pass(v.double(), W[:, :, :, 0].double().log_softmax(0),
                                               b_h[0].double().log_softmax(0), True, True)
        ch_dlp = neg.clone()
        acc_dlp = torch.ops.deem.dlp_steps(ch_dlp, W, b_v, b_h, 0.5, 5, 3, 0)
        outs.append(
            as_tuple(torch.ops.deem.cd_grad(pos, neg, W, b_v, b_h, False, 0, 0))
            + as_tuple(torch.ops.deem.cd_grad(pos, neg, W, b_v, b_h, True, 1, 2))
            + as_tuple(torch.ops.deem.cd_grad_soft(v, neg, W, b_v, b_h, True, 1, 2))
            + as_tuple(torch.ops.deem.free_energy_backward(grad, pos, W, b_v, b_h))
            + as_tuple(torch.ops.deem.free_energy_soft_backward(grad[:1300], v, W, b_v, b_h))
            + (torch.ops.deem.free_energy(pos, W, b_v, b_h), torch.ops.deem.log_partition(W, b_v, b_h), ch, acc,
               ch_dlp, acc_dlp) + ev
        )
    for p, q in zip(*outs):
        assert torch.equal(p, q)


# ----------------------------------------------------------------------------- GWG and DLP samplers

DLP_STEP = 0.7
# Each sampler op and its twin with one signature: (chains, W, b_v, b_h, n_steps, seed, offset).
SAMPLER_OPS = {
    "gwg": (lambda c, W, bv, bh, n, s, o: torch.ops.deem.gwg_steps(c, W, bv, bh, n, s, o),
            lambda c, W, bv, bh, n, s, o: R.gwg_steps(c, W, bv, bh, n, s, o)),
    "dlp": (lambda c, W, bv, bh, n, s, o: torch.ops.deem.dlp_steps(c, W, bv, bh, DLP_STEP, n, s, o),
            lambda c, W, bv, bh, n, s, o: R.dlp_steps(c, W, bv, bh, DLP_STEP, n, s, o)),
}


@pytest.fixture(params=sorted(SAMPLER_OPS))
def sampler(request):
    return SAMPLER_OPS[request.param]


@pytest.mark.parametrize("K,D,H", [(2, 4, 1), (5, 6, 3), (5, 30, 1), (3, 3, 2)])
@pytest.mark.parametrize("ldtype", LABEL_DTYPES)
def test_sampler_chains_identical_to_twin_float64(device, sampler, K, D, H, ldtype):
    op, twin = sampler
    W, b_v, b_h = params(K, D, H, torch.float64, scale=1.0)
    x = labels(64, D, K, ldtype, p_missing=0.3)
    c_op = x.clone().to(device)
    acc = op(c_op, *to((W, b_v, b_h), device), 25, 42, 1000).cpu()
    c_ref = x.clone()
    acc_ref = twin(c_ref, W, b_v, b_h, 25, 42, 1000)
    assert acc.dtype == torch.int32 and acc.shape == (64,)
    assert c_op.dtype == ldtype
    assert torch.equal(c_op.cpu(), c_ref)
    assert torch.equal(acc, acc_ref)
    if device != "cpu":
        c_cpu = x.clone()
        assert torch.equal(op(c_cpu, W, b_v, b_h, 25, 42, 1000), acc)
        assert torch.equal(c_cpu, c_ref)
    # missing entries stay missing, the rest stays in range; chains do move
    assert torch.equal(c_ref < 0, x < 0)
    assert int(c_ref.max()) < K
    assert acc[1:].sum() > 0 and acc[0] == 0  # row 0 has nothing observed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sampler_offsets_compose(device, sampler, dtype):
    """n steps at offset o then m steps at o + n == n + m steps at o (the state is recomputed per call)."""
    op, twin = sampler
    K, D, H = 5, 10, 2
    W, b_v, b_h = to(params(K, D, H, dtype), device)
    x = labels(50, D, K).to(device)
    a = x.clone()
    n1 = op(a, W, b_v, b_h, 7, 9, 100)
    n2 = op(a, W, b_v, b_h, 5, 9, 107)
    b = x.clone()
    n = op(b, W, b_v, b_h, 12, 9, 100)
    assert torch.equal(a, b)
    assert torch.equal(n1 + n2, n)
    c = x.clone()
    op(c, W, b_v, b_h, 12, 10, 100)
    assert not torch.equal(c, b)  # another seed, another chain


def test_sampler_float32_close_to_twin(device, sampler):
    op, twin = sampler
    K, D, H = 5, 30, 1
    W, b_v, b_h = params(K, D, H, torch.float32)
    x = labels(128, D, K)
    c_op, c_ref = x.clone().to(device), x.clone()
    acc = op(c_op, *to((W, b_v, b_h), device), 20, 1, 0).cpu()
    acc_ref = twin(c_ref, W, b_v, b_h, 20, 1, 0)
    # float32 rounding may flip a rare near-tie decision; almost all chains agree
    assert (c_op.cpu() == c_ref).all(1).float().mean() > 0.9
    assert (acc == acc_ref).float().mean() > 0.9


def test_sampler_degenerate_cases(device, sampler):
    op, twin = sampler
    W, b_v, b_h = params(1, 4, 2, torch.float64)
    x = torch.zeros(5, 4, dtype=torch.int64)
    x[1] = -1
    c = x.clone().to(device)
    assert op(c, *to((W, b_v, b_h), device), 10, 0, 0).sum() == 0  # K == 1
    assert torch.equal(c.cpu(), x)
    W, b_v, b_h = params(3, 4, 2, torch.float64)
    c = torch.full((3, 4), -1, dtype=torch.int64, device=device)
    assert op(c, *to((W, b_v, b_h), device), 10, 0, 0).sum() == 0  # nothing present
    assert (c == -1).all()
    c = labels(4, 4, 3).to(device)
    c0 = c.clone()
    assert op(c, *to((W, b_v, b_h), device), 0, 0, 0).sum() == 0  # no steps
    assert torch.equal(c, c0)
    e = torch.empty(0, 4, dtype=torch.int64, device=device)
    assert op(e, *to((W, b_v, b_h), device), 3, 0, 0).shape == (0,)


def test_sampler_non_contiguous_chains(device, sampler):
    op, twin = sampler
    K, D, H = 3, 5, 2
    W, b_v, b_h = params(K, D, H, torch.float64)
    base = labels(30, 2 * D, K).to(device)
    view = base[:, ::2]
    assert not view.is_contiguous()
    ref = view.clone().cpu()
    acc = op(view, *to((W, b_v, b_h), device), 6, 2, 0)
    acc_ref = twin(ref, W, b_v, b_h, 6, 2, 0)
    assert torch.equal(base[:, ::2].cpu(), ref)
    assert torch.equal(acc.cpu(), acc_ref)


# ----------------------------------------------------------------------------- virtual-evidence E-step

def evidence_inputs(N, K, D, dtype, seed=3):
    """Soft labels with missing columns (all-zero), a row with no evidence, an unnormalized column,
    and random log-confusions / log-prior."""
    g = torch.Generator().manual_seed(seed)
    v = soft(N, K, D, dtype, seed=seed)
    v[torch.rand(N, 1, D, generator=g).expand(N, K, D) < 0.3] = 0
    v[1] = 0
    v[2, :, 0] *= 0.5  # partial mass still counts as present
    logp = torch.log_softmax(torch.randn(K, K, D, generator=g, dtype=torch.float64) * 3, 0)
    logpi = torch.log_softmax(torch.randn(K, generator=g, dtype=torch.float64), 0)
    return v, logp, logpi


@pytest.mark.parametrize("N,K,D", [(700, 3, 7), (40, 10, 30), (1200, 2, 50), (3, 4, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("want_counts,want_posterior", [(True, True), (True, False), (False, True)])
def test_soft_evidence_pass_matches_twin(device, N, K, D, dtype, want_counts, want_posterior):
    v, logp, logpi = evidence_inputs(N, K, D, dtype)
    out = ops.soft_evidence_pass(*to((v, logp, logpi), device), want_counts, want_posterior)
    ref = R.soft_evidence_pass(v, logp, logpi, want_counts, want_posterior)
    assert [tuple(o.shape) for o in out] == [tuple(r.shape) for r in ref]
    assert all(o.dtype == torch.float64 for o in out)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o.cpu(), r, rtol=1e-11, atol=1e-12)
    counts, mass, nll, rows, post = (o.cpu() for o in out)
    with_evidence = int((v.sum(1) > 0).any(1).sum())
    assert with_evidence < N  # row 1 has none
    assert rows == with_evidence
    assert mass.sum() == pytest.approx(with_evidence)
    if want_counts:  # each present (row, classifier) spreads its row's posterior over the counts
        present_pairs = (v.sum(1) > 0).sum()
        assert counts.sum() == pytest.approx(float(present_pairs), rel=1e-9)
    if want_posterior:
        torch.testing.assert_close(post[1], logpi.exp())  # no evidence: the prior


def test_soft_evidence_pass_one_hot_is_the_hard_label_likelihood():
    """On one-hot soft labels the pass is the Dawid-Skene E-step: its NLL is the exact hard-label one."""
    K, D, N = 3, 6, 400
    x = labels(N, D, K, p_missing=0.3)
    v = torch.nn.functional.one_hot(x.clamp(min=0), K).permute(0, 2, 1).double() * (x >= 0)[:, None, :]
    _, logp, logpi = evidence_inputs(N, K, D, torch.float64)
    _, _, nll, _, post = ops.soft_evidence_pass(v, logp, logpi, False, True)
    scores = logpi + torch.stack([torch.where(x >= 0, logp[x.clamp(min=0), m, torch.arange(D)], 0.0).sum(1)
                                  for m in range(K)], 1)
    has = (x >= 0).any(1)
    assert float(nll) == pytest.approx(float(-torch.logsumexp(scores, 1)[has].sum()), rel=1e-12)
    torch.testing.assert_close(post[has], torch.softmax(scores, 1)[has])


def test_soft_evidence_pass_rejects_bad_arguments():
    v, logp, logpi = evidence_inputs(10, 3, 4, torch.float64)
    d = torch.ops.deem
    bad = [
        lambda: d.soft_evidence_pass(v[0], logp, logpi, True, False),              # v 2-D
        lambda: d.soft_evidence_pass(v.long(), logp, logpi, True, False),          # integer v
        lambda: d.soft_evidence_pass(v, logp[:2], logpi, True, False),             # logp (K-1, K, D)
        lambda: d.soft_evidence_pass(v, logp[..., :3], logpi, True, False),        # logp (K, K, D-1)
        lambda: d.soft_evidence_pass(v, logp.float(), logpi, True, False),         # float32 logp
        lambda: d.soft_evidence_pass(v, logp, logpi[:2], True, False),             # logpi (K-1,)
        lambda: d.soft_evidence_pass(v[:, :, :0], logp[..., :0], logpi, True, False),  # D == 0
    ]
    for call in bad:
        with pytest.raises(RuntimeError):
            call()


# ----------------------------------------------------------------------------- Philox twin

def test_philox_known_answers():
    """Random123 known-answer vectors for Philox4x32-10 (key = (lo(seed), hi(seed)))."""
    z = torch.tensor(0)
    out = R.philox4x32(0, z, z, z, z)
    assert [int(o) for o in out] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    f = torch.tensor(0xFFFFFFFF)
    out = R.philox4x32(0xFFFFFFFFFFFFFFFF, f, f, f, f)
    assert [int(o) for o in out] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    c = [torch.tensor(v) for v in (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)]
    out = R.philox4x32(0x299F31D0A4093822, *c)
    assert [int(o) for o in out] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]
    u = R.philox_uniform(torch.tensor([0, 0xFFFFFFFF]))
    assert 0 < u[0] < u[1] < 1


# ----------------------------------------------------------------------------- opcheck

def _opcheck_samples(device):
    K, D, H = 3, 4, 2
    W, b_v, b_h = to(params(K, D, H, torch.float64), device)
    x = labels(6, D, K).to(device)
    v = soft(6, K, D, torch.float64).to(device)
    h = torch.randint(0, K, (6, H)).to(device)
    g = torch.randn(6, dtype=torch.float64).to(device)
    rg = lambda t: t.clone().requires_grad_()  # noqa: E731
    return [
        ("hidden_logits", (x, W, b_h)), ("hidden_probs", (x, W, b_h)),
        ("hidden_logits_soft", (rg(v), rg(W), rg(b_h))), ("hidden_probs_soft", (v, W, b_h)),
        ("energy", (x, h, W, b_v, b_h)),
        ("free_energy", (x, W, b_v, b_h)), ("free_energy", (x, rg(W), rg(b_v), rg(b_h))),
        ("free_energy_soft", (v, W, b_v, b_h)), ("free_energy_soft", (rg(v), rg(W), rg(b_v), rg(b_h))),
        ("free_energy_backward", (g, x, W, b_v, b_h)), ("free_energy_soft_backward", (g, v, W, b_v, b_h)),
        ("cd_grad", (x, x.flip(0), W, b_v, b_h, False, 0, 0)), ("cd_grad", (x, x, W, b_v, b_h, True, 1, 2)),
        ("cd_grad_soft", (v, x, W, b_v, b_h, True, 1, 2)),
        ("gwg_steps", (x.clone(), W, b_v, b_h, 3, 1, 0)),
        ("dlp_steps", (x.clone(), W, b_v, b_h, 0.5, 3, 1, 0)),
        ("soft_evidence_pass", (v, W[:, :, :, 0].log_softmax(0), b_h[0].log_softmax(0), True, True)),
        ("log_partition", (W, b_v, b_h)),
    ]


@pytest.mark.parametrize("idx", range(18))
def test_opcheck(device, idx):
    name, args = _opcheck_samples(device)[idx]  # the samplers mutate: its sample holds a copy of the chains
    if name == "soft_evidence_pass" and device != "cpu":
        pytest.skip("soft_evidence_pass has a CPU kernel only: on CUDA the wrapper runs the PyTorch twin")
    torch.library.opcheck(getattr(torch.ops.deem, name).default, args)


# ----------------------------------------------------------------------------- bad inputs

def _label_ops(x, W, b_v, b_h):
    h = torch.zeros(x.shape[0], W.shape[3], dtype=torch.int64)
    g = torch.ones(x.shape[0], dtype=W.dtype)
    good = torch.zeros_like(x)
    return {
        "hidden_logits": lambda: torch.ops.deem.hidden_logits(x, W, b_h),
        "hidden_probs": lambda: torch.ops.deem.hidden_probs(x, W, b_h),
        "energy": lambda: torch.ops.deem.energy(x, h, W, b_v, b_h),
        "free_energy": lambda: torch.ops.deem.free_energy(x, W, b_v, b_h),
        "free_energy_backward": lambda: torch.ops.deem.free_energy_backward(g, x, W, b_v, b_h),
        "cd_grad_pos": lambda: torch.ops.deem.cd_grad(x, good, W, b_v, b_h, False, 0, 0),
        "cd_grad_neg": lambda: torch.ops.deem.cd_grad(good, x, W, b_v, b_h, True, 0, 0),
        "cd_grad_soft": lambda: torch.ops.deem.cd_grad_soft(
            torch.full((x.shape[0], W.shape[0], x.shape[1]), 1.0 / W.shape[0], dtype=W.dtype), x, W, b_v, b_h,
            False, 0, 0),
        "gwg_steps": lambda: torch.ops.deem.gwg_steps(x.clone(), W, b_v, b_h, 2, 0, 0),
        "dlp_steps": lambda: torch.ops.deem.dlp_steps(x.clone(), W, b_v, b_h, 1.0, 2, 0, 0),
    }


@pytest.mark.parametrize("bad", [3, -2, 100, -128])
@pytest.mark.parametrize("ldtype", LABEL_DTYPES)
def test_out_of_range_labels_raise(device, bad, ldtype):
    K, D, H = 3, 4, 2
    W, b_v, b_h = to(params(K, D, H, torch.float64), device)
    x = labels(700, D, K, ldtype)  # several chunks: the error may come from any thread
    x[613, 2] = bad
    for name, fn in _label_ops(x.to(device), W, b_v, b_h).items():
        with pytest.raises(RuntimeError, match="out of range"):
            fn()
    for op, _ in SAMPLER_OPS.values():
        chains = x.to(device)
        before = chains.clone()
        with pytest.raises(RuntimeError, match="out of range"):
            op(chains, W, b_v, b_h, 3, 0, 0)
        assert torch.equal(chains, before)  # validated before any chain moves


def test_wrong_shapes_and_dtypes_raise(device):
    K, D, H = 3, 4, 2
    W, b_v, b_h = to(params(K, D, H, torch.float64), device)
    x = labels(5, D, K).to(device)
    v = soft(5, K, D, torch.float64).to(device)
    d = torch.ops.deem
    bad_calls = [
        lambda: d.free_energy(x[:, :3], W, b_v, b_h),                 # labels (N, D-1)
        lambda: d.free_energy(x[0], W, b_v, b_h),                     # labels 1-d
        lambda: d.free_energy(x.float(), W, b_v, b_h),                # float labels
        lambda: d.free_energy(x.to(torch.uint8), W, b_v, b_h),        # uint8 labels
        lambda: d.free_energy(x, W[0], b_v, b_h),                     # W 3-d
        lambda: d.free_energy(x, W[:2], b_v, b_h),                    # W (K-1, K, D, H)
        lambda: d.free_energy(x, W, b_v.t().contiguous(), b_h),       # b_v (K, D)
        lambda: d.free_energy(x, W, b_v, b_h[:1]),                    # b_h (H-1, K)
        lambda: d.free_energy(x, W, b_v.float(), b_h),                # mixed dtypes
        lambda: d.free_energy(x, W.int(), b_v.int(), b_h.int()),      # integer params
        lambda: d.free_energy_soft(v.transpose(1, 2), W, b_v, b_h),   # v (N, D, K)
        lambda: d.free_energy_soft(v.float(), W, b_v, b_h),           # v dtype
        lambda: d.hidden_logits_soft(v[:, :2], W, b_h),
        lambda: d.energy(x, torch.zeros(5, H + 1, dtype=torch.int64, device=device), W, b_v, b_h),
        lambda: d.energy(x, torch.full((5, H), K, dtype=torch.int64, device=device), W, b_v, b_h),
        lambda: d.free_energy_backward(torch.ones(4, dtype=W.dtype, device=device), x, W, b_v, b_h),
        lambda: d.cd_grad(x, x[:, :2], W, b_v, b_h, False, 0, 0),
        lambda: d.cd_grad(x[:0], x, W, b_v, b_h, False, 0, 0),        # empty pos
        lambda: d.gwg_steps(x.clone(), W, b_v, b_h, -1, 0, 0),        # negative n_steps
        lambda: d.gwg_steps(x[:, :2].clone(), W, b_v, b_h, 1, 0, 0),
        lambda: d.dlp_steps(x.clone(), W, b_v, b_h, 1.0, -1, 0, 0),   # negative n_steps
        lambda: d.dlp_steps(x.clone(), W, b_v, b_h, 0.0, 1, 0, 0),    # step size 0
        lambda: d.dlp_steps(x.clone(), W, b_v, b_h, -1.0, 1, 0, 0),   # negative step size
        lambda: d.dlp_steps(x.clone(), W, b_v, b_h, float("nan"), 1, 0, 0),
        lambda: d.dlp_steps(x.clone(), W, b_v, b_h, float("inf"), 1, 0, 0),
        lambda: d.dlp_steps(x[:, :2].clone(), W, b_v, b_h, 1.0, 1, 0, 0),
    ]
    for k, call in enumerate(bad_calls):
        with pytest.raises(RuntimeError):
            call()
        assert k >= 0


def test_twin_rejects_bad_labels():
    W, b_v, b_h = params(3, 4, 2, torch.float64)
    x = labels(5, 4, 3)
    x[1, 1] = 3
    with pytest.raises(RuntimeError, match="out of range"):
        R.free_energy(x, W, b_v, b_h)
    with pytest.raises(RuntimeError, match="out of range"):
        R.gwg_steps(x, W, b_v, b_h, 1, 0, 0)
    with pytest.raises(RuntimeError, match="out of range"):
        R.dlp_steps(x, W, b_v, b_h, 1.0, 1, 0, 0)
    with pytest.raises(RuntimeError, match="step_size"):
        R.dlp_steps(labels(5, 4, 3), W, b_v, b_h, 0.0, 1, 0, 0)


# ----------------------------------------------------------------------------- backend switch

def test_backend_switch():
    K, D, H = 3, 4, 2
    W, b_v, b_h = params(K, D, H, torch.float64)
    x = labels(8, D, K)
    assert ops.get_backend() == "auto"
    with ops.use_reference():
        assert ops.get_backend() == "reference"
        ref = ops.free_energy(x, W, b_v, b_h)
        c = x.clone()
        ops.gwg_steps(c, W, b_v, b_h, n_steps=3, seed=1)
    assert ops.get_backend() == "auto"
    close(ref, torch.ops.deem.free_energy(x, W, b_v, b_h), torch.float64)
    c2 = x.clone()
    ops.gwg_steps(c2, W, b_v, b_h, n_steps=3, seed=1)
    assert torch.equal(c, c2)
    ops.set_backend("reference")
    try:
        assert ops.get_backend() == "reference"
        ops.set_backend("extension")
        close(ops.log_partition(W, b_v, b_h), R.log_partition(W, b_v, b_h), torch.float64)
    finally:
        ops.set_backend("auto")
    with pytest.raises(ValueError):
        ops.set_backend("fast")
    out = ops.cd_grad(x, x.flip(0), W, b_v, b_h)
    close(out, R.cd_grad(x, x.flip(0), W, b_v, b_h), torch.float64)
    assert ops.reference is R
