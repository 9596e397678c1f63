"""Bad input raises a clear ValueError/TypeError before any kernel runs."""
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from deem import DEEM
from deem._validation import check_labels
from deem.datasets import dawid_skene

X, _ = dawid_skene(n_samples=200, n_classifiers=6, n_classes=3, random_state=1)


@pytest.fixture(scope="module")
def fitted():
    return DEEM(n_classes=3, epochs=1, cd_k=1, sampler_steps=1, random_state=0, device="cpu").fit(X)


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (np.zeros(5, dtype=int), ValueError, "2-D"),
        (np.zeros((2, 3, 4, 5)), ValueError, "2-D"),
        (np.zeros((0, 4), dtype=int), ValueError, "empty"),
        (np.array([[0, 1], [1, np.nan]]), ValueError, "NaN"),
        (np.array([[0, 1], [1, np.inf]]), ValueError, "NaN or infinite"),
        (np.array([[0, 1], [1, 3]]), ValueError, "n_classes=3"),
        (np.array([[0, 1], [1, -2]]), ValueError, "-2"),
        (np.array([[0, 1], [1, 0.5]]), ValueError, "non-integer"),
        (np.array([["a", "b"], ["b", "a"]]), TypeError, "numeric"),
        (np.array([[True, False]]), TypeError, "booleans"),
        ([[0, 1], [1]], ValueError, "rectangular"),
        (-np.ones((4, 3), dtype=int), ValueError, "missing"),
    ],
)
def test_bad_fit_input(bad, error, words):
    with pytest.raises(error, match=words):
        DEEM(n_classes=3 if "n_classes" in words else None, epochs=1, device="cpu").fit(bad)


def test_bad_soft_labels():
    soft = np.full((4, 3, 2), 1 / 3)
    with pytest.raises(ValueError, match="negative"):
        DEEM(epochs=1, device="cpu").fit(np.concatenate([soft[:, :2] + 0.2, -0.4 + soft[:, 2:] * 0], axis=1))
    with pytest.raises(ValueError, match="sum to 1"):
        DEEM(epochs=1, device="cpu").fit(soft * 1.5)
    with pytest.raises(ValueError, match="n_classes=4"):
        DEEM(n_classes=4, epochs=1, device="cpu").fit(soft)
    with pytest.raises(ValueError, match="NaN"):
        bad = soft.copy()
        bad[0, 0, 0] = np.nan
        DEEM(epochs=1, device="cpu").fit(bad)


def test_predict_checks_against_the_fit(fitted):
    with pytest.raises(ValueError, match="6"):
        fitted.predict(X[:, :5])
    with pytest.raises(ValueError, match="n_classes=3"):
        fitted.predict(np.full((2, 6), 3))
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(np.where(X == 0, np.nan, X))
    with pytest.raises(ValueError, match="classifiers"):
        fitted.predict(X, align_to=np.zeros((3, 5), dtype=int))


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        DEEM().predict(X)
    with pytest.raises(NotFittedError):
        DEEM().save("never.pt")


@pytest.mark.parametrize(
    "params, words",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=-1), "batch_size"),
        (dict(learning_rate=0), "learning_rate"),
        (dict(momentum=1.5), "momentum"),
        (dict(init_method="zeros"), "init_method"),
        (dict(solver="magic"), "solver"),
        (dict(device="tpu"), "device"),
        (dict(n_classes=1), "n_classes"),
        (dict(hidden_dim=0), "hidden_dim"),
    ],
)
def test_bad_hyperparameters(params, words):
    with pytest.raises(ValueError, match=words):
        DEEM(**params).fit(X)


def test_score_checks_truth(fitted):
    with pytest.raises(ValueError, match="rows"):
        fitted.score(X, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="no known label"):
        fitted.score(X, -np.ones(len(X), dtype=int))


def test_soft_all_zero_columns_are_missing_entries():
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(3), size=(60, 4)).transpose(0, 2, 1)
    soft[:10, :, 1] = 0.0      # classifier 1 gave no label on rows 0..9
    soft[10:12] = 0.0          # rows 10, 11: nobody labelled them
    data = check_labels(soft)
    assert torch.equal(data.values[:10, :, 1], torch.zeros(10, 3))
    model = DEEM(solver="gwg", epochs=2, device="cpu", random_state=0).fit(soft)
    assert model.n_dropped_rows_ == 2
    # a missing column changes nothing but that classifier's evidence: the same as leaving it out
    one = soft[:1].copy()
    assert model.predict_proba(one).shape == (1, 3)
