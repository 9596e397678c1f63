"""The fused variational step (``vb_update``) against its twin, an independent KL, a quasi-Newton solve of
the same prior objectives and opcheck; bad input; the whole ``solver='bayes'`` fit through the op against the
same fit through the twin."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import gammaln

from deem import DEEM
from deem import _reference as R
from deem import ops
from deem.datasets import dawid_skene, labeling_functions

needs_ext = pytest.mark.skipif(not ops.HAS_EXTENSION, reason=f"deem._C not built: {ops.IMPORT_ERROR!r}")
LO, HI = 1e-3, 1e3


def case(K=4, D=60, informative=False, seed=0, prior=(2.0, 1.0, 0.5, 0.5)):
    """Expected counts spanning zero, tiny and large values (every branch of the special functions)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.0, 1e-4, 0.3, 3.0, 40.0, 2e4, 1e7], dtype=torch.float64)
    counts = torch.rand(K, K, D, generator=g, dtype=torch.float64) * scale[torch.randint(0, 7, (1, K, D), generator=g)]
    mass = counts.sum(dim=(0, 2)) * 1.3 + 2.0
    log_prior = torch.tensor([math.log(x) for x in prior[:4 if informative else 2]], dtype=torch.float64)
    modelled = ((torch.rand(D, generator=g) > 0.3).double() if informative else torch.empty(0, dtype=torch.float64))
    return counts, mass, log_prior, modelled


def run_op(counts, mass, log_prior, modelled, learn=True, want_kl=True, class_prior=1.0, device="cpu"):
    """The op on ``device``, its outputs brought back to the CPU."""
    args = (t.to(device) for t in (counts, mass, log_prior, modelled))
    return tuple(t.cpu() for t in torch.ops.deem.vb_update(*args, class_prior, LO, HI, learn, want_kl))


def run_twin(counts, mass, log_prior, modelled, learn=True, want_kl=True, class_prior=1.0):
    return R.vb_update(counts, mass, log_prior, modelled, class_prior, LO, HI, learn, want_kl)


def assert_outputs_close(a, b, counts=None, mass=None):
    """Every output to float64 rounding; the KL, a sum of lgamma terms of the size of c log c that cancel, to
    rounding of those terms."""
    names = ("elog_p", "elog_pi", "elog_abstain", "log_prior")
    for name, x, y in zip(names, a[:4], b[:4]):
        assert x.shape == y.shape, name
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12, msg=name)
    if math.isnan(float(b[4])):
        assert math.isnan(float(a[4]))
    else:
        c_log_c = lambda t: float(((t + 1) * torch.log(t + 2)).sum())  # noqa: E731
        scale = (0.0 if counts is None else c_log_c(counts)) + (
            0.0 if mass is None else c_log_c(mass) * (1 if counts is None else counts.shape[2]))
        assert float(a[4]) == pytest.approx(float(b[4]), rel=1e-11, abs=1e-13 * scale + 1e-9)


@needs_ext
@pytest.mark.parametrize("informative", [False, True])
@pytest.mark.parametrize("K,D", [(1, 5), (2, 7), (3, 400), (4, 825), (7, 30)])
@pytest.mark.parametrize("learn,want_kl", [(True, True), (False, True), (True, False)])
def test_op_matches_twin(device, informative, K, D, learn, want_kl):
    args = case(K, D, informative, seed=K * 100 + D)
    assert_outputs_close(run_op(*args, learn=learn, want_kl=want_kl, device=device),
                         run_twin(*args, learn=learn, want_kl=want_kl),
                         *args[:2])


@needs_ext
def test_no_voters_and_no_modelled_voter(device):
    assert_outputs_close(run_op(*case(3, 0), device=device), run_twin(*case(3, 0)))
    counts, mass, log_prior, modelled = case(3, 20, informative=True)
    out = run_op(counts, mass, log_prior, torch.zeros_like(modelled), device=device)
    assert_outputs_close(out, run_twin(counts, mass, log_prior, torch.zeros_like(modelled)), counts, mass)
    assert torch.equal(out[3][2:], log_prior[2:])  # no modelled voter: the rates' prior is not learned
    assert not out[2].any()


