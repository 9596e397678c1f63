"""Data for tests, benchmarks and the demo: synthetic crowds and labeling functions, crowd CSVs, a classifier ensemble."""
from __future__ import annotations

import os
from typing import Tuple

import numpy as np


def dawid_skene(
    n_samples: int = 2000,
    n_classifiers: int = 15,
    n_classes: int = 3,
    accuracy: Tuple[float, float] = (0.35, 0.85),
    missing_rate: float = 0.3,
    random_state: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Labels from the Dawid-Skene model: ``(X, y)``, ``X`` is ``(N, D)`` with ``-1`` for missing.

    Each classifier has its own accuracy drawn from ``accuracy`` and a random
    confusion pattern for its mistakes; each entry is missing with probability
    ``missing_rate`` (every row keeps at least one label).
    """
    rng = np.random.default_rng(random_state)
    y = rng.integers(0, n_classes, n_samples)
    X = np.empty((n_samples, n_classifiers), dtype=np.int64)
    for i in range(n_classifiers):
        acc = rng.uniform(*accuracy)
        conf = np.stack([np.insert(rng.dirichlet(np.ones(n_classes - 1)) * (1 - acc), c, acc)
                         for c in range(n_classes)])
        cdf = conf[y].cumsum(axis=1)
        X[:, i] = (rng.random((n_samples, 1)) > cdf).sum(axis=1).clip(max=n_classes - 1)
    missing = rng.random(X.shape) < missing_rate
    missing[np.arange(n_samples), rng.integers(0, n_classifiers, n_samples)] = False
    X[missing] = -1
    return X, y


def labeling_functions(
    n_samples: int = 2000,
    n_voters: int = 20,
    n_classes: int = 2,
    class_balance=None,
    one_class_share: float = 0.7,
    coverage: Tuple[float, float] = (0.05, 0.4),
    precision: Tuple[float, float] = (0.6, 0.95),
    n_correlated: int = 0,
    correlation: float = 0.9,
    activity_spread: float = 0.0,
    random_state: int = 0,
    return_truth: bool = False,
):
    """A weak-supervision label matrix ``(L, y)``: labeling functions that look at every item and vote or abstain.

    ``L`` is ``(N, D)`` with ``-1`` for an abstention; whether a voter fires depends on the class.

    - ``class_balance``: the class prior (default: uniform); e.g. ``[0.9, 0.1]`` for an imbalanced task.
    - ``one_class_share`` of the voters are *one-class*: each has a target class ``c`` it alone ever
      votes; it fires on items of class ``c`` with a rate drawn from ``coverage`` and on the other
      classes so rarely that a vote is right with probability drawn from ``precision`` (under the
      class prior). The others are *multi-class*: they fire with a class-dependent rate (each class's
      rate drawn from ``coverage``) and, when they fire, name the true class with probability drawn
      from ``precision``, else a uniformly chosen other class.
    - ``n_correlated`` extra voters copy an earlier voter's output with probability ``correlation``
      per item (else they behave as an independent voter of the same kind): conditional independence broken.
    - ``activity_spread``: items differ in how many voters fire on them (a log-normal per-item factor
      on every firing rate, of this standard deviation), as text items of different lengths do.
    - ``return_truth``: also return the generating parameters, ``(L, y, truth)``: ``truth["prior"]`` (K,),
      ``truth["activity"]`` (N,) the items' factors, ``truth["correlation"]``, and ``truth["voters"]``, one dict
      per column: ``one_class`` (bool), ``target`` (its class, or None), ``rate`` (K,) firing rate per true
      class before the activity factor, ``precision``, ``source`` (the copied column, or None). With them the
      Bayes-optimal consensus can be computed (``benchmarks/ws_ceiling.py``); the same seed gives the same
      ``(L, y)`` either way.
    """
    rng = np.random.default_rng(random_state)
    k = n_classes
    prior = np.full(k, 1.0 / k) if class_balance is None else np.asarray(class_balance, dtype=np.float64)
    if prior.shape != (k,) or np.any(prior < 0) or not np.isclose(prior.sum(), 1.0):
        raise ValueError(f"class_balance must be {k} non-negative numbers summing to 1; got {class_balance!r}")
    y = rng.choice(k, n_samples, p=prior)
    activity = np.exp(rng.normal(0.0, activity_spread, n_samples)) if activity_spread > 0 else np.ones(n_samples)
    base = n_voters
    L = np.full((n_samples, base + n_correlated), -1, dtype=np.int64)
    voters = []
    for i in range(base + n_correlated):
        one_class = rng.random() < one_class_share
        prec = rng.uniform(*precision)
        if one_class:
            c = rng.integers(k)
            hit = rng.uniform(*coverage)
            # false firing rate on the other classes so that P(class c | vote c) = prec
            other = prior[c] * hit * (1 - prec) / max(prec * (1 - prior[c]), 1e-12)
            rate = np.where(np.arange(k) == c, hit, other)
        else:
            rate = rng.uniform(*coverage, size=k)
        fires = rng.random(n_samples) < np.clip(rate[y] * activity, 0.0, 1.0)
        if one_class:
            votes = np.full(n_samples, c)
        else:
            wrong = (y + rng.integers(1, k, n_samples)) % k if k > 1 else y
            votes = np.where(rng.random(n_samples) < prec, y, wrong)
        L[:, i] = np.where(fires, votes, -1)
        source = None
        if i >= base:  # a correlated voter: copies an earlier one on most items
            source = int(rng.integers(base))
            copy = rng.random(n_samples) < correlation
            L[copy, i] = L[copy, source]
        voters.append({"one_class": bool(one_class), "target": int(c) if one_class else None, "rate": rate,
                       "precision": float(prec), "source": source})
    if return_truth:
        return L, y, {"prior": prior, "activity": activity, "correlation": float(correlation), "voters": voters}
    return L, y


def load_crowd_folder(folder: str):
    """``(answers, truth)`` from a folder holding ``answers.csv`` (task, worker, label) and ``truth.csv`` (task, label)."""
    import pandas as pd

    answers = pd.read_csv(os.path.join(folder, "answers.csv"))
    truth_path = os.path.join(folder, "truth.csv")
    truth = pd.read_csv(truth_path).set_index("task")["label"] if os.path.exists(truth_path) else None
    return answers, truth


def classifier_ensemble(random_state: int = 0):
    """Predictions of nine diverse scikit-learn classifiers on the digits test split.

    Each classifier sees its own random half of the pixels, so they are weaker
    and disagree more than on the full image. Returns ``(predictions (N, 9), y_test, names)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Perceptron
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.5, random_state=random_state, stratify=y)
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
        "naive_bayes": GaussianNB(),
        "tree": DecisionTreeClassifier(max_depth=6, random_state=random_state),
        "knn": KNeighborsClassifier(n_neighbors=15),
        "forest": RandomForestClassifier(n_estimators=20, max_depth=5, random_state=random_state),
        "lda": LinearDiscriminantAnalysis(),
        "perceptron": make_pipeline(StandardScaler(), Perceptron(random_state=random_state)),
        "stump_forest": RandomForestClassifier(n_estimators=10, max_depth=3, random_state=random_state + 1),
        "shallow_tree": DecisionTreeClassifier(max_depth=4, random_state=random_state + 2),
    }
    rng = np.random.default_rng(random_state)
    preds = []
    for model in models.values():
        cols = rng.choice(X.shape[1], X.shape[1] // 2, replace=False)
        model.fit(X_tr[:, cols], y_tr)
        preds.append(model.predict(X_te[:, cols]))
    return np.column_stack(preds), y_te, list(models)


def crowd_with_spammers(n_tasks: int = 3000, n_honest: int = 18, n_spammers: int = 8, n_classes: int = 4,
                        per_task: int = 5, adversary_share: float = 0.5, accuracy: Tuple[float, float] = (0.5, 0.9),
                        random_state: int = 0):
    """A crowd where the aggregator matters: honest annotators, spammers and one prolific adversary.

    Each task gets ``per_task`` labels from distinct annotators drawn among the honest ones (each names the true
    class with its own probability from ``accuracy``, else a uniformly chosen other class) and the spammers
    (a uniformly random class, whatever the task); the adversary, the last annotator, labels a share
    ``adversary_share`` of the tasks, always with the *next* class (true + 1 mod K). Returns ``(X, y, roles,
    accuracy)``: ``X`` ``(n_tasks, n_annotators)`` with ``-1`` for no label, the true classes, each
    annotator's role (``'honest'``, ``'spammer'``, ``'adversary'``) and its true accuracy.
    """
    rng = np.random.default_rng(random_state)
    k, d = n_classes, n_honest + n_spammers + 1
    y = rng.integers(0, k, n_tasks)
    skill = np.concatenate([rng.uniform(*accuracy, n_honest), np.full(n_spammers, 1.0 / k), [0.0]])
    roles = ["honest"] * n_honest + ["spammer"] * n_spammers + ["adversary"]
    X = np.full((n_tasks, d), -1, dtype=np.int64)
    who = np.argsort(rng.random((n_tasks, d - 1)), axis=1)[:, :per_task]  # distinct annotators per task
    rows = np.repeat(np.arange(n_tasks), per_task)
    cols = who.reshape(-1)
    truth = y[rows]
    wrong = (truth + rng.integers(1, k, truth.shape[0])) % k
    honest = np.where(rng.random(truth.shape[0]) < skill[np.minimum(cols, d - 2)], truth, wrong)
    X[rows, cols] = np.where(cols < n_honest, honest, rng.integers(0, k, truth.shape[0]))
    adversary = rng.random(n_tasks) < adversary_share
    X[adversary, d - 1] = (y[adversary] + 1) % k
    return X, y, roles, skill
