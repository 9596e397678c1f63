"""crowd-kit's aggregator interface over :class:`deem.DEEM`: ``DEEMAggregator().fit_predict(df)``.

A crowd-kit user swaps this in for ``DawidSkene`` & co. unchanged: the long frame has the columns
``task``, ``worker``, ``label``; ``fit(df)`` learns, ``fit_predict(df)`` returns the consensus as a
Series indexed by task, ``fit_predict_proba(df)`` a DataFrame of class probabilities (one column per
label), and the fitted aggregator exposes ``labels_``, ``probas_``, ``skills_`` (a Series by worker:
each worker's expected accuracy under the learned class prior) and ``errors_`` (crowd-kit's layout:
rows ``(worker, observed label)``, one column per true label, ``errors_.loc[(w, l), c]`` = P(w says l |
the true label is c); every label's row is there, so each column sums to 1 per worker). Every
argument is passed to ``DEEM``; ``model_`` is the fitted ``DEEM``.
"""
from __future__ import annotations

import numpy as np

from .estimator import DEEM


class DEEMAggregator:
    """Label aggregation by DEEM with crowd-kit's interface (``fit``, ``fit_predict``, ``fit_predict_proba``)."""

    def __init__(self, **deem_params):
        self.deem_params = deem_params

    def fit(self, data) -> "DEEMAggregator":
        """Fit on a long frame with the columns ``task``, ``worker``, ``label``."""
        import pandas as pd

        model = DEEM(**self.deem_params).fit_long(data)
        self.model_ = model
        proba = model.predict_proba_long(data)
        proba.index.name = "task"
        proba.columns = pd.Index(list(model.classes_), name="label")
        self.probas_ = proba
        self.labels_ = pd.Series(model.predict_long(data).to_numpy(), index=proba.index, name="agg_label")
        workers = pd.Index(list(model.workers_), name="worker")
        self.skills_ = pd.Series(np.asarray(model.skill_, dtype=np.float64), index=workers, name="skill")
        confusion = np.asarray(model.confusion_, dtype=np.float64)  # (D, true c, said l)
        classes = list(model.classes_)
        rows = pd.MultiIndex.from_product([workers, pd.Index(classes, name="label")])
        self.errors_ = pd.DataFrame(confusion.transpose(0, 2, 1).reshape(-1, len(classes)), index=rows,
                                    columns=pd.Index(classes, name="label"))
        return self

    def fit_predict(self, data):
        """The consensus label per task: a Series indexed by task."""
        return self.fit(data).labels_

    def fit_predict_proba(self, data):
        """The probability of every label per task: a DataFrame indexed by task, one column per label."""
        return self.fit(data).probas_
