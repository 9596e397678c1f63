"""DEEM(auto_hyperparameters=True): predicted values, user overrides, verbose report, model_dir."""
import json

import numpy as np
import pytest

from deem import DEEM
from deem.autotune import bundled_path
from deem.datasets import dawid_skene

X, Y = dawid_skene(n_samples=500, n_classifiers=10, n_classes=3, missing_rate=0.3, random_state=4)

FORCED = {
    "solver": "gwg", "epochs": 3, "batch_size": 64, "learning_rate": 0.02, "momentum": 0.5,
    "init_method": "mv_lo", "scheduler": "cosine", "use_preprocessing": True, "preprocessing_layers": 2,
    "preprocessing_activation": "entmax", "prior_strength": 1.0,
}


@pytest.fixture
def forced_bundle(tmp_path):
    """A predictor bundle whose every candidate is FORCED: its prediction is known in advance."""
    bundle = json.loads(bundled_path().read_text())
    bundle["configs"] = [dict(FORCED) for _ in bundle["configs"]]
    folder = tmp_path / "predictor"
    folder.mkdir()
    (folder / "hyperparameters.json").write_text(json.dumps(bundle))
    return folder


def test_defaults_are_replaced_by_predictions(forced_bundle):
    model = DEEM(auto_hyperparameters=True, model_dir=forced_bundle, random_state=0).fit(X)
    assert model.hyperparameters_ == FORCED
    assert model.solver_ == "gwg" and model.preprocessor_.widths == [10, 10]
    assert model.preprocessor_.layers[0].activation == "entmax"
    assert len(model.history_["loss"]) == 3
    assert model.get_params()["epochs"] == 100  # the estimator's own parameters are untouched


def test_explicit_values_override_predictions(forced_bundle):
    model = DEEM(auto_hyperparameters=True, model_dir=forced_bundle, epochs=2, use_preprocessing=False,
                 random_state=0).fit(X)
    assert model.hyperparameters_["epochs"] == 2 and len(model.history_["loss"]) == 2
    assert model.hyperparameters_["use_preprocessing"] is True  # False is the default: predicted
    # A solver you set restricts the candidates: none of the bundle's (all gwg) agrees with 'exact',
    # so nothing is predicted and the fit runs your configuration.
    model = DEEM(auto_hyperparameters=True, model_dir=forced_bundle, solver="exact", random_state=0).fit(X)
    assert model.solver_ == "exact" and model.hyperparameters_["use_preprocessing"] is False
    assert model.hyperparameters_["epochs"] == 100


def test_asking_for_the_sampler_tunes_the_sampler():
    Xb, yb = dawid_skene(n_samples=800, n_classifiers=12, n_classes=3, missing_rate=0.5, random_state=2)
    model = DEEM(auto_hyperparameters=True, solver="gwg", random_state=0).fit(Xb)
    assert model.solver_ == "gwg" and model.hyperparameters_["solver"] == "gwg"
    assert model.predicted_hyperparameters_["solver"] == "gwg"


def test_a_list_predicts_only_those_names(forced_bundle):
    model = DEEM(auto_hyperparameters=["epochs", "learning_rate"], model_dir=forced_bundle, solver="gwg",
                 random_state=0).fit(X)
    hp = model.hyperparameters_
    assert hp["epochs"] == 3 and hp["learning_rate"] == 0.02
    assert hp["batch_size"] == 128 and hp["use_preprocessing"] is False


def test_verbose_reports_each_choice(forced_bundle, capsys):
    DEEM(auto_hyperparameters=True, model_dir=forced_bundle, epochs=2, random_state=0).fit(X, verbose=True)
    err = capsys.readouterr().err
    assert "learning_rate = 0.02 (predicted)" in err
    assert "epochs = 2 (yours)" in err


def test_bundled_predictor_is_not_worse_than_default():
    Xb, yb = dawid_skene(n_samples=2000, n_classifiers=20, n_classes=4, missing_rate=0.6, random_state=8)
    default = DEEM(random_state=0).fit(Xb).score(Xb, yb)
    auto = DEEM(auto_hyperparameters=True, random_state=0).fit(Xb)
    assert auto.meta_features_ is not None and set(auto.predicted_hyperparameters_) == set(FORCED)
    assert auto.score(Xb, yb) >= default - 0.01


def test_auto_on_soft_labels():
    soft = np.random.default_rng(1).dirichlet(np.ones(3), size=(300, 5)).transpose(0, 2, 1)
    model = DEEM(auto_hyperparameters=True, random_state=0, epochs=2).fit(soft)
    assert model.solver_ in ("exact", "gwg") and model.predict(soft).shape == (300,)


@pytest.mark.parametrize("kw, err, match", [
    (dict(auto_hyperparameters=["epochs", "cd_k"]), ValueError, "cd_k"),
    (dict(auto_hyperparameters="yes"), TypeError, "auto_hyperparameters"),
    (dict(model_dir="/nonexistent"), ValueError, "model_dir"),
])
def test_bad_auto_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        DEEM(**kw).fit(X)


def test_missing_model_dir_is_a_clear_error():
    with pytest.raises((ValueError, FileNotFoundError), match="nonexistent"):
        DEEM(auto_hyperparameters=True, model_dir="/nonexistent/predictor").fit(X)


def test_save_load_keeps_the_used_hyperparameters(forced_bundle, tmp_path):
    model = DEEM(auto_hyperparameters=True, model_dir=forced_bundle, random_state=0).fit(X)
    model.save(tmp_path / "m.pt")
    loaded = DEEM().load(tmp_path / "m.pt")
    assert loaded.hyperparameters_ == FORCED
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
