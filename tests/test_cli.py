"""The command line: `deem demo` and `deem aggregate`."""
import numpy as np
import pandas as pd

from deem.cli import main
from deem.datasets import dawid_skene


def test_demo_prints_both_accuracies(capsys):
    assert main(["demo", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    mv = float(out.split("Majority vote accuracy:")[1].split()[0])
    ours = float(out.split("DEEM accuracy:")[1].split()[0])
    assert 0.8 < mv <= 1 and ours >= mv - 0.01


def test_aggregate_long_csv(tmp_path, capsys):
    X, y = dawid_skene(n_samples=300, n_classifiers=8, n_classes=3, missing_rate=0.5, random_state=0)
    t, w = np.nonzero(X >= 0)
    pd.DataFrame({"task": t, "worker": w, "label": X[t, w]}).to_csv(tmp_path / "answers.csv", index=False)
    pd.DataFrame({"task": np.arange(300), "label": y}).to_csv(tmp_path / "truth.csv", index=False)
    out = tmp_path / "consensus.csv"
    assert main(["aggregate", str(tmp_path / "answers.csv"), "--truth", str(tmp_path / "truth.csv"), "-o", str(out)]) == 0
    consensus = pd.read_csv(out).set_index("task")["label"]
    assert len(consensus) == 300
    assert (consensus.to_numpy() == y).mean() > 0.8
    assert "accuracy on 300 tasks" in capsys.readouterr().err


def test_aggregate_with_auto_and_preprocessing(tmp_path, capsys):
    X, y = dawid_skene(n_samples=200, n_classifiers=6, n_classes=3, missing_rate=0.3, random_state=1)
    t, w = np.nonzero(X >= 0)
    pd.DataFrame({"task": t, "worker": w, "label": X[t, w]}).to_csv(tmp_path / "answers.csv", index=False)
    out = tmp_path / "consensus.csv"
    assert main(["aggregate", str(tmp_path / "answers.csv"), "--auto", "--verbose", "-o", str(out)]) == 0
    assert "auto_hyperparameters" in capsys.readouterr().err
    assert main(["aggregate", str(tmp_path / "answers.csv"), "--preprocessing", "entmax", "--epochs", "3",
                 "-o", str(out)]) == 0
    consensus = pd.read_csv(out).set_index("task")["label"]
    assert (consensus.to_numpy() == y).mean() > 0.7
