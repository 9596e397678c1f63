"""Meta-features and the bundled hyperparameter predictor (deem.meta_features, deem.autotune)."""
import copy
import json
import math
import os
import pickle
import sys

import numpy as np
import pytest

from deem._validation import check_labels
from deem.autotune import CHOICES, KEYS, bundled_path, check_config, load_predictor
from deem.datasets import dawid_skene
from deem.meta_features import FEATURE_NAMES, meta_features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def feats(X):
    return meta_features(check_labels(X))


# ---------------------------------------------------------------- meta-features
def test_hand_computed_example():
    X = np.array([[0, 0, 1],
                  [1, 1, -1],
                  [0, 1, 0]])
    f = feats(X)
    assert list(f) == list(FEATURE_NAMES)
    assert f["log_n_samples"] == pytest.approx(math.log(3))
    assert f["log_n_classifiers"] == pytest.approx(math.log(3))
    assert f["n_classes"] == 2
    assert f["density"] == pytest.approx(8 / 9)
    assert f["log_labels_per_row"] == pytest.approx(math.log(8 / 3))
    # majority vote 0, 1, 0: agreement 3/3, 2/3, 1/2
    assert f["mv_agreement_mean"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert f["mv_agreement_min"] == pytest.approx(0.5)
    assert f["mv_agreement_std"] == pytest.approx(np.std([1, 2 / 3, 1 / 2]))
    # agreeing co-labelled pairs: row 0 1 of 3, row 1 1 of 1, row 2 1 of 3
    assert f["pairwise_agreement"] == pytest.approx(3 / 7)
    assert f["pairwise_kappa"] == pytest.approx((3 / 7 - 0.5) / 0.5)  # labels are half 0, half 1
    assert f["mv_margin"] == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)
    p = np.array([2 / 3, 1 / 3])
    assert f["mv_balance"] == pytest.approx(-(p * np.log(p)).sum() / math.log(2))
    assert f["frac_below_chance"] == 0.0
    assert f["soft"] == 0.0


def test_below_chance_and_balance():
    # Classifier 2 always contradicts the other two: below chance (1/2) agreement with the vote.
    y = np.array([0, 1, 0, 1, 0, 1])
    X = np.stack([y, y, 1 - y], axis=1)
    f = feats(X)
    assert f["frac_below_chance"] == pytest.approx(1 / 3)
    assert f["mv_agreement_min"] == 0.0
    assert f["mv_balance"] == pytest.approx(1.0)
    assert f["density"] == 1.0
    X2 = np.zeros((10, 4), dtype=int)  # everyone says 0: balance 0, full agreement
    X2[0, 0] = 1
    f2 = feats(X2)
    assert f2["mv_balance"] == pytest.approx(0.0)


def test_column_permutation_invariance():
    X, _ = dawid_skene(500, 12, 4, missing_rate=0.4, random_state=3)
    a = feats(X)
    b = feats(X[:, np.random.default_rng(0).permutation(X.shape[1])])
    for name in FEATURE_NAMES:
        assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-9), name


def test_empty_rows_are_ignored():
    X, _ = dawid_skene(300, 6, 3, missing_rate=0.2, random_state=1)
    with_empty = np.vstack([X, np.full((20, 6), -1)])
    a, b = feats(X), feats(with_empty)
    for name in FEATURE_NAMES:
        assert a[name] == pytest.approx(b[name]), name


def test_soft_one_hot_matches_hard():
    X, _ = dawid_skene(400, 7, 3, missing_rate=0.0, random_state=2)
    P = np.eye(3, dtype=np.float32)[X].transpose(0, 2, 1)  # (N, K, D)
    hard, soft = feats(X), feats(P)
    assert soft["soft"] == 1.0 and hard["soft"] == 0.0
    for name in FEATURE_NAMES:
        if name != "soft":
            assert soft[name] == pytest.approx(hard[name], rel=1e-5, abs=1e-6), name


