"""Long-format input (task, worker, label), as crowdsourcing tools produce it."""
import numpy as np
import pandas as pd
import pytest

from deem import DEEM
from deem.datasets import dawid_skene


def to_long(X, names=None):
    tasks, workers = np.nonzero(X >= 0)
    labels = X[tasks, workers]
    if names is not None:
        labels = np.asarray(names, dtype=object)[labels]
    return pd.DataFrame({"task": [f"t{t:04d}" for t in tasks], "worker": [f"w{w}" for w in workers], "label": labels})


def test_long_matches_wide():
    X, y = dawid_skene(n_samples=500, n_classifiers=10, n_classes=3, missing_rate=0.5, random_state=4)
    kw = dict(epochs=3, cd_k=2, sampler_steps=2, random_state=0, device="cpu")
    wide = DEEM(**kw).fit(X).predict(X)
    df = to_long(X)
    model = DEEM(**kw).fit_long(df)
    series = model.predict_long(df)
    assert series.name == "label" and series.index.name == "task"
    assert list(series.index) == sorted(df.task.unique())
    np.testing.assert_array_equal(series.to_numpy(), wide)
    proba = model.predict_proba_long(df)
    assert list(proba.columns) == [0, 1, 2]
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_string_labels_and_custom_columns():
    X, y = dawid_skene(n_samples=300, n_classifiers=8, n_classes=3, random_state=5)
    df = to_long(X, names=["bird", "cat", "dog"]).rename(columns={"task": "item", "worker": "annotator", "label": "answer"})
    model = DEEM(epochs=2, cd_k=1, sampler_steps=1, random_state=0, device="cpu")
    model.fit_long(df, task="item", worker="annotator", label="answer")
    assert list(model.classes_) == ["bird", "cat", "dog"]
    out = model.predict_long(df, task="item", worker="annotator", label="answer")
    assert set(out.unique()) <= {"bird", "cat", "dog"}
    truth = pd.Series(np.array(["bird", "cat", "dog"])[y], index=[f"t{t:04d}" for t in range(300)])
    assert (out == truth[out.index]).mean() > 0.7


def test_long_format_errors():
    df = pd.DataFrame({"task": [1, 1, 2], "worker": ["a", "b", "a"], "label": [0, 1, 1]})
    model = DEEM(epochs=1, cd_k=1, sampler_steps=1, device="cpu").fit_long(df)
    with pytest.raises(ValueError, match="workers the model was not fitted on"):
        model.predict_long(pd.DataFrame({"task": [3], "worker": ["zed"], "label": [0]}))
    with pytest.raises(ValueError, match="same \\(task, worker\\) pair, for example \\[1, 'a'\\]"):
        DEEM(epochs=1).fit_long(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(ValueError, match="lacks the column"):
        DEEM(epochs=1).fit_long(df.drop(columns="worker"))
    with pytest.raises(ValueError, match="missing values"):
        DEEM(epochs=1).fit_long(df.assign(label=[0, None, 1]))
    with pytest.raises(TypeError, match="DataFrame"):
        DEEM(epochs=1).fit_long(df.to_numpy())
    with pytest.raises(ValueError, match="not among the fitted classes"):
        model.predict_long(pd.DataFrame({"task": [3], "worker": ["a"], "label": [7]}))


def test_ids_are_coded_alike_whatever_the_columns_storage():
    """Ids are looked up through their distinct values (long_format._index_of): the answer must not depend
    on how pandas stores the column, on the row order, or on integral labels arriving as floats."""
    X, _ = dawid_skene(n_samples=200, n_classifiers=6, n_classes=3, missing_rate=0.3, random_state=8)
    df = to_long(X)
    model = DEEM(random_state=0, device="cpu").fit_long(df)
    expected = model.predict_proba_long(df)
    variants = {
        "object": df.astype({"task": object, "worker": object}),
        # categories in another order than the fitted workers': their codes are not the model's columns
        "category": df.assign(worker=pd.Categorical(df.worker, categories=sorted(df.worker.unique())[::-1])),
        "pyarrow": df.astype({"worker": "string[pyarrow]"}),
        "shuffled": df.sample(frac=1.0, random_state=0),
        "float labels": df.astype({"label": float}),
    }
    for name, frame in variants.items():
        got = model.predict_proba_long(frame)
        pd.testing.assert_frame_equal(got, expected, check_index_type=False, obj=name)
    unknown = df.iloc[:3].assign(worker=["w0", "nobody", "w1"])
    with pytest.raises(ValueError, match=r"1 rows come from workers the model was not fitted on, e.g. \['nobody'\]"):
        model.predict_long(unknown)
