"""The Python examples of README.md run as written (with the data files they read made up beforehand)."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def crowd_frame():
    from deem.datasets import dawid_skene

    X, _ = dawid_skene(n_samples=300, n_classifiers=8, n_classes=3, missing_rate=0.5, random_state=0)
    t, w = np.nonzero(X >= 0)
    return pd.DataFrame({"task": t, "worker": w, "label": X[t, w]})


@pytest.mark.parametrize("index", range(len(blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # an example writes the report
    code = blocks()[index]
    monkeypatch.chdir(tmp_path)
    crowd_frame().to_csv(tmp_path / "answers.csv", index=False)
    from deem import DEEM

    ns = {"DEEM": DEEM, "df": crowd_frame(), "my_share_of_the_answers": crowd_frame()}  # the README reads on
    distributed = "init_process_group" in code
    if distributed:  # a one-process gloo group stands in for torchrun's
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
                           "WORLD_SIZE": "1"}.items():
            monkeypatch.setenv(key, value)
    try:
        exec(compile(code, f"<README example {index}>", "exec"), ns)
    finally:
        if distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if "probs" in ns:
        assert ns["probs"].shape == (2000, 3)
    if "agg" in ns:
        assert (tmp_path / "report.html").exists() and len(ns["labels"]) == 300
    if distributed:
        assert (tmp_path / "model.deem").exists() and ns["model"].n_ranks_ == 1


def test_readme_command_lines_run(tmp_path, monkeypatch, capsys):
    """The `deem ...` lines of README's shell examples, run through the CLI's entry point on made-up files."""
    import shlex

    pytest.importorskip("pyarrow")  # the examples read and write Parquet
    from deem.cli import main
    from deem.datasets import dawid_skene

    monkeypatch.chdir(tmp_path)
    df = crowd_frame()
    df.to_csv("answers.csv", index=False)
    df.to_csv("new_answers.csv", index=False)
    df.to_parquet("answers.parquet")
    pd.DataFrame({"task": np.arange(300), "label": np.zeros(300, dtype=int)}).to_csv("truth.csv", index=False)
    np.save("predictions.npy", dawid_skene(n_samples=100, n_classifiers=6, random_state=1)[0])
    text = README.read_text(encoding="utf-8")
    lines = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
             for line in block.splitlines() if line.startswith("deem ")]
    assert len(lines) >= 4
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line
    assert pd.read_parquet("consensus.parquet").shape[0] == 300 and (tmp_path / "consensus.csv").exists()