def test_soft_probabilities():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(4), size=(200, 5)).transpose(0, 2, 1)
    f = feats(P)
    assert f["density"] == 1.0 and f["row_label_cv"] == 0.0 and f["soft"] == 1.0
    # two independent uniform-Dirichlet draws agree with probability E[sum_k p_k q_k] = 1/4
    assert f["pairwise_agreement"] == pytest.approx(0.25, abs=0.02)
    assert all(math.isfinite(v) for v in f.values())


def test_meta_features_rejects_other_input():
    with pytest.raises(TypeError):
        meta_features(np.zeros((3, 3)))


# ---------------------------------------------------------------- predictor
def _datasets():
    rng = np.random.default_rng(0)
    out = [
        dawid_skene(500, 10, 3, missing_rate=0.3, random_state=0)[0],
        dawid_skene(300, 40, 2, accuracy=(0.5, 0.7), missing_rate=0.9, random_state=1)[0],
        dawid_skene(800, 5, 8, accuracy=(0.2, 0.6), missing_rate=0.0, random_state=2)[0],
        rng.integers(0, 2, (200, 3)),
        rng.dirichlet(np.ones(3), size=(300, 6)).transpose(0, 2, 1).astype(np.float32),
    ]
    return out


def test_bundled_predictor_loads_and_predicts_valid_values():
    assert bundled_path().is_file()
    pred = load_predictor()
    for X in _datasets():
        data = check_labels(X)
        params = pred.predict(meta_features(data))
        assert set(params) == set(KEYS)
        assert check_config(params) == params
        for key, allowed in CHOICES.items():
            assert params[key] in allowed
        index, reason = pred.choose(meta_features(data))
        assert 0 <= index < len(pred.configs) and isinstance(reason, str)
        # asking for the sampler gives a sampler configuration
        sampler = pred.predict(meta_features(data), fixed={"solver": "gwg"})
        assert sampler["solver"] == "gwg"


def test_fixed_values_restrict_the_candidates_and_set_the_baseline():
    pred = load_predictor()
    data = check_labels(_datasets()[0])
    features = meta_features(data)
    index, reason = pred.choose(features, fixed={"solver": "gwg"})
    assert pred.configs[index]["solver"] == "gwg"
    # the baseline is the sampler with default settings, and the reason names it
    assert "'gwg-default'" in reason
    index, _ = pred.choose(features, fixed={"solver": "gwg", "use_preprocessing": True})
    assert pred.configs[index]["use_preprocessing"] is True
    assert pred.choose(features, fixed={"solver": "exact", "use_preprocessing": True}) [0] is None
    assert pred.predict(features, fixed={"solver": "exact", "use_preprocessing": True}) == {}


def test_bundled_file_is_plain_json(monkeypatch):
    text = bundled_path().read_text(encoding="utf-8")
    bundle = json.loads(text)
    assert bundle["feature_names"] == list(FEATURE_NAMES)
    assert "leave_one_out" in bundle["metadata"]

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    load_predictor()


def _bundle():
    return json.loads(bundled_path().read_text(encoding="utf-8"))