@needs_ext
def test_learn_false_keeps_the_prior_bitwise_and_kl_is_nan_when_not_asked():
    args = case(3, 50, informative=True)
    out = run_op(*args, learn=False, want_kl=False)
    assert torch.equal(out[3], args[2])
    assert math.isnan(float(out[4]))


@needs_ext
def test_kl_against_torch_distributions():
    """The bound's KL at the new prior, from torch.distributions (independent of both implementations)."""
    from torch.distributions import Beta, Dirichlet, kl_divergence

    counts, mass, log_prior, modelled = case(3, 40, informative=True, seed=5)
    counts = counts.clamp(max=50.0)
    mass = counts.sum(dim=(0, 2)) * 1.3 + 2.0
    _, _, _, log_new, kl = run_op(counts, mass, log_prior, modelled)
    x, new = log_prior.exp(), log_new.exp()
    k = counts.shape[0]
    post = (counts + (x[1] + x[0] * torch.eye(k, dtype=torch.float64)).unsqueeze(-1)).permute(2, 1, 0)  # (D, m, l)
    prior = (new[1] + new[0] * torch.eye(k, dtype=torch.float64)).t().expand_as(post)
    expected = kl_divergence(Dirichlet(post), Dirichlet(prior)).sum()
    expected += kl_divergence(Dirichlet(mass + 1.0), Dirichlet(torch.ones_like(mass)))
    present = counts.sum(dim=0)  # (m, D)
    vote, abstain = present + x[2], (mass.unsqueeze(1) - present).clamp(min=0) + x[3]
    keep = modelled > 0
    expected += kl_divergence(Beta(vote[:, keep], abstain[:, keep]),
                              Beta(new[2].expand(k, int(keep.sum())), new[3].expand(k, int(keep.sum())))).sum()
    assert float(kl) == pytest.approx(float(expected), rel=1e-10)


def _lbfgs(value_grad, start):
    """The solve the Newton one replaced: L-BFGS-B in log space within the bounds."""
    lo, hi = math.log(LO), math.log(HI)

    def negative(z):
        v, g = value_grad(np.exp(z))
        return -v, -g * np.exp(z)

    x0 = np.clip(np.log(start), lo, hi)
    return np.exp(minimize(negative, x0, jac=True, method="L-BFGS-B", bounds=[(lo, hi)] * 2).x)


@needs_ext
@pytest.mark.parametrize("seed", range(6))
def test_learned_priors_are_at_least_as_good_as_a_quasi_newton_solve(seed):
    from scipy.special import digamma

    counts, mass, log_prior, modelled = case(int(3 + seed % 3), 300, informative=True, seed=seed)
    counts = counts.clamp(max=1e3)
    mass = counts.sum(dim=(0, 2)) * 1.3 + 2.0
    _, _, elog_abstain, log_new, _ = run_op(counts, mass, log_prior, modelled)
    twin_e = R.vb_update(counts, mass, log_prior, modelled, 1.0, LO, HI, False, False)
    x = log_prior.exp().numpy()
    k, d = counts.shape[0], counts.shape[2]
    post = counts.numpy() + (x[1] + x[0] * np.eye(k))[:, :, None]
    E = (digamma(post) - digamma(post.sum(axis=0, keepdims=True))).sum(axis=2)

    def conf(p):
        alpha = p[1] + p[0] * np.eye(k)
        v = d * (gammaln(alpha.sum(axis=0)).sum() - gammaln(alpha).sum()) + ((alpha - 1) * E).sum()
        ga = d * (digamma(alpha.sum(axis=0))[None, :] - digamma(alpha)) + E
        return v, np.array([np.trace(ga), ga.sum()])

    new = log_new.exp().numpy()
    assert conf(new[:2])[0] >= conf(_lbfgs(conf, x[:2]))[0] - 1e-9 * abs(conf(new[:2])[0])
    # the rates: the sums of E[log f], E[log (1 - f)] over the modelled columns
    rate_logs = twin_e[2]  # w * E[log(1 - f)] (D, K)
    e1 = float(rate_logs.sum())
    present = counts.sum(dim=0).numpy()
    vote = present + x[2]
    abstain = np.clip(mass.numpy()[:, None] - present, 0, None) + x[3]
    w = modelled.numpy()[None, :]
    e0 = float(((digamma(vote) - digamma(vote + abstain)) * w).sum())
    n = float(w.sum()) * k

    def rate(p):
        v = n * (gammaln(p.sum()) - gammaln(p).sum()) + (p[0] - 1) * e0 + (p[1] - 1) * e1
        return v, n * (digamma(p.sum()) - digamma(p)) + np.array([e0, e1])

    assert rate(new[2:])[0] >= rate(_lbfgs(rate, x[2:]))[0] - 1e-9 * abs(rate(new[2:])[0])


