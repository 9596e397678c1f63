"""Long-format (``task, worker, label``) input, the layout crowdsourcing tools use.

One row per label that one worker gave one task. It becomes labels stored sparse
(:class:`deem.sparse.SparseLabels`, memory O(labels)); ``pivot`` still builds the dense
``(tasks, workers)`` matrix with ``-1`` where a worker gave no label, for small data and tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass
class Pivot:
    matrix: np.ndarray  # (n_tasks, n_workers), -1 = missing
    tasks: "object"  # pandas Index of task ids, one per matrix row


def _require_frame(df, columns: Sequence[str]):
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"long-format input must be a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"long-format DataFrame lacks the column(s) {missing}; it has {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("long-format DataFrame is empty")
    for c in columns:
        if df[c].isna().any():
            raise ValueError(f"column {c!r} contains missing values (NaN/None); drop those rows first")
    return pd


def learn_coding(df, worker: str, label: str, n_classes: Optional[int]):
    """Worker order and label coding learned at fit time: (workers, classes)."""
    _require_frame(df, [worker, label])
    workers = np.array(sorted(df[worker].unique(), key=_sort_key), dtype=object)
    values = df[label].to_numpy()
    if values.dtype.kind in "iu" or (values.dtype.kind == "f" and np.all(values == np.round(values))):
        ints = values.astype(np.int64)
        if ints.min() < 0:
            raise ValueError(f"column {label!r} holds the negative label {ints.min()}; integer labels must be >= 0")
        k = int(ints.max()) + 1 if n_classes is None else int(n_classes)
        if ints.max() >= k:
            raise ValueError(f"column {label!r} holds the label {ints.max()}, but n_classes={k}")
        classes = np.arange(max(k, 2))
    else:
        classes = np.array(sorted(df[label].unique(), key=_sort_key), dtype=object)
        if n_classes is not None and len(classes) > n_classes:
            raise ValueError(f"column {label!r} holds {len(classes)} distinct labels, but n_classes={n_classes}")
    return workers, classes


@dataclass
class Coded:
    labels: "object"  # deem.sparse.SparseLabels: one row per task, one voter per worker
    tasks: "object"   # pandas Index of task ids, one per row


def to_sparse(df, task: str, worker: str, label: str, workers: np.ndarray, classes: np.ndarray) -> Coded:
    """``df`` as labels stored sparse, in the given worker order and label coding (no dense matrix)."""
    from .sparse import SparseLabels

    task_codes, tasks, cols, codes = _codes(df, task, worker, label, workers, classes, check_duplicates=False)

    def duplicate(j):  # the build finds repeated pairs in O(labels); name one in the frame's terms
        pair = [v.item() if isinstance(v, np.generic) else v for v in (df[task].iloc[j], df[worker].iloc[j])]
        return (f"rows give more than one label for the same ({task}, {worker}) pair, for example {pair}; "
                "keep one label per pair")

    labels = SparseLabels._build(task_codes, cols, codes, len(tasks), len(workers), len(classes), None,
                                 duplicate=duplicate)
    return Coded(labels=labels, tasks=tasks)


def pivot(df, task: str, worker: str, label: str, workers: np.ndarray, classes: np.ndarray) -> Pivot:
    """Dense matrix of ``df`` in the given worker order and label coding."""
    task_codes, tasks, cols, codes = _codes(df, task, worker, label, workers, classes)
    matrix = np.full((len(tasks), len(workers)), -1, dtype=np.int32)
    matrix[task_codes, cols] = codes
    return Pivot(matrix=matrix, tasks=tasks)


def _codes(df, task, worker, label, workers, classes, check_duplicates=True):
    """``(task codes, task Index, worker codes, label codes)`` of ``df``, validated."""
    pd = _require_frame(df, [task, worker, label])
    dup = df.duplicated(subset=[task, worker], keep=False) if check_duplicates else None
    if dup is not None and dup.any():
        first = df.loc[dup, [task, worker]].iloc[0].tolist()
        raise ValueError(
            f"{int(dup.sum())} rows give more than one label for the same (task, worker) pair, "
            f"for example {first}; keep one label per pair"
        )
    worker_index = pd.Index(workers).infer_objects()  # integer ids: a typed index hashes ~20x faster
    class_index = pd.Index(classes)
    cols = _index_of(worker_index, df[worker])
    if (cols < 0).any():
        unknown = pd.unique(df[worker][cols < 0])[:5].tolist()
        raise ValueError(
            f"{int((cols < 0).sum())} rows come from workers the model was not fitted on, e.g. {unknown}; "
            "the model has no parameters for them (refit including them, or drop their rows)"
        )
    codes = _index_of(class_index, df[label])
    if (codes < 0).any():
        unknown = pd.unique(df[label][codes < 0])[:5].tolist()
        raise ValueError(f"labels {unknown} are not among the fitted classes {list(classes)[:20]}")
    try:
        task_codes, tasks = pd.factorize(df[task], sort=True)
    except TypeError:  # task ids of mixed, unorderable types
        task_codes, tasks = pd.factorize(df[task], sort=False)
    return (np.asarray(task_codes, dtype=np.int64), pd.Index(tasks, name=task), np.asarray(cols, dtype=np.int64),
            np.asarray(codes, dtype=np.int64))


def _index_of(index, column) -> np.ndarray:
    """``index.get_indexer(column)`` (-1 where absent), looking up each distinct value once: a column of
    strings repeats a few hundred ids over its rows, and factorizing it first is ~4x faster (adult2)."""
    import pandas as pd

    codes, uniques = pd.factorize(column)
    return index.get_indexer(uniques)[codes]


def union_coding(comm, workers: np.ndarray, classes: np.ndarray):
    """The coding every rank of a distributed fit uses: the union of the workers and of the classes each saw,
    sorted as ``learn_coding`` sorts them (a worker seen on one rank only still gets one column everywhere)."""
    seen = comm.gather(([_plain_id(w) for w in workers], [_plain_id(c) for c in classes]))
    all_workers = sorted(set().union(*(w for w, _ in seen)), key=_sort_key)
    all_classes = sorted(set().union(*(c for _, c in seen)), key=_sort_key)
    if all(isinstance(c, (int, np.integer)) for c in all_classes):
        return np.array(all_workers, dtype=object), np.arange(max(all_classes) + 1)
    return np.array(all_workers, dtype=object), np.array(all_classes, dtype=object)


def _plain_id(x):
    return x.item() if isinstance(x, np.generic) else x


def _sort_key(x):
    # Sort numbers numerically and everything else by its text, without mixing type errors.
    return (0, x, "") if isinstance(x, (int, float, np.integer, np.floating)) else (1, 0, str(x))
