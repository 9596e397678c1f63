"""deem.aggregation.DEEMAggregator: crowd-kit's interface, a thin layer over DEEM."""
import numpy as np
import pandas as pd
import pytest

from deem import DEEM
from deem.aggregation import DEEMAggregator
from deem.datasets import dawid_skene


@pytest.fixture(scope="module")
def answers():
    X, y = dawid_skene(n_samples=300, n_classifiers=9, n_classes=3, missing_rate=0.5, random_state=4)
    t, w = np.nonzero(X >= 0)
    names = np.array(["cat", "dog", "fox"])
    df = pd.DataFrame({"task": [f"t{i}" for i in t], "worker": [f"w{j}" for j in w], "label": names[X[t, w]]})
    return df, pd.Series(names[y], index=[f"t{i}" for i in range(300)])


def test_fit_predict_is_deems_consensus_in_crowd_kits_shapes(answers):
    df, truth = answers
    agg = DEEMAggregator(random_state=0)
    labels = agg.fit_predict(df)
    model = DEEM(random_state=0).fit_long(df)
    pd.testing.assert_series_equal(labels, model.predict_long(df).rename("agg_label").rename_axis("task"))
    assert labels.index.name == "task" and labels.name == "agg_label"
    assert (labels.reindex(truth.index) == truth).mean() > 0.85
    proba = agg.fit_predict_proba(df)
    assert list(proba.columns) == ["cat", "dog", "fox"] and proba.index.name == "task"
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba.idxmax(axis=1) == agg.labels_).all()
    pd.testing.assert_frame_equal(agg.probas_, proba)


def test_skills_and_errors_in_crowd_kits_layout(answers):
    df, _ = answers
    agg = DEEMAggregator(random_state=0).fit(df)
    workers = sorted(df.worker.unique())
    assert list(agg.skills_.index) == workers and agg.skills_.name == "skill"
    np.testing.assert_allclose(agg.skills_.to_numpy(), agg.model_.skill_)
    errors = agg.errors_
    assert errors.index.names == ["worker", "label"] and list(errors.columns) == ["cat", "dog", "fox"]
    # errors_.loc[(w, said), true] = confusion_[w, true, said]; every column a distribution per worker
    w = 2
    for said in range(3):
        for true in range(3):
            assert errors.loc[(workers[w], ["cat", "dog", "fox"][said]), ["cat", "dog", "fox"][true]] == \
                pytest.approx(agg.model_.confusion_[w, true, said])
    np.testing.assert_allclose(errors.groupby(level="worker").sum().to_numpy(), 1.0, atol=1e-9)
