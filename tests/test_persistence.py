"""save/load: identical predictions, no code execution, atomic writes."""
import os
import pickle

import numpy as np
import pytest
import torch

from deem import DEEM
from deem.datasets import dawid_skene

X, _ = dawid_skene(n_samples=400, n_classifiers=8, n_classes=4, random_state=2)


@pytest.fixture(scope="module")
def fitted():
    return DEEM(solver="gwg", epochs=2, cd_k=2, sampler_steps=2, random_state=0, device="cpu").fit(X)


def test_round_trip_gives_identical_predictions(fitted, tmp_path):
    path = tmp_path / "model.pt"
    fitted.save(path)
    loaded = DEEM().load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert loaded.get_params() == fitted.get_params()
    assert loaded.history_ == fitted.history_
    np.testing.assert_array_equal(loaded.class_map_, fitted.class_map_)
    assert (loaded.n_classes_, loaded.n_classifiers_) == (4, 8)


def test_reset_mapping_survives_round_trip(fitted, tmp_path):
    model = DEEM(solver="gwg", epochs=1, cd_k=1, sampler_steps=1, random_state=1, device="cpu").fit(X)
    model.reset_class_mapping()
    model.save(tmp_path / "m.pt")
    assert DEEM().load(tmp_path / "m.pt").class_map_ is None


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# The hostile file is a plain pickle (protocol 4); torch warns about the protocol before refusing it.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "deem-model", "version": 1, "x": exploit}, fh)
    with pytest.raises(ValueError, match="not a loadable"):
        DEEM().load(path)
    assert not marker.exists()
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a DEEM model"):
        DEEM().load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        DEEM().load(tmp_path / "missing.pt")


def test_crash_mid_save_keeps_the_old_file(fitted, tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    fitted.save(path)
    before = path.read_bytes()

    def crash(obj, fh, *a, **k):
        fh.write(b"half a model")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        fitted.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind


def test_long_format_coding_survives_round_trip(tmp_path):
    import pandas as pd

    rows = [(t, f"w{w}", ["cat", "dog", "eel"][(t + w) % 3 if w else t % 3]) for t in range(60) for w in range(4)]
    df = pd.DataFrame(rows, columns=["task", "worker", "label"])
    model = DEEM(epochs=2, cd_k=1, sampler_steps=1, random_state=0, device="cpu").fit_long(df)
    model.save(tmp_path / "long.pt")
    loaded = DEEM().load(tmp_path / "long.pt")
    pd.testing.assert_series_equal(loaded.predict_long(df), model.predict_long(df))


def test_save_on_one_device_load_on_another(device, tmp_path):
    model = DEEM(random_state=0, device=device).fit(X)
    model.save(tmp_path / "m.pt")
    on_cpu = DEEM(device="cpu").load(tmp_path / "m.pt")
    assert on_cpu.device_.type == "cpu"
    np.testing.assert_allclose(on_cpu.predict_proba(X), model.predict_proba(X), atol=1e-5)
    on_cpu.save(tmp_path / "back.pt")
    back = DEEM(device=device).load(tmp_path / "back.pt")
    assert back.device_.type == device
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
