"""Both layouts of hard labels give one consensus: DEEM(layout=...), scipy.sparse input, long format kept sparse."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deem import DEEM
from deem.datasets import dawid_skene, labeling_functions
from deem.sparse import SparseLabels


def crowd(seed=0, missing_rate=0.9):
    X, y = dawid_skene(n_samples=1500, n_classifiers=40, n_classes=3, missing_rate=missing_rate, random_state=seed)
    return X, y


@pytest.mark.parametrize("solver", ["bayes", "exact"])
@pytest.mark.parametrize("missing", ["ignorable", "informative"])
def test_dense_and_sparse_layouts_give_the_same_fit(solver, missing):
    X, _ = crowd() if missing == "ignorable" else labeling_functions(n_samples=1500, random_state=3)
    dense = DEEM(solver=solver, missing=missing, layout="dense", random_state=0).fit(X)
    sparse = DEEM(solver=solver, missing=missing, layout="sparse", random_state=0).fit(X)
    assert dense.layout_ == "dense" and sparse.layout_ == "sparse"
    np.testing.assert_allclose(sparse.predict_proba(X), dense.predict_proba(X), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(sparse.predict(X), dense.predict(X))
    np.testing.assert_allclose(sparse.confusion_, dense.confusion_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sparse.abstain_rate_, dense.abstain_rate_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sparse.coverage_, dense.coverage_)
    assert sparse.missing_ == dense.missing_ == missing
    # predicting a sparse copy with the dense-fitted model, and the other way round
    S = SparseLabels.from_dense(X)
    np.testing.assert_allclose(dense.predict_proba(S), dense.predict_proba(X), rtol=0, atol=1e-9)


def test_auto_decides_missingness_the_same_in_both_layouts():
    L, _ = labeling_functions(n_samples=1200, random_state=5)
    dense, sparse = (DEEM(layout=lay).fit(L) for lay in ("dense", "sparse"))
    assert dense.missing_ == sparse.missing_
    assert dense.missing_log_bayes_factor_ == pytest.approx(sparse.missing_log_bayes_factor_, rel=1e-12)


def test_layout_auto_follows_the_share_of_present_entries():
    sparse_crowd, _ = crowd(missing_rate=0.97)
    dense_crowd, _ = crowd(missing_rate=0.3)
    assert DEEM().fit(sparse_crowd).layout_ == "sparse"
    assert DEEM().fit(dense_crowd).layout_ == "dense"
    assert DEEM(solver="gwg", epochs=2).fit(sparse_crowd).layout_ == "sparse"  # the samplers read padded rows
    assert DEEM(solver="gwg", epochs=2).fit(dense_crowd).layout_ == "dense"
    assert DEEM(solver="gwg", epochs=2, use_preprocessing=True).fit(sparse_crowd).layout_ == "dense"


def test_scipy_sparse_input_holds_label_plus_one():
    X, _ = crowd(seed=1)
    M = sp.csr_matrix(X + 1)  # 0 = missing
    model = DEEM(random_state=0).fit(M)
    assert model.layout_ == "sparse"
    np.testing.assert_allclose(model.predict_proba(M), DEEM(random_state=0, layout="dense").fit(X).predict_proba(X),
                               rtol=0, atol=1e-9)


def test_long_format_never_builds_a_dense_matrix(monkeypatch):
    X, y = crowd(seed=2, missing_rate=0.8)
    t, w = np.nonzero(X >= 0)
    df = pd.DataFrame({"task": t, "worker": w, "label": X[t, w]})

    def refuse(*args, **kwargs):
        raise AssertionError("a dense tasks x workers matrix was built")

    import deem.long_format as lf

    monkeypatch.setattr(SparseLabels, "to_dense", refuse)
    monkeypatch.setattr(lf, "pivot", refuse)
    model = DEEM(random_state=0).fit_long(df)
    pred = model.predict_long(df)
    proba = model.predict_proba_long(df)
    monkeypatch.undo()
    reference = DEEM(random_state=0, layout="dense").fit(X)
    np.testing.assert_array_equal(pred.sort_index().to_numpy(), reference.predict(X))
    np.testing.assert_allclose(proba.sort_index().to_numpy(), reference.predict_proba(X), rtol=0, atol=1e-9)


def test_samplers_read_sparse_input_dense_and_agree():
    X, _ = crowd(seed=3, missing_rate=0.5)
    S = SparseLabels.from_dense(X)
    a = DEEM(solver="gwg", epochs=3, random_state=0).fit(S)
    b = DEEM(solver="gwg", epochs=3, random_state=0).fit(X)
    np.testing.assert_allclose(a.predict_proba(S), b.predict_proba(X), rtol=0, atol=1e-6)


def test_bad_layout_choices_are_value_errors():
    X, _ = crowd()
    with pytest.raises(ValueError, match="layout must be one of"):
        DEEM(layout="csr").fit(X)
    with pytest.raises(ValueError, match="use_preprocessing=True .*read the labels dense"):
        DEEM(layout="sparse", solver="gwg", use_preprocessing=True).fit(X)
    soft = np.full((10, 3, 4), 1 / 3)
    with pytest.raises(ValueError, match="soft labels stay dense"):
        DEEM(layout="sparse").fit(soft)
    with pytest.raises(ValueError, match="classifiers"):
        DEEM().fit(X).predict(SparseLabels.from_dense(X[:, :10]))


def test_save_load_keeps_the_layout(tmp_path):
    X, _ = crowd(missing_rate=0.97)
    model = DEEM(random_state=0).fit(X)
    model.save(tmp_path / "m.deem")
    loaded = DEEM().load(tmp_path / "m.deem")
    assert loaded.layout_ == "sparse"
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", ["one voter", "one item", "items and voters with no label"])
def test_edge_shapes_fit_and_agree_with_the_dense_layout(shape):
    rng = np.random.default_rng(0)
    if shape == "one voter":
        X = rng.integers(-1, 3, (200, 1))
    elif shape == "one item":
        X = rng.integers(0, 3, (1, 30))
    else:
        X = rng.integers(-1, 3, (300, 12))
        X[:40] = -1
        X[:, 5] = -1
    X[0, 0] = 2  # every class seen
    dense = DEEM(layout="dense", random_state=0).fit(X)
    sparse = DEEM(layout="sparse", random_state=0).fit(X)
    assert sparse.n_dropped_rows_ == dense.n_dropped_rows_
    np.testing.assert_allclose(sparse.predict_proba(X), dense.predict_proba(X), rtol=0, atol=1e-9)


def test_two_million_labels_over_a_sixteen_gigabyte_matrix_fit_in_a_few_hundred_megabytes():
    """400k tasks x 40k workers (dense: 16 GB of int8), 5 labels a task: the fit's own memory stays O(labels).

    One update from the majority vote (anchor='majority') reads every structure the converged fit does
    (both views, the presence test, the pass's buffers) without its hundreds of passes."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import resource, numpy as np
        from deem import DEEM
        from deem.sparse import SparseLabels
        rng = np.random.default_rng(0)
        n, w, r = 400_000, 40_000, 5
        truth = rng.integers(0, 3, n)
        items = np.repeat(np.arange(n), r)
        voters = (rng.integers(0, w, n)[:, None] + np.arange(r) * 7919).reshape(-1) % w  # distinct per task
        labels = np.where(rng.random(n * r) < 0.75, truth[items], rng.integers(0, 3, n * r))
        data = SparseLabels.from_triples(items, voters, labels, n_voters=w)
        del items, voters, labels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        pred = DEEM(random_state=0, anchor="majority").fit(data).predict(data)
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(grew, float((pred == truth).mean()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    grew_mb, accuracy = (float(x) for x in out.stdout.split())
    assert grew_mb < 400, f"the fit grew the process by {grew_mb:.0f} MB"
    assert accuracy > 0.85


@pytest.mark.parametrize("corrupt", ["voter out of range", "label out of range", "row_ptr falls", "views differ",
                                     "float voter"])
def test_a_hand_built_sparse_value_is_checked_before_any_kernel(corrupt):

    X, _ = crowd()
    s = SparseLabels.from_dense(X)
    fields = dict(row_ptr=s.row_ptr.clone(), voter=s.voter.clone(), label=s.label.clone(), col_ptr=s.col_ptr.clone(),
                  col_row=s.col_row.clone(), col_label=s.col_label.clone())
    if corrupt == "voter out of range":
        fields["voter"][3] = s.n_classifiers
    elif corrupt == "label out of range":
        fields["label"][3] = 3
    elif corrupt == "row_ptr falls":
        fields["row_ptr"][5] = fields["row_ptr"][4] - 1
    elif corrupt == "views differ":
        fields["voter"][[0, 1]] = fields["voter"][[1, 0]] if fields["voter"][0] != fields["voter"][1] else 0
        fields["voter"][0] = (fields["voter"][0] + 1) % s.n_classifiers
    else:
        fields["voter"] = fields["voter"].double()
    bad = SparseLabels(**fields, n_classes=3)
    with pytest.raises((ValueError, TypeError), match="voter|label|row_ptr|view"):
        DEEM().fit(bad)
    model = DEEM().fit(X)
    with pytest.raises((ValueError, TypeError), match="voter|label|row_ptr|view"):
        model.predict(bad)


def test_a_dense_only_path_refuses_to_densify_a_huge_sparse_crowd(monkeypatch):
    """Sparse labels too large to hold dense get a clear error from the dense-only paths (preprocessing
    layers), not an OOM; the samplers read them sparse whatever the limit."""
    import deem.estimator as E

    s = SparseLabels.from_triples([0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 1, 0], n_rows=4, n_voters=3)
    monkeypatch.setattr(E, "DENSIFY_LIMIT", 11)
    with pytest.raises(ValueError, match="reads labels dense.*every solver reads them sparse"):
        DEEM(solver="gwg", epochs=1, use_preprocessing=True, random_state=0).fit(s)
    for solver in ("gwg", "dlp"):
        model = DEEM(solver=solver, hidden_dim=2, epochs=1, random_state=0).fit(s)
        assert model.layout_ == "sparse" and model.predict(s).shape == (4,)
    monkeypatch.setattr(E, "DENSIFY_LIMIT", 12)
    DEEM(solver="gwg", epochs=1, use_preprocessing=True, random_state=0).fit(s)  # 4 x 3 cells: dense is fine


@pytest.mark.parametrize("solver", ["bayes", "exact"])
def test_mixed_missingness_is_the_same_in_both_layouts(solver):
    L, _ = labeling_functions(n_samples=500, n_voters=10, n_classes=5, one_class_share=0.5, coverage=(0.03, 0.3),
                              precision=(0.55, 0.75), activity_spread=0.5, random_state=40)
    dense, sparse = (DEEM(solver=solver, layout=lay, random_state=0).fit(L) for lay in ("dense", "sparse"))
    assert dense.missing_ == sparse.missing_ == "mixed"
    np.testing.assert_array_equal(dense.informative_voters_, sparse.informative_voters_)
    np.testing.assert_allclose(sparse.predict_proba(L), dense.predict_proba(L), rtol=0, atol=1e-9)
    np.testing.assert_allclose(sparse.abstain_rate_, dense.abstain_rate_, rtol=0, atol=1e-9)
