"""The GWG and DLP samplers sample the right distribution.

Small RBMs (D = 3 classifiers, K = 3 classes) whose p(v) ∝ exp(-F(v)) can be
enumerated exactly; many short chains, burn-in, then the empirical state
distribution over many steps must be within total variation 0.03 of p.
"""
import itertools

import pytest
import torch

from deem import _reference as R
from deem import ops

K, D = 3, 3
N_CHAINS, BURN, COLLECT = 2000, 30, 100
TV_MAX = 0.03

needs_ext = pytest.mark.skipif(not ops.HAS_EXTENSION, reason="deem._C not built")


def params(H, scale, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(K, K, D, H, generator=g, dtype=torch.float64) * scale
    b_v = torch.randn(D, K, generator=g, dtype=torch.float64) * scale
    b_h = torch.randn(H, K, generator=g, dtype=torch.float64) * scale
    return W, b_v, b_h


def exact(W, b_v, b_h, missing=()):
    """p over the observed coordinates' states (lexicographic order), missing ones set to -1."""
    obs = [i for i in range(D) if i not in missing]
    states = torch.tensor(list(itertools.product(range(K), repeat=len(obs))))
    x = torch.full((len(states), D), -1, dtype=torch.int64)
    x[:, obs] = states
    return torch.softmax(-R.free_energy(x, W, b_v, b_h), 0)


def state_index(x, obs):
    idx = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    for i in obs:
        idx = idx * K + x[:, i].long()
    return idx


def empirical(sampler, W, b_v, b_h, missing=(), seed=0, device="cpu", n_chains=N_CHAINS):
    """Distribution of the chains' states over COLLECT steps after BURN steps; also the acceptance rate."""
    obs = [i for i in range(D) if i not in missing]
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randint(0, K, (n_chains, D), generator=g)
    x[:, list(missing)] = -1
    x = x.to(device)
    W, b_v, b_h = W.to(device), b_v.to(device), b_h.to(device)
    sampler(x, W, b_v, b_h, BURN, seed, 0)
    counts = torch.zeros(K ** len(obs), dtype=torch.float64, device=device)
    accepted = 0
    for s in range(COLLECT):
        accepted += int(sampler(x, W, b_v, b_h, 1, seed, BURN + s).sum())
        assert (x[:, list(missing)] == -1).all(), "a missing coordinate was filled in"
        counts += torch.bincount(state_index(x, obs), minlength=K ** len(obs)).double()
    return (counts / counts.sum()).cpu(), accepted / (COLLECT * n_chains)


def tv(p, q):
    return 0.5 * float((p - q).abs().sum())


DLP_STEP = 1.0
OP_SAMPLERS = {
    "gwg": lambda x, W, b_v, b_h, n, seed, offset: torch.ops.deem.gwg_steps(x, W, b_v, b_h, n, seed, offset),
    "dlp": lambda x, W, b_v, b_h, n, seed, offset: torch.ops.deem.dlp_steps(x, W, b_v, b_h, DLP_STEP, n, seed,
                                                                            offset),
}


@needs_ext
@pytest.mark.parametrize("kind", sorted(OP_SAMPLERS))
@pytest.mark.parametrize("H,scale,seed", [(1, 1.0, 0), (2, 0.7, 1)])
def test_sampler_samples_the_model(device, kind, H, scale, seed):
    W, b_v, b_h = params(H, scale, seed)
    p = exact(W, b_v, b_h)
    assert p.max() < 0.5  # a non-trivial target
    q, acc = empirical(OP_SAMPLERS[kind], W, b_v, b_h, seed=seed, device=device)
    assert tv(q, p) < TV_MAX, (tv(q, p), acc)
    assert 0.05 < acc < 0.99, acc  # a real Metropolis-Hastings correction


@needs_ext
@pytest.mark.parametrize("kind", sorted(OP_SAMPLERS))
def test_sampler_missing_coordinate_stays_missing_and_conditional_is_right(device, kind):
    W, b_v, b_h = params(2, 0.8, 2)
    p = exact(W, b_v, b_h, missing=(2,))
    assert p.shape == (9,)
    q, acc = empirical(OP_SAMPLERS[kind], W, b_v, b_h, missing=(2,), seed=3, device=device)
    assert tv(q, p) < TV_MAX, tv(q, p)
    assert 0.05 < acc < 0.99, acc


def test_twin_sampler_is_correct_and_accept_all_is_not(monkeypatch):
    """The twin samples p too; forcing every proposal to be accepted (u2 -> 0) visibly biases it."""
    W, b_v, b_h = params(1, 1.2, 4)
    p = exact(W, b_v, b_h)
    q, acc = empirical(R.gwg_steps, W, b_v, b_h, seed=5, n_chains=1000)
    assert tv(q, p) < TV_MAX + 0.01, tv(q, p)
    assert 0.05 < acc < 0.99, acc

    real = R.philox_uniform
    calls = {"n": 0}

    def u2_tiny(bits):  # gwg_steps draws u1 then u2 each step: make every u2 ~ 0 (log u2 ~ -690)
        calls["n"] += 1
        u = real(bits)
        return u if calls["n"] % 2 else torch.full_like(u, 1e-300)

    monkeypatch.setattr(R, "philox_uniform", u2_tiny)
    q_all, acc_all = empirical(R.gwg_steps, W, b_v, b_h, seed=5, n_chains=1000)
    assert acc_all == 1.0
    assert tv(q_all, p) > TV_MAX, tv(q_all, p)


def test_dlp_twin_is_correct_and_its_correction_matters(monkeypatch):
    """The DLP twin samples p; dropping its Metropolis-Hastings test (accept every joint move) biases it."""
    W, b_v, b_h = params(1, 1.2, 4)
    p = exact(W, b_v, b_h)

    def dlp(x, W, b_v, b_h, n, seed, offset):
        return R.dlp_steps(x, W, b_v, b_h, 3.0, n, seed, offset)

    q, acc = empirical(dlp, W, b_v, b_h, seed=5, n_chains=1000)
    assert tv(q, p) < TV_MAX + 0.01, tv(q, p)
    assert 0.05 < acc < 0.99, acc

    real = R.philox_draw

    def accept_all(seed, stream, index, step):  # the acceptance uniform -> its least value (log u ~ -17)
        out = real(seed, stream, index, step)
        if isinstance(stream, int) and stream == R.DLP_ACCEPT_STREAM:
            return (torch.zeros_like(out[0]),) + tuple(out[1:])
        return out

    monkeypatch.setattr(R, "philox_draw", accept_all)
    q_all, acc_all = empirical(dlp, W, b_v, b_h, seed=5, n_chains=1000)
    assert acc_all == 1.0
    assert tv(q_all, p) > TV_MAX, tv(q_all, p)


# ----------------------------------------------------------------------------- DLP in training

def _fitted_dense_rbm(D=40, K=5, accuracy=0.4):
    """An RBM fitted exactly to a dense synthetic ensemble, and exact samples of it (one hidden unit)."""
    import numpy as np

    from deem import DEEM

    r = np.random.default_rng(0)
    y = r.integers(0, K, 2000)
    X = np.where(r.random((2000, D)) < accuracy, y[:, None], r.integers(0, K, (2000, D)))
    m = DEEM(solver="exact", random_state=0, device="cpu").fit(X)
    W, b_v, b_h = (t.detach() for t in (m.model_.W, m.model_.b_v, m.model_.b_h))
    g = torch.Generator().manual_seed(1)
    p_h = torch.softmax(b_h[0] + torch.logsumexp(b_v.t()[:, None, :] + W[..., 0], 0).sum(-1), 0)
    h = torch.multinomial(p_h, 4000, replacement=True, generator=g)
    x = torch.distributions.Categorical(logits=b_v[None] + W[..., 0].permute(1, 2, 0)[h]).sample()
    return W, b_v, b_h, x


def _lag_correlation(op, W, b_v, b_h, x0, n):
    x = x0.clone()
    op(x, W, b_v, b_h, n)
    a, b = -ops.free_energy(x0, W, b_v, b_h), -ops.free_energy(x, W, b_v, b_h)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_dlp_mixes_faster_per_step_than_gwg_on_many_dense_classifiers():
    """DLP's reason to exist: it moves every coordinate per step. From exact samples of a fitted
    40-classifier RBM, the correlation of f(x) after 4 steps is far lower than GWG's."""
    W, b_v, b_h, x0 = _fitted_dense_rbm()
    r_gwg = _lag_correlation(lambda x, W, bv, bh, n: ops.gwg_steps(x, W, bv, bh, n, seed=1), W, b_v, b_h, x0, 4)
    r_dlp = _lag_correlation(lambda x, W, bv, bh, n: ops.dlp_steps(x, W, bv, bh, 0.5, n, seed=1), W, b_v, b_h, x0, 4)
    assert r_dlp < r_gwg - 0.2, (r_dlp, r_gwg)


def test_dlp_step_size_adapts_toward_the_target_acceptance():
    from deem.solvers import samplers
    from deem._validation import check_labels
    from deem.rbm import RBM

    W, b_v, b_h, x0 = _fitted_dense_rbm()
    rbm = RBM(W.shape[2], W.shape[0], 1)
    with torch.no_grad():
        rbm.W.copy_(W), rbm.b_v.copy_(b_v), rbm.b_h.copy_(b_h)
    batch = check_labels(x0[:500].numpy())
    for start, direction in ((0.05, 1), (20.0, -1)):
        chains = samplers.PersistentChains(batch, torch.Generator().manual_seed(0), seed=3, kind="dlp")
        chains.step_size = start
        for _ in range(samplers.DLP_ADAPT_EVERY * 4):
            chains.restart_from(batch)
            chains.step(rbm, 2)
        assert (chains.step_size - start) * direction > 0, (start, chains.step_size)
    with pytest.raises(ValueError, match="sampler"):
        samplers.PersistentChains(batch, torch.Generator(), seed=0, kind="hmc")
