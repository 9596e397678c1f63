"""Data for tests, benchmarks and the demo: synthetic crowds, crowd CSVs, a classifier ensemble."""
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
