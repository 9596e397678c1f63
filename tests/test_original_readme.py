"""The examples of deem 0.2.0's README (``../shared/spec``), run verbatim, and what their text says they do.

Each example is cut from the description by its first and last line, unchanged, and executed in a
namespace holding what its text assumes (``train_predictions``, ``annotator_labels``, ``model1`` ...).
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from deem.datasets import dawid_skene

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "deem-0.2.0-package-description.txt"
pytestmark = pytest.mark.skipif(not SPEC.exists(), reason=f"the original description is not at {SPEC}")

# (first line, last line) of each example, exactly as the description prints them.
EXAMPLES = {
    "quick start": ("import numpy as np", "consensus = model.predict(predictions)"),
    "evaluation": ("model = DEEM(n_classes=3, epochs=50)", 'print(f"Consensus accuracy: {accuracy:.2%}")'),
    "soft labels": ("soft_predictions = np.random.rand(100, 3, 15)", "consensus = model.predict(soft_predictions)"),
    "custom configuration": ("    n_classes=5,", "model.fit(predictions)"),
    "crowd": ("model = DEEM(n_classes=k)", "consensus_labels = model.predict(annotator_labels)"),
    "ensemble": ("predictions = np.column_stack([", "final_predictions = ensemble.predict(predictions)"),
    "missing": ("predictions = np.array([", "model.fit(predictions)  # Missing values handled automatically"),
    "weighted": ("model = DEEM(n_classes=3)  # use_weighted=True by default",
                 "model.fit(predictions)  # All classifiers treated equally"),
    "alignment": ("train_consensus = model.predict(train_preds, align_to=train_preds)",
                  'print(f"Predicted class 0 → Aligned class {mapping[0]}")'),
    "auto hyperparameters": ("# Simple - uses bundled trained models automatically",
                             "    model_dir='path/to/custom/models'  # Optional"),
    "soft labels, given": ("soft_predictions = classifier_probabilities  # Shape: (100, 3, 15)",
                           "consensus = model.predict(soft_predictions)"),
    "save and load": ("model.save('my_ensemble.pt')", "predictions = model.predict(new_data)"),
}


def cut(first: str, last: str) -> str:
    lines = SPEC.read_text(encoding="utf-8").splitlines()
    start = lines.index(first)
    if first.startswith("    "):  # an argument line: the example opens on the line before it
        start -= 1
    end = next(i for i in range(start, len(lines)) if lines[i] == last)
    if last.startswith("    "):  # an argument line: the example closes on the line after it
        end += 1
    return "\n".join(lines[start:end + 1])


class Classifier:
    def __init__(self, column):
        self.column = column

    def predict(self, X):
        return self.column


def namespace():
    X, y = dawid_skene(n_samples=300, n_classifiers=15, n_classes=3, accuracy=(0.55, 0.9), random_state=0)
    soft = np.random.default_rng(0).dirichlet(np.ones(3), size=(100, 15)).transpose(0, 2, 1)
    from deem import DEEM
    return {"DEEM": DEEM, "np": np, "predictions": X, "train_predictions": X[:200], "test_predictions": X[200:],
            "test_labels": y[200:], "k": 3, "annotator_labels": X, "model1": Classifier(X[:, 0]),
            "model2": Classifier(X[:, 1]), "model3": Classifier(X[:, 2]), "X": None, "train_preds": X[:200],
            "test_preds": X[200:], "classifier_probabilities": soft, "new_data": X[:50], "_truth": y}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_original_readme_example_runs_verbatim(name, tmp_path, monkeypatch, capsys):
    code = cut(*EXAMPLES[name])
    if "device='cuda'" in code and not torch.cuda.is_available():
        pytest.skip("the example asks for device='cuda' and this machine has no GPU")
    monkeypatch.chdir(tmp_path)
    ns = namespace()
    if name == "save and load":  # the text saves the model the examples before it fitted
        ns["model"] = ns["DEEM"](n_classes=3, random_state=0).fit(ns["predictions"])
    if name == "alignment":
        ns["model"] = ns["DEEM"](n_classes=3, random_state=0).fit(ns["train_preds"])
    exec(compile(code, f"<deem 0.2.0 README: {name}>", "exec"), ns)
    out = capsys.readouterr().out
    # ... and does what the text says
    if name == "quick start":
        assert ns["consensus"].shape == (100,) and set(np.unique(ns["consensus"])) <= {0, 1, 2}
    if name == "evaluation":
        assert "Consensus accuracy:" in out and ns["accuracy"] > 0.8  # these classifiers beat chance
        assert ns["consensus"].shape == (100,)
    if name in ("soft labels", "soft labels, given"):
        assert ns["consensus"].shape == (100,) and ns["consensus"].dtype.kind in "iu"  # hard labels
        assert ns["model"].soft_labels_ and ns["model"].n_classes_ == 3
    if name == "crowd":
        assert (ns["consensus_labels"] == ns["_truth"]).mean() > 0.8
    if name == "ensemble":
        assert ns["final_predictions"].shape == (300,)
    if name == "missing":
        assert ns["model"].n_classifiers_ == 5 and ns["model"].is_fitted_
    if name == "weighted":
        assert ns["model"].use_weighted is False and ns["model"].is_fitted_
    if name == "alignment":
        assert sorted(ns["mapping"].values()) == [0, 1, 2] and "Aligned class" in out
        assert ns["test_consensus"].shape == (100,)
    if name == "auto hyperparameters":
        assert ns["model"].model_dir == "path/to/custom/models"
    if name == "save and load":
        assert os.path.exists(tmp_path / "my_ensemble.pt") and ns["predictions"].shape == (50,)
