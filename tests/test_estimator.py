"""The DEEM estimator end to end: accuracy, outputs, alignment, reproducibility, sklearn API."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from deem import DEEM, ops
from deem._validation import check_labels
from deem.alignment import agreement_with, hungarian_map, majority_vote
from deem.datasets import dawid_skene


def small(**kw):
    base = dict(solver="gwg", epochs=3, batch_size=64, cd_k=2, sampler_steps=2, random_state=0, device="cpu")
    base.update(kw)
    return DEEM(**base)


@pytest.fixture(scope="module")
def crowd():
    return dawid_skene(n_samples=1500, n_classifiers=12, n_classes=3, missing_rate=0.4, random_state=3)


def mv_accuracy(X, y):
    return float(np.mean(majority_vote(check_labels(X)).numpy() == y))


@pytest.mark.parametrize("solver", ["gwg", "dlp", "exact"])
def test_beats_majority_vote_on_dawid_skene_with_missing(device, crowd, solver):
    X, y = crowd
    model = DEEM(n_classes=3, solver=solver, epochs=20, random_state=0, device=device).fit(X)
    assert model.solver_ == solver
    acc = float(np.mean(model.predict(X) == y))
    assert acc >= mv_accuracy(X, y)
    assert acc == pytest.approx(model.score(X, y))


def test_auto_solver():
    X, _ = dawid_skene(n_samples=200, n_classifiers=5, n_classes=3, random_state=0)
    assert DEEM(random_state=0).fit(X).solver_ == "bayes"  # hard labels: variational Bayes
    soft = np.eye(3)[np.where(X >= 0, X, 0)].transpose(0, 2, 1) * (X >= 0)[:, None, :]
    assert DEEM(random_state=0).fit(soft).solver_ == "exact"  # soft labels: virtual-evidence EM
    assert DEEM(hidden_dim=2, epochs=1, cd_k=1, sampler_steps=1, random_state=0).fit(X).solver_ == "gwg"


def test_fitted_attributes(crowd):
    X, _ = crowd
    model = small().fit(X)
    assert model.is_fitted_ and model.n_classes_ == 3 and model.n_classifiers_ == 12
    assert model.n_features_in_ == 12
    assert isinstance(model.model_, torch.nn.Module)
    assert model.model_.W.shape == (3, 3, 12, 1)
    assert len(model.history_["loss"]) == 3 and all(np.isfinite(model.history_["loss"]))
    assert sorted(model.get_class_mapping().values()) == [0, 1, 2]


def test_probabilities_are_consistent_with_labels(crowd):
    X, _ = crowd
    model = small().fit(X)
    labels = model.predict(X)
    probs = model.predict(X, return_probs=True)  # deem 0.2.0: the probabilities themselves
    np.testing.assert_array_equal(probs, model.predict_proba(X))
    assert probs.shape == (len(X), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), labels)
    np.testing.assert_allclose(model.predict_proba(X), probs)


def test_alignment_is_cached_reset_and_recomputed(crowd):
    X, y = crowd
    model = small(init_method="rand", use_weighted=False).fit(X)
    aligned = model.predict(X)
    mapping = model.class_map_.copy()
    model.reset_class_mapping()
    assert model.get_class_mapping() is None
    raw = model.predict(X)  # hidden-state order
    np.testing.assert_array_equal(mapping[raw], aligned)
    realigned = model.predict(X[:500], align_to=X)
    np.testing.assert_array_equal(model.class_map_, mapping)
    np.testing.assert_array_equal(realigned, aligned[:500])
    # The aligned labels agree with the majority vote at least as well as any other permutation.
    mv = majority_vote(check_labels(X)).numpy()
    assert np.mean(aligned == mv) >= np.mean(raw == mv)


def test_score_realigns_after_reset_and_skips_unknown_truth(crowd):
    X, y = crowd
    model = small().fit(X)
    truth = y.copy()
    truth[::2] = -1
    expected = float(np.mean(model.predict(X)[1::2] == y[1::2]))
    model.reset_class_mapping()
    assert model.score(X, truth) == pytest.approx(expected)
    assert model.class_map_ is not None


def test_hungarian_map_finds_the_permutation():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, 200)
    perm = np.array([2, 0, 3, 1])
    pred = np.argsort(perm)[ref]  # pred k means ref perm[k]
    np.testing.assert_array_equal(hungarian_map(pred, ref, 4), perm)


def test_majority_vote_and_agreement_ignore_missing():
    X = np.array([[0, 0, 1, -1], [1, -1, 1, 2], [-1, -1, -1, 2], [-1, -1, -1, -1]])
    data = check_labels(X, n_classes=3)
    np.testing.assert_array_equal(majority_vote(data).numpy(), [0, 1, 2, -1])
    agree = agreement_with(data, majority_vote(data)).numpy()
    # classifier 0: rows 0,1 -> 2/2; classifier 1: row 0 -> 1/1; classifier 2: rows 0,1 -> 1/2; classifier 3: rows 1,2 -> 1/2
    np.testing.assert_allclose(agree, [1.0, 1.0, 0.5, 0.5])


def test_weighted_initialization_scales_by_agreement():
    X = np.array([[0, 0, 1], [1, 1, 1], [2, 2, 0], [0, 0, -1]] * 10)
    data = check_labels(X, n_classes=3)
    from deem.rbm import RBM
    from deem.solvers.init import MV_DIAGONAL, initialize

    rbm = RBM(3, 3)
    initialize(rbm, data, "mv", True, torch.Generator().manual_seed(0))
    agree = agreement_with(data, majority_vote(data))
    np.testing.assert_allclose(rbm.W[1, 1, :, 0].detach().numpy(), MV_DIAGONAL * agree.numpy(), rtol=1e-6)
    initialize(rbm, data, "mv", False, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(rbm.W[1, 1, :, 0].detach().numpy(), MV_DIAGONAL)


@pytest.mark.parametrize("method", ["mv", "mv_rand", "mv_lo", "rand"])
def test_init_methods_train(method, crowd):
    X, y = crowd
    if method == "rand":  # starts from nothing: needs a real learning rate to get anywhere
        model = small(init_method=method, learning_rate=0.05, epochs=5).fit(X)
    else:
        model = small(init_method=method).fit(X)
    acc = float(np.mean(model.predict(X) == y))
    assert acc > (0.5 if method == "rand" else mv_accuracy(X, y) - 0.05)


def test_gauge_is_fixed_with_one_hidden_unit(crowd):
    X, _ = crowd
    model = small(init_method="mv", use_weighted=False, learning_rate=0.05).fit(X)
    rbm = model.model_
    from deem.solvers.init import MV_DIAGONAL

    assert torch.all(rbm.W[0, 0] == MV_DIAGONAL)
    assert torch.all(rbm.W[0, 1:] == 0) and torch.all(rbm.W[1:, 0] == 0)
    assert torch.all(rbm.b_v[:, 0] == 0) and torch.all(rbm.b_h[:, 0] == 0)
    assert torch.any(rbm.W[1:, 1:] != MV_DIAGONAL * torch.eye(3)[1:, 1:, None, None])
    assert torch.any(rbm.b_v[:, 1:] != 0)


def test_more_hidden_units_train_everything(crowd):
    X, y = crowd
    model = small(hidden_dim=2, learning_rate=0.05).fit(X)
    assert model.model_.W.shape == (3, 3, 12, 2)
    assert torch.any(model.model_.b_h[:, 0] != 0)
    assert np.mean(model.predict(X) == y) > 0.5


def test_stochastic_hidden_units(crowd):
    X, y = crowd
    model = small(deterministic=False).fit(X)
    assert np.mean(model.predict(X) == y) >= mv_accuracy(X, y) - 0.05


def test_reproducible_with_random_state(crowd):
    X, _ = crowd
    a = small(random_state=7, learning_rate=0.05).fit(X)
    b = small(random_state=7, learning_rate=0.05).fit(X)
    c = small(random_state=8, learning_rate=0.05).fit(X)
    assert a.history_ == b.history_
    torch.testing.assert_close(a.model_.W, b.model_.W, rtol=0, atol=0)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.history_ != c.history_


def test_soft_labels_are_detected(crowd):
    X, y = crowd
    rng = np.random.default_rng(0)
    hard = np.where(X < 0, rng.integers(0, 3, X.shape), X)
    soft = np.eye(3)[hard] * 0.7 + 0.1  # (N, D, K), each row sums to 1
    soft = soft.transpose(0, 2, 1)
    model = small().fit(soft)
    assert model.n_classes_ == 3 and model.soft_labels_
    pred = model.predict(soft)
    assert pred.shape == (len(X),) and np.mean(pred == y) > 0.6
    # rows that are close to 1 are renormalized, not rejected
    model.predict(soft * 1.004)


def test_all_missing_rows(crowd):
    X, _ = crowd
    X = X.copy()
    X[:10] = -1
    model = small().fit(X)
    assert model.n_dropped_rows_ == 10
    pred = model.predict(X[:12])
    prior = model.class_map_[int(model.model_.b_h[0].argmax())]
    assert np.all(pred[:10] == prior)


def test_input_types_agree(crowd):
    X, _ = crowd
    model = small().fit(X)
    ref = model.predict(X)
    np.testing.assert_array_equal(model.predict(X.tolist()), ref)
    np.testing.assert_array_equal(model.predict(pd.DataFrame(X)), ref)
    out = model.predict(torch.from_numpy(X))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), ref)
    np.testing.assert_array_equal(model.predict(X.astype(np.float64)), ref)


def test_clone_and_params():
    model = DEEM(n_classes=4, epochs=7, learning_rate=0.1)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    twin.set_params(epochs=3)
    assert twin.epochs == 3 and model.epochs == 7
    with pytest.raises(ValueError):
        twin.set_params(not_a_parameter=1)


def test_verbose_shows_progress(crowd, capsys):
    X, _ = crowd
    small().fit(X, verbose=True)
    assert "DEEM fit" in capsys.readouterr().err


@pytest.mark.parametrize("solver", ["gwg", "dlp"])
def test_fit_goes_through_the_fused_ops(crowd, monkeypatch, solver):
    X, _ = crowd
    calls = {}
    for name in ("gwg_steps", "dlp_steps", "cd_grad", "hidden_probs"):
        original = getattr(ops, name)

        def counted(*a, _name=name, _f=original, **k):
            calls[_name] = calls.get(_name, 0) + 1
            return _f(*a, **k)

        monkeypatch.setattr(ops, name, counted)
    small(solver=solver).fit(X).predict(X)
    other = "dlp" if solver == "gwg" else "gwg"
    assert calls[f"{solver}_steps"] == calls["cd_grad"] > 0 and calls["hidden_probs"] > 0
    assert f"{other}_steps" not in calls
