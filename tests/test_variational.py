"""solver='bayes': variational Bayes with an empirical-Bayes prior (deem.solvers.bayes)."""
import numpy as np
import pytest
import torch
from scipy.special import digamma

from deem import DEEM
from deem._validation import check_labels
from deem.datasets import dawid_skene
from deem.rbm import RBM
from deem.solvers.bayes import PRIOR_START, learn_prior, train_variational


def numpy_vb(X, k, diag, off, a_pi=1.0, iters=3000):
    """Textbook mean-field VB of the Dawid–Skene model with a fixed Dir(off + diag e_m) prior (oracle)."""
    n, d = X.shape
    votes = np.zeros((n, k))
    for i in range(d):
        ok = X[:, i] >= 0
        np.add.at(votes, (np.flatnonzero(ok), X[ok, i]), 1)
    q = votes / votes.sum(axis=1, keepdims=True)
    prior = off + diag * np.eye(k)  # (K_l, K_m)
    for _ in range(iters):
        counts = np.zeros((k, k, d))
        for i in range(d):
            ok = X[:, i] >= 0
            np.add.at(counts[:, :, i], X[ok, i], q[ok])
        post = counts + prior[:, :, None]
        elog = digamma(post) - digamma(post.sum(axis=0, keepdims=True))
        post_pi = q.sum(axis=0) + a_pi
        scores = np.tile(digamma(post_pi) - digamma(post_pi.sum()), (n, 1))
        for i in range(d):
            ok = X[:, i] >= 0
            scores[ok] += elog[X[ok, i], :, i]
        scores -= scores.max(axis=1, keepdims=True)
        new = np.exp(scores)
        new /= new.sum(axis=1, keepdims=True)
        if np.abs(new - q).max() < 1e-12:
            q = new
            break
        q = new
    return q


@pytest.fixture(scope="module")
def crowd():
    return dawid_skene(n_samples=600, n_classifiers=8, n_classes=3, accuracy=(0.4, 0.8), missing_rate=0.4,
                       random_state=2)


def test_fixed_prior_fit_matches_a_textbook_implementation(crowd):
    X, _ = crowd
    data = check_labels(X, n_classes=3)
    rbm = RBM(8, 3, 1, device="cpu", dtype=torch.float64)
    train_variational(rbm, data, learn=False, tol=1e-12, max_iter=5000)
    with torch.no_grad():
        ours = rbm.hidden_probs(data)[:, 0, :].numpy()
    expected = numpy_vb(X, 3, *PRIOR_START)  # both start from the majority vote: same state order
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_learn_prior_recovers_the_dirichlet_that_generated_the_confusions():
    rng = np.random.default_rng(0)
    k, d, diag, off = 3, 4000, 6.0, 0.7
    alpha = off + diag * np.eye(k)
    logs = np.zeros((k, k))
    for m in range(k):
        logs[:, m] = np.log(rng.dirichlet(alpha[:, m], size=d)).sum(axis=0)
    est_diag, est_off = learn_prior(logs, d, (1.0, 1.0))
    assert est_diag == pytest.approx(diag, rel=0.1)
    assert est_off == pytest.approx(off, rel=0.1)


def test_the_prior_solves_reach_the_bounded_maximum_from_any_start():
    """Inside the bounds or on their edge, the learned priors are never below the objective a grid over the
    log-bounds reaches, from any start."""
    from scipy.special import betaln, gammaln

    from deem.solvers.bayes import PRIOR_BOUNDS, learn_rate_prior

    grid = np.exp(np.linspace(np.log(PRIOR_BOUNDS[0]), np.log(PRIOR_BOUNDS[1]), 241))
    rng = np.random.default_rng(3)
    for case in range(12):
        k, d = int(rng.integers(2, 6)), int(rng.integers(5, 800))
        peak = np.full(k, float(rng.uniform(0.05, 3.0))) + float(rng.uniform(0.0, 30.0)) * np.eye(k)
        logs = np.stack([np.log(rng.dirichlet(peak[:, m], size=d) + 1e-300).sum(axis=0) for m in range(k)], axis=1)

        def value(diag, off):
            alpha = off + diag * np.eye(k)
            return d * (gammaln(alpha.sum(axis=0)).sum() - gammaln(alpha).sum()) + ((alpha - 1) * logs).sum()

        best = max(value(a, b) for a in grid[::4] for b in grid[::4])
        for start in ((2.0, 1.0), (1e-2, 50.0), (500.0, 0.01)):
            got = value(*learn_prior(logs, d, start))
            assert got >= best - 1e-6 * abs(best), (case, start)
        f = rng.beta(float(rng.uniform(0.1, 5)), float(rng.uniform(0.1, 50)), size=d * k)
        e_vote, e_abstain = np.log(f).sum(), np.log1p(-f).sum()
        rate_value = lambda a, b: -d * k * betaln(a, b) + (a - 1) * e_vote + (b - 1) * e_abstain  # noqa: E731
        best = max(rate_value(a, b) for a in grid[::4] for b in grid[::4])
        assert rate_value(*learn_rate_prior(e_vote, e_abstain, d * k, (0.5, 0.5))) >= best - 1e-6 * abs(best)


