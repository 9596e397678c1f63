"""deem 0.2.0's call patterns: predict(return_probs=True), history_ as a dict, fit's per-call overrides and
the accuracy it watches when gold labels are given."""
import numpy as np
import pytest

from deem import DEEM
from deem.datasets import dawid_skene


@pytest.fixture(scope="module")
def crowd():
    X, y = dawid_skene(n_samples=600, n_classifiers=10, n_classes=3, accuracy=(0.5, 0.85), missing_rate=0.3,
                       random_state=1)
    return X, y


def test_predict_return_probs_gives_the_probabilities(crowd):
    X, _ = crowd
    model = DEEM(random_state=0).fit(X)
    probs = model.predict(X, return_probs=True)
    assert isinstance(probs, np.ndarray) and probs.shape == (len(X), 3)
    np.testing.assert_array_equal(probs, model.predict_proba(X))
    np.testing.assert_array_equal(probs.argmax(axis=1), model.predict(X))


@pytest.mark.parametrize("solver,key", [("exact", "mean_negative_log_likelihood"), ("bayes", "negative_elbo_per_row")])
def test_history_of_the_em_solvers_names_its_objective(crowd, solver, key):
    X, _ = crowd
    history = DEEM(solver=solver, random_state=0).fit(X).history_
    assert set(history) == {"loss", key} and history["loss"] == history[key] and len(history["loss"]) >= 2


def test_sampler_history_has_loss_and_lr_per_epoch(crowd):
    X, _ = crowd
    model = DEEM(solver="gwg", epochs=6, learning_rate=0.01, scheduler="cosine", random_state=0).fit(X)
    assert set(model.history_) == {"loss", "lr"}
    assert len(model.history_["loss"]) == len(model.history_["lr"]) == 6
    assert model.history_["lr"][0] == pytest.approx(0.01) and model.history_["lr"][-1] < 0.01  # cosine decays


def test_fit_overrides_apply_to_that_call_only(crowd):
    X, _ = crowd
    model = DEEM(solver="gwg", epochs=4, random_state=0)
    model.fit(X, epochs=3, learning_rate=0.02, batch_size=32)
    assert len(model.history_["loss"]) == 3 and model.history_["lr"][0] == pytest.approx(0.02)
    assert (model.hyperparameters_["epochs"], model.hyperparameters_["batch_size"]) == (3, 32)
    assert model.get_params()["epochs"] == 4  # the constructor's value is untouched
    model.fit(X)
    assert len(model.history_["loss"]) == 4
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        model.fit(X, epochs=0)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        model.fit(X, learning_rate=-1.0)


@pytest.mark.parametrize("solver", ["gwg", "bayes", "exact"])
def test_gold_labels_are_watched_not_used(crowd, solver):
    X, y = crowd
    kwargs = {"epochs": 5} if solver == "gwg" else {}
    unsupervised = DEEM(solver=solver, random_state=0, **kwargs).fit(X)
    watched = DEEM(solver=solver, random_state=0, **kwargs).fit(X[:400], labels=y[:400], val_predictions=X[400:],
                                                                 val_labels=y[400:])
    plain = DEEM(solver=solver, random_state=0, **kwargs).fit(X[:400])
    np.testing.assert_array_equal(watched.predict_proba(X), plain.predict_proba(X))  # the fit is the same
    h = watched.history_
    assert len(h["accuracy"]) == len(h["val_accuracy"]) == len(h["loss"])
    # the last watched value is the fitted model's accuracy (EM: within one step of the returned parameters)
    assert h["accuracy"][-1] == pytest.approx(watched.score(X[:400], y[:400]), abs=0.01)
    assert h["val_accuracy"][-1] == pytest.approx(watched.score(X[400:], y[400:]), abs=0.01)
    assert "accuracy" not in unsupervised.history_
    with pytest.raises(ValueError, match="val_predictions and val_labels together"):
        DEEM(solver=solver, random_state=0, **kwargs).fit(X, val_predictions=X)


def test_verbose_messages_go_through_the_deem_logger(crowd):
    import logging

    X, _ = crowd
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("deem")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    logger.handlers[:] = [Keep()]
    try:
        DEEM(solver="exact", random_state=0, verbose=True).fit(X)
        DEEM(solver="exact", random_state=0).fit(X)  # not verbose: nothing
    finally:
        logger.handlers[:], logger.propagate, _ = saved
        logger.setLevel(saved[2])
    messages = [r.getMessage() for r in records]
    assert all(r.levelno == logging.INFO for r in records) and "exact EM" in messages[-1]
    steps = [m for m in messages if "EM step" in m and "mean negative log-likelihood" in m]
    assert len(steps) >= 2 and len(messages) == len(steps) + 1  # progress per check, then the report; silent else


def test_watched_accuracy_on_soft_labels_is_the_fitted_posterior_s(crowd):
    """On soft labels solver='exact' predicts with the virtual-evidence posterior; the watched accuracy too."""
    X, y = crowd
    rng = np.random.default_rng(0)
    V = np.zeros((len(X), 3, X.shape[1]))
    rows, cols = np.nonzero(X >= 0)
    V[rows, X[rows, cols], cols] = 1.0
    V[rows, :, cols] = 0.6 * V[rows, :, cols] + 0.4 * rng.dirichlet(np.ones(3), size=len(rows))
    model = DEEM(solver="exact", random_state=0).fit(V, labels=y)
    assert model.history_["accuracy"][-1] == pytest.approx(model.score(V, y), abs=0.005)