def _write(tmp_path, obj, name="hyperparameters.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def test_custom_bundle_is_used(tmp_path):
    b = _bundle()
    # Every training ensemble says config 0 (with 7 epochs) wins by 10 points.
    special = copy.deepcopy(b["configs"][b["default_config"]["hard"]])
    special.update(solver="gwg", epochs=7, learning_rate=0.05)
    b["configs"].append(special)
    b["config_names"].append("special")
    b["config_kinds"].append(["hard", "soft"])
    for row in b["model"]["train_gain"]:
        row.append(0.1)
    b["model"]["max_distance"] = {"hard": 1e9, "soft": 1e9}
    _write(tmp_path, b)
    X = dawid_skene(300, 8, 3, random_state=0)[0]
    f = feats(X)
    for where in (tmp_path, str(tmp_path), tmp_path / "hyperparameters.json"):
        params = load_predictor(where).predict(f)
        assert params["epochs"] == 7 and params["learning_rate"] == 0.05


@pytest.mark.parametrize("mutate", [
    lambda b: b.update(schema_version=999),
    lambda b: b.pop("model"),
    lambda b: b.pop("configs"),
    lambda b: b.update(format="something-else"),
    lambda b: b.update(feature_names=["a", "b"]),
    lambda b: b["configs"][0].pop("epochs"),
    lambda b: b["configs"][0].update(solver="sgd"),
    lambda b: b["configs"][0].update(epochs=-3),
    lambda b: b["model"].update(train_gain=b["model"]["train_gain"][:-1]),
    lambda b: b["model"].update(feature_scale=[0.0] * len(FEATURE_NAMES)),
    lambda b: b["default_config"].update(hard=10 ** 6),
])
def test_malformed_bundle_raises_value_error(tmp_path, mutate):
    b = _bundle()
    mutate(b)
    _write(tmp_path, b)
    with pytest.raises(ValueError, match="hyperparameter predictor"):
        load_predictor(tmp_path)


@pytest.mark.parametrize("text", ["not json at all", "[1, 2, 3]", "", "{\"format\": 1"])
def test_not_json_raises_value_error(tmp_path, text):
    _write(tmp_path, text)
    with pytest.raises(ValueError, match="hyperparameter predictor"):
        load_predictor(tmp_path)


def test_pickle_file_is_rejected(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_bytes(pickle.dumps(_bundle()))
    with pytest.raises(ValueError):
        load_predictor(path)


def test_missing_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="hyperparameters.json"):
        load_predictor(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        load_predictor(tmp_path)  # a folder without the file


def test_predict_rejects_incomplete_features():
    pred = load_predictor()
    with pytest.raises(ValueError, match="features lack"):
        pred.predict({"log_n_samples": 3.0})


# ---------------------------------------------------------------- training script
def test_training_script_builds_a_loadable_bundle(tmp_path):
    """build_bundle / leave_one_out on made-up search results (no fitting)."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import train_hyperparameter_predictor as T
    finally:
        sys.path.pop(0)
    names = ["default", "exact-prior0", "gwg-e30-lr1e-2-b256"]
    records = []
    for seed in range(10):
        X, y, spec = T.make_ensemble(seed, quick=True)
        kind = "soft" if spec["soft"] else "hard"
        acc = {"default": 0.8, "gwg-e30-lr1e-2-b256": 0.9 if seed % 2 else 0.7}
        if kind == "hard":
            acc["exact-prior0"] = 0.801
        assert X.shape[0] == y.shape[0] and (X.ndim == 3) == spec["soft"]
        records.append(dict(spec=spec, kind=kind, features=feats(X), accuracy=acc,
                            seconds={n: 1.0 for n in acc}, errors={}))
    kinds = {n: T.CANDIDATES[n][1] for n in names}
    loo = T.leave_one_out(records, names, kinds)
    assert loo["all"]["n_datasets"] == 10
    assert T._winner(records[0], names) == "default"  # 0.801 vs 0.8 is a tie
    path = tmp_path / "hyperparameters.json"
    T._write_json(str(path), T.build_bundle(records, names, kinds, {"note": "test"}))
    pred = load_predictor(path)
    for r in records:
        params = pred.predict(r["features"])
        assert check_config(params) == params


def test_auto_hyperparameters_not_worse_than_default():
    from deem import DEEM

    X, y = dawid_skene(1000, 12, 3, missing_rate=0.3, random_state=5)
    try:
        auto = DEEM(auto_hyperparameters=True, random_state=0).fit(X)
    except NotImplementedError:
        pytest.skip("auto_hyperparameters is not wired into DEEM.fit yet")
    default = DEEM(random_state=0).fit(X)
    assert auto.score(X, y) >= default.score(X, y) - 0.01