def test_bound_never_goes_down_and_prior_follows_the_crowd():
    good, y_good = dawid_skene(n_samples=1500, n_classifiers=10, n_classes=3, accuracy=(0.85, 0.95),
                               missing_rate=0.3, random_state=4)
    weak, _ = dawid_skene(n_samples=1500, n_classifiers=10, n_classes=3, accuracy=(0.38, 0.5), missing_rate=0.3,
                          random_state=4)
    fit_good = DEEM(random_state=0).fit(good)
    fit_weak = DEEM(random_state=0).fit(weak)
    for model in (fit_good, fit_weak):
        history = np.asarray(model.history_["loss"])
        assert model.solver_ == "bayes" and len(history) >= 2
        assert np.all(np.diff(history) <= 1e-9 * abs(history[0]))  # negative bound: non-increasing
    # a crowd of accurate classifiers teaches a prior that leans much harder on the diagonal
    ratio = {name: m.variational_prior_["diag"] / m.variational_prior_["off"]
             for name, m in (("good", fit_good), ("weak", fit_weak))}
    assert ratio["good"] > 3 * ratio["weak"]
    assert fit_good.score(good, y_good) > 0.98


def test_sparse_classifier_counts_for_less_than_a_prolific_one_with_the_same_rates():
    # Two classifiers with identical error rates on the rows they label; one labels 4% of the rows.
    rng = np.random.default_rng(1)
    n, k = 3000, 2
    y = rng.integers(0, k, n)
    X = np.full((n, 8), -1)
    for i in range(6):  # a background crowd of decent classifiers
        X[:, i] = np.where(rng.random(n) < 0.75, y, 1 - y)
    for i, share in ((6, 1.0), (7, 0.04)):
        rows = rng.random(n) < share
        X[rows, i] = np.where(rng.random(rows.sum()) < 0.9, y[rows], 1 - y[rows])
    model = DEEM(random_state=0).fit(X)
    W = model.model_.W[..., 0].detach().double().numpy()  # (K_l, K_m, D): E[log P_i(l | m)]
    log_odds = W[0, 0] - W[1, 0]  # evidence for class 0 from label 0, per classifier
    assert log_odds[6] > log_odds[7] > 0


def test_bayes_rejects_soft_labels_and_several_hidden_units(crowd):
    X, _ = crowd
    soft = np.eye(3)[np.where(X >= 0, X, 0)].transpose(0, 2, 1) * (X >= 0)[:, None, :]
    with pytest.raises(ValueError, match="hard labels"):
        DEEM(solver="bayes").fit(soft)
    with pytest.raises(ValueError, match="hidden_dim=1"):
        DEEM(solver="bayes", hidden_dim=2).fit(X)


def test_save_load_keeps_the_variational_fit(crowd, tmp_path):
    X, _ = crowd
    model = DEEM(random_state=0).fit(X)
    model.save(tmp_path / "m.deem")
    loaded = DEEM().load(tmp_path / "m.deem")
    assert loaded.solver_ == "bayes" and loaded.variational_prior_ == model.variational_prior_
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.confusion_, model.confusion_)


def test_confusion_is_normalized_and_close_to_the_truth():
    X, y = dawid_skene(n_samples=4000, n_classifiers=6, n_classes=3, accuracy=(0.6, 0.9), missing_rate=0.2,
                       random_state=9)
    model = DEEM(random_state=0).fit(X)
    conf = model.confusion_
    np.testing.assert_allclose(conf.sum(axis=2), 1.0, atol=1e-6)
    empirical = np.zeros_like(conf)
    for i in range(6):
        ok = X[:, i] >= 0
        np.add.at(empirical[i], (y[ok], X[ok, i]), 1)
    empirical /= empirical.sum(axis=2, keepdims=True)
    assert np.abs(conf - empirical).max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_fit_matches_the_cpu_fit(crowd):
    X, _ = crowd
    reference = DEEM(device="cpu").fit(X)
    model = DEEM(device="cuda").fit(X)
    assert model.solver_ == "bayes"
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-5)
    assert model.variational_prior_["diag"] == pytest.approx(reference.variational_prior_["diag"], rel=1e-6)