@needs_ext
def test_the_prior_can_end_on_a_bound(device):
    """A crowd whose voters abstain almost always: the Beta prior's abstain count runs to the upper bound."""
    counts, mass, log_prior, modelled = case(2, 50, informative=True, seed=1)
    counts = counts.clamp(max=1e-3)
    mass = torch.full_like(mass, 1e6)
    out = run_op(counts, mass, log_prior, torch.ones_like(modelled), device=device)
    assert float(out[3][3].exp()) == pytest.approx(HI, rel=1e-12)
    assert_outputs_close(out, run_twin(counts, mass, log_prior, torch.ones_like(modelled)), counts, mass)


@needs_ext
def test_deterministic_for_any_thread_count():
    args = case(3, 5000, informative=True, seed=2)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_op(*args)
        torch.set_num_threads(max(2, old))
        many = run_op(*args)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(one, many):
        assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all())


@needs_ext
def test_opcheck(device):
    for informative in (False, True):
        args = tuple(t.to(device) for t in case(3, 20, informative))
        torch.library.opcheck(torch.ops.deem.vb_update.default, (*args, 1.0, LO, HI, True, True))


@pytest.mark.parametrize("impl", ["op", "twin"])
def test_bad_input_raises(device, impl):
    if impl == "op" and not ops.HAS_EXTENSION:
        pytest.skip("deem._C not built")
    if impl == "twin" and device != "cpu":
        pytest.skip("the twin is the CPU oracle")
    call = (lambda *a, **k: run_op(*a, device=device, **k)) if impl == "op" else run_twin
    counts, mass, log_prior, modelled = case(3, 10, informative=True)
    bad = [
        ((counts[:, :2], mass, log_prior, modelled), "counts"),
        ((counts, mass[:2], log_prior, modelled), "mass"),
        ((counts, mass, log_prior[:3], modelled), "log_prior"),
        ((counts, mass, log_prior, modelled[:4]), "modelled"),
        ((counts.float(), mass, log_prior, modelled), "float64"),
        ((counts, mass, log_prior, modelled * 0.5), "0 or 1"),
    ]
    for args, words in bad:
        with pytest.raises(RuntimeError, match=words):
            call(*args)
    with pytest.raises(RuntimeError, match="class_prior"):
        call(counts, mass, log_prior, modelled, class_prior=0.0)


@needs_ext
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("kind", ["crowd", "labeling_functions"])
def test_bayes_fit_through_the_op_equals_the_fit_through_the_twin(layout, kind):
    if kind == "crowd":
        X, _ = dawid_skene(n_samples=600, n_classifiers=12, n_classes=3, missing_rate=0.6, random_state=3)
        missing = "auto"
    else:
        X, _ = labeling_functions(n_samples=800, n_voters=10, n_classes=2, random_state=1)
        missing = "informative"
    fit = lambda: DEEM(solver="bayes", missing=missing, layout=layout, random_state=0).fit(X)  # noqa: E731
    with_op = fit()
    with ops.use_reference():
        with_twin = fit()
    np.testing.assert_allclose(with_op.predict_proba(X), with_twin.predict_proba(X), atol=1e-9)
    assert with_op.variational_prior_ == pytest.approx(with_twin.variational_prior_, rel=1e-9)
