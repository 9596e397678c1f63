"""The command line: `deem demo` and `deem aggregate`."""
import numpy as np
import pandas as pd

from deem.cli import main
from deem.datasets import dawid_skene


def test_demo_prints_both_accuracies(capsys):
    assert main(["demo", "--device", "cpu", "--digits"]) == 0
    out = capsys.readouterr().out
    mv = float(out.split("Majority vote accuracy:")[1].split()[0])
    ours = float(out.split("DEEM accuracy:")[1].split()[0])
    assert 0.8 < mv <= 1 and ours >= mv - 0.01


def test_the_default_demo_is_a_crowd_where_the_aggregator_matters(capsys):
    """Spammers and an adversary: DEEM far above majority vote, and the annotators' reliability it found."""
    assert main(["demo", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    mv = float(out.split("Majority vote accuracy:")[1].split()[0])
    ours = float(out.split("DEEM accuracy:")[1].split()[0])
    assert ours > mv + 0.1
    table = out.split("without any gold label")[1]
    rows = [line.split() for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 27
    adversary = next(r for r in rows if r[1] == "adversary")
    assert "adversary:" in " ".join(adversary) and float(adversary[3]) < 0.1
    spam_flags = sum("spammer:" in " ".join(r) for r in rows if r[1] == "spammer")
    honest_flags = sum(len(r) > 4 for r in rows if r[1] == "honest")
    assert spam_flags >= 6 and honest_flags == 0
    # the skill it found tracks the true accuracy of the honest annotators
    honest = np.array([[float(r[2]), float(r[3])] for r in rows if r[1] == "honest"])
    assert np.corrcoef(honest.T)[0, 1] > 0.95


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


def _torchrun(args, n, cwd, timeout=240):
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "deem", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_torchrun_aggregate_writes_the_single_process_file_once(tmp_path):
    """`torchrun --nproc_per_node=N -m deem aggregate answers.csv -o out.csv` writes the file one process writes:
    with one input file shared out by task, and with a list of files (here one per rank and more), N = 2 and 3."""
    X, _ = dawid_skene(n_samples=400, n_classifiers=10, n_classes=3, missing_rate=0.6, random_state=5)
    t, w = np.nonzero(X >= 0)
    df = pd.DataFrame({"task": t, "worker": [f"w{i}" for i in w], "label": X[t, w]})
    df.to_csv(tmp_path / "answers.csv", index=False)
    parts = []
    for i, chunk in enumerate(np.array_split(np.arange(400), 3)):  # three files, split by task
        name = f"part{i}.csv"
        df[df.task.isin(chunk)].to_csv(tmp_path / name, index=False)
        parts.append(name)
    assert main(["aggregate", str(tmp_path / "answers.csv"), "-o", str(tmp_path / "single.csv")]) == 0
    single = (tmp_path / "single.csv").read_bytes()
    for n, inputs in ((2, ["answers.csv"]), (3, ["answers.csv"]), (2, parts)):
        proc = _torchrun(["aggregate", *inputs, "-o", "dist.csv"], n, tmp_path)
        assert (tmp_path / "dist.csv").read_bytes() == single, (n, inputs)
        assert proc.stdout.count("wrote 400 consensus labels") == 1  # written once, by rank 0
        (tmp_path / "dist.csv").unlink()
