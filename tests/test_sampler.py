"""The GWG sampler samples the right distribution.

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


def op_sampler(x, W, b_v, b_h, n, seed, offset):
    return torch.ops.deem.gwg_steps(x, W, b_v, b_h, n, seed, offset)


@needs_ext
@pytest.mark.parametrize("H,scale,seed", [(1, 1.0, 0), (2, 0.7, 1)])
def test_gwg_samples_the_model(device, H, scale, seed):
    W, b_v, b_h = params(H, scale, seed)
    p = exact(W, b_v, b_h)
    assert p.max() < 0.5  # a non-trivial target
    q, acc = empirical(op_sampler, W, b_v, b_h, seed=seed, device=device)
    assert tv(q, p) < TV_MAX, (tv(q, p), acc)
    assert 0.05 < acc < 0.99, acc  # a real Metropolis-Hastings correction


@needs_ext
def test_gwg_missing_coordinate_stays_missing_and_conditional_is_right(device):
    W, b_v, b_h = params(2, 0.8, 2)
    p = exact(W, b_v, b_h, missing=(2,))
    assert p.shape == (9,)
    q, acc = empirical(op_sampler, W, b_v, b_h, missing=(2,), seed=3, device=device)
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
