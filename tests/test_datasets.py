"""The synthetic generators: what ``labeling_functions(return_truth=True)`` reports is what generated the labels."""
import numpy as np
import pytest

from deem.datasets import labeling_functions


def test_truth_does_not_change_the_labels():
    kw = dict(n_samples=300, n_voters=8, n_classes=3, n_correlated=2, activity_spread=0.5, random_state=4)
    L, y = labeling_functions(**kw)
    L2, y2, truth = labeling_functions(**kw, return_truth=True)
    assert np.array_equal(L, L2) and np.array_equal(y, y2)
    assert len(truth["voters"]) == 10 and truth["activity"].shape == (300,)
    assert [v["source"] is not None for v in truth["voters"]] == [False] * 8 + [True] * 2


def test_truth_matches_the_labels_it_generated():
    k = 3
    L, y, truth = labeling_functions(n_samples=20000, n_voters=12, n_classes=k, class_balance=[0.5, 0.3, 0.2],
                                     one_class_share=0.5, coverage=(0.1, 0.5), n_correlated=3, correlation=0.8,
                                     random_state=7, return_truth=True)
    assert np.allclose(truth["prior"], [0.5, 0.3, 0.2])
    for i, v in enumerate(truth["voters"]):
        if v["source"] is not None:  # a copy agrees with its source at least `correlation` of the time
            assert (L[:, i] == L[:, v["source"]]).mean() >= truth["correlation"] - 0.02
            continue
        for m in range(k):  # the firing rate per true class, within five standard errors
            rows = y == m
            rate, n = (L[rows, i] >= 0).mean(), rows.sum()
            assert rate == pytest.approx(v["rate"][m], abs=5 * np.sqrt(v["rate"][m] * (1 - v["rate"][m]) / n) + 1e-9)
        votes = L[L[:, i] >= 0, i]
        if v["one_class"]:
            assert set(np.unique(votes)) == {v["target"]}
        else:  # a multi-class voter names the true class with its precision
            right = (L[:, i] == y)[L[:, i] >= 0].mean()
            assert right == pytest.approx(v["precision"], abs=0.03)
    assert any(v["one_class"] for v in truth["voters"]) and not all(v["one_class"] for v in truth["voters"])
