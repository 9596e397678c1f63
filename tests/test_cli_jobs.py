"""`deem fit` / `deem predict` / `deem aggregate` as whole jobs: the file kinds they read and write, and bad files
as one-line messages with a non-zero exit."""
import numpy as np
import pandas as pd
import pytest
import scipy.io

from deem import DEEM
from deem.cli import main
from deem.datasets import dawid_skene


@pytest.fixture(scope="module")
def crowd():
    X, y = dawid_skene(n_samples=200, n_classifiers=8, n_classes=3, missing_rate=0.4, random_state=3)
    t, w = np.nonzero(X >= 0)
    df = pd.DataFrame({"task": t, "worker": [f"w{j}" for j in w], "label": X[t, w]})
    return X, y, df


def test_fit_then_predict_long_equals_the_library(tmp_path, crowd, capsys):
    _, _, df = crowd
    df.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    assert main(["fit", str(tmp_path / "a.tsv"), "-o", str(tmp_path / "m.deem")]) == 0
    assert main(["predict", str(tmp_path / "m.deem"), str(tmp_path / "a.tsv"), "-o", str(tmp_path / "p.csv")]) == 0
    assert main(["predict", str(tmp_path / "m.deem"), str(tmp_path / "a.tsv"), "-o", str(tmp_path / "q.csv"),
                 "--proba"]) == 0
    want = DEEM(random_state=0).fit_long(df)
    got = pd.read_csv(tmp_path / "p.csv").set_index("task")["label"]
    pd.testing.assert_series_equal(got, want.predict_long(df), check_names=False)
    proba = pd.read_csv(tmp_path / "q.csv").set_index("task")
    np.testing.assert_allclose(proba.to_numpy(), want.predict_proba_long(df).to_numpy(), atol=1e-12)


@pytest.mark.parametrize("kind", ["npy", "csv", "mat"])
def test_dense_inputs(tmp_path, crowd, kind):
    X, _, _ = crowd
    path = tmp_path / f"X.{kind}"
    if kind == "npy":
        np.save(path, X)
    elif kind == "csv":
        pd.DataFrame(X, columns=[f"clf{i}" for i in range(X.shape[1])]).to_csv(path, index=False)  # a header row
    else:
        scipy.io.savemat(path, {"predictions": X.astype(np.float64), "note": np.array(["x"])})
    assert main(["fit", str(path), "-o", str(tmp_path / "m.deem")]) == 0
    assert main(["predict", str(tmp_path / "m.deem"), str(path), "-o", str(tmp_path / "p.csv")]) == 0
    got = pd.read_csv(tmp_path / "p.csv")["label"].to_numpy()
    np.testing.assert_array_equal(got, DEEM(random_state=0).fit(X).predict(X))


def test_parquet_in_and_out(tmp_path, crowd):
    pytest.importorskip("pyarrow")
    _, _, df = crowd
    df.to_parquet(tmp_path / "a.parquet")
    assert main(["aggregate", str(tmp_path / "a.parquet"), "-o", str(tmp_path / "c.parquet")]) == 0
    got = pd.read_parquet(tmp_path / "c.parquet")["label"].to_numpy()
    np.testing.assert_array_equal(got, DEEM(random_state=0).fit_long(df).predict_long(df).to_numpy())


@pytest.mark.parametrize("case,message", [
    ("missing column", "needs the columns 'task', 'worker', 'label'; it lacks \\['label'\\]"),
    ("unknown worker", "workers the model was not fitted on"),
    ("text in a matrix", "must hold numbers"),
    ("no file", "no such file"),
    ("wrong kind", "fitted on a long-format table"),
    ("unknown type", "unknown file type .json"),
])
def test_bad_files_are_one_line_and_exit_2(tmp_path, crowd, capsys, case, message):
    _, _, df = crowd
    df.to_csv(tmp_path / "a.csv", index=False)
    assert main(["fit", str(tmp_path / "a.csv"), "-o", str(tmp_path / "m.deem")]) == 0
    capsys.readouterr()
    model, out = str(tmp_path / "m.deem"), str(tmp_path / "o.csv")
    if case == "missing column":
        df.drop(columns="label").to_csv(tmp_path / "b.csv", index=False)
        argv = ["fit", str(tmp_path / "b.csv"), "-o", model]
    elif case == "unknown worker":
        df.assign(worker="stranger").to_csv(tmp_path / "b.csv", index=False)
        argv = ["predict", model, str(tmp_path / "b.csv"), "-o", out]
    elif case == "text in a matrix":
        (tmp_path / "b.csv").write_text("1,2,x\n0,1,2\n")
        argv = ["fit", str(tmp_path / "b.csv"), "-o", model]
    elif case == "no file":
        argv = ["predict", model, str(tmp_path / "nothing.csv"), "-o", out]
    elif case == "wrong kind":
        np.save(tmp_path / "b.npy", np.zeros((3, 8), dtype=int))
        argv = ["predict", model, str(tmp_path / "b.npy"), "-o", out]
    else:
        (tmp_path / "b.json").write_text("{}")
        argv = ["fit", str(tmp_path / "b.json"), "-o", model]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith(f"deem {argv[0]}: error: ")
    import re
    assert re.search(message, err), err


def test_help_says_what_each_command_reads_and_writes(capsys):
    for command, words in (("fit", ["Parquet", ".npy", ".mat", "save"]),
                           ("predict", ["CSV, TSV or Parquet", "--proba"]), ("aggregate", ["Parquet", "--truth"])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert all(w in out for w in words), (command, out)
