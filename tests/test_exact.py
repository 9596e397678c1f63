"""solver='exact': the exact likelihood of the one-hidden-unit model, and per-classifier reliability."""
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import spearmanr

from deem import DEEM
from deem._validation import check_labels
from deem.alignment import majority_vote
from deem.datasets import dawid_skene


@pytest.fixture(scope="module")
def crowd():
    return dawid_skene(n_samples=3000, n_classifiers=10, n_classes=3, missing_rate=0.3, random_state=11)


def empirical_confusion(X, y, k):
    d = X.shape[1]
    out = np.zeros((d, k, k))
    for i in range(d):
        for c in range(k):
            given = X[(y == c) & (X[:, i] >= 0), i]
            out[i, c] = np.bincount(given, minlength=k) / max(len(given), 1)
    return out


def test_free_energy_is_the_exact_negative_log_likelihood(device, crowd):
    X, _ = crowd
    model = DEEM(solver="exact", random_state=0, device=device).fit(X)
    conf = model.confusion_  # (D, c, l), aligned
    prior = np.exp(model.model_.b_h[0].detach().cpu().double().numpy())
    aligned_prior = np.empty_like(prior)
    aligned_prior[model.class_map_] = prior
    # log p(v_obs) by the Dawid-Skene formula, computed independently in numpy
    logp = np.log(aligned_prior)[None, :].repeat(len(X), 0)
    for i in range(X.shape[1]):
        seen = X[:, i] >= 0
        logp[seen] += np.log(conf[i][:, X[seen, i]]).T
    expected = -logsumexp(logp, axis=1)
    data = check_labels(X).to(model.device_)
    got = model.model_.free_energy(data).detach().cpu().double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert prior.sum() == pytest.approx(1, abs=1e-5)


def test_exact_beats_majority_vote_and_recovers_confusions(device, crowd):
    X, y = crowd
    model = DEEM(solver="exact", random_state=0, device=device).fit(X)
    acc = float(np.mean(model.predict(X) == y))
    mv = float(np.mean(majority_vote(check_labels(X)).numpy() == y))
    assert acc > mv + 0.02
    conf = model.confusion_
    assert conf.shape == (10, 3, 3)
    np.testing.assert_allclose(conf.sum(axis=2), 1, atol=1e-5)
    assert np.abs(conf - empirical_confusion(X, y, 3)).max() < 0.08
    true_skill = [np.mean(X[X[:, i] >= 0, i] == y[X[:, i] >= 0]) for i in range(10)]
    assert spearmanr(model.skill_, true_skill).correlation > 0.9
    # the loss goes down
    assert model.history_["loss"][-1] < model.history_["loss"][0]


def test_prior_pulls_sparse_workers_to_the_pool(crowd):
    X, y = crowd
    X = X.copy()
    X[50:, 0] = -1  # worker 0 labels only 50 items
    free = DEEM(solver="exact", prior_strength=0.0, random_state=0).fit(X).confusion_[0]
    shrunk = DEEM(solver="exact", prior_strength=20.0, random_state=0).fit(X)
    pooled = shrunk.confusion_[1:].mean(axis=0)
    assert np.abs(shrunk.confusion_[0] - pooled).sum() < np.abs(free - pooled).sum()


def test_exact_needs_one_hidden_unit():
    with pytest.raises(ValueError, match="hidden_dim=1"):
        DEEM(solver="exact", hidden_dim=2).fit(np.array([[0, 1], [1, 1]]))
    with pytest.raises(ValueError, match="prior_strength"):
        DEEM(solver="exact", prior_strength=-1).fit(np.array([[0, 1], [1, 1]]))


def test_confusion_of_gwg_model_is_a_distribution(crowd):
    X, _ = crowd
    model = DEEM(solver="gwg", epochs=2, cd_k=1, sampler_steps=2, random_state=0, device="cpu").fit(X)
    np.testing.assert_allclose(model.confusion_.sum(axis=2), 1, atol=1e-5)
    assert model.skill_.shape == (10,)


def test_soft_labels_with_the_sampler(crowd, capsys):
    # solver='exact'/'auto' take soft labels through the virtual-evidence model
    # (tests/test_soft_evidence.py); the sampler still takes them when asked.
    X, y = crowd
    rng = np.random.default_rng(0)
    hard = np.where(X < 0, rng.integers(0, 3, X.shape), X)
    soft = (np.eye(3)[hard] * 0.7 + 0.1).transpose(0, 2, 1)  # (N, K, D)
    model = DEEM(solver="gwg", epochs=2, random_state=0, verbose=True).fit(soft)
    assert model.solver_ == "gwg" and model.soft_labels_ and "DEEM fit" in capsys.readouterr().err
    assert np.mean(model.predict(soft) == y) > 0.8


def test_exact_verbose(crowd, capsys):
    X, _ = crowd
    DEEM(solver="exact", random_state=0, verbose=True).fit(X)
    assert "exact EM" in capsys.readouterr().err
    DEEM(random_state=0, verbose=True).fit(X)
    assert "variational Bayes" in capsys.readouterr().err


def _imbalanced_weak_ensemble(seed, n=300, d=14, minority=0.02):
    """Binary truth with ~2% minority class, symmetric classifiers of accuracy 0.6-0.78, a third missing."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 1 - minority).astype(np.int64)
    acc = rng.uniform(0.6, 0.78, d)
    X = np.where(rng.random((n, d)) < acc, y[:, None], 1 - y[:, None])
    missing = rng.random((n, d)) < 0.34
    missing[np.arange(n), rng.integers(0, d, n)] = False
    return np.where(missing, -1, X), y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_does_not_split_the_majority_class(seed):
    # Near-pure-noise label matrix (almost every row has the same class): without the
    # "classifiers beat chance" prior the MAP fit split the dominant class into two
    # near-balanced hidden states and fell far below majority vote.
    X, y = _imbalanced_weak_ensemble(seed)
    mv = float((majority_vote(check_labels(X)).numpy() == y).mean())
    model = DEEM(random_state=seed).fit(X)
    assert model.score(X, y) >= mv - 0.01
    assert (np.asarray(model.predict(X)) == 0).mean() < 0.2  # the minority class stays a minority


def test_diagonal_prior_in_m_step():
    import torch
    from deem.solvers import map_m_step

    rng = np.random.default_rng(0)
    counts = torch.tensor(rng.random((3, 3, 4)) * 5)
    mass = counts.sum(dim=(0, 2))
    base = map_m_step(counts, mass, 2.0)
    same = map_m_step(counts, mass, 2.0, diagonal_strength=0.0)
    for a, b in zip(base, same):
        assert torch.allclose(a, b)
    logp, logpi, _ = map_m_step(counts, mass, 2.0, diagonal_strength=3.0)
    assert torch.allclose(logp.exp().sum(dim=0), torch.ones(3, 4, dtype=torch.float64))
    assert (logp.diagonal(dim1=0, dim2=1) > base[0].diagonal(dim1=0, dim2=1)).all()
    assert torch.allclose(logpi, base[1])
