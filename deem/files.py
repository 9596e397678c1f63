"""Files the command line reads and writes: long-format tables, dense label matrices, the research code's .mat.

* Long format (one row per label): CSV, TSV or Parquet with the task, worker and label columns.
* A dense matrix: ``.npy`` (``(N, D)`` integer labels, ``-1`` missing, or ``(N, K, D)`` soft labels), or a
  CSV/TSV/Parquet table without those columns, one column per classifier (a header row is optional).
* ``.mat`` (MATLAB, the original research code's files): the one 2-D or 3-D numeric array in the file, or
  the one named ``predictions``/``preds``/``L``/``X``/``labels``/``data`` when there are several.

Outputs are CSV, TSV or Parquet by extension. Every problem is a ``ValueError`` whose message names the
file and what is wrong with it (the CLI prints it on one line).
"""
from __future__ import annotations

import os
from typing import Tuple

import numpy as np

MAT_NAMES = ("predictions", "preds", "L", "X", "labels", "data")


def _ext(path: str) -> str:
    return os.path.splitext(str(path))[1].lower()


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")


def _read_parquet(path: str):
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install 'deem[parquet]')") from None


def read_input(path: str, task: str = "task", worker: str = "worker", label: str = "label") -> Tuple[str, object]:
    """``('long', DataFrame)`` or ``('dense', ndarray)`` from ``path`` (see the module)."""
    import pandas as pd

    _require_file(path)
    ext = _ext(path)
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path}: not a plain numeric .npy array ({e})") from None
        return "dense", _dense(arr, path)
    if ext == ".mat":
        return "dense", _dense(_read_mat(path), path)
    if ext in (".parquet", ".pq"):
        frame = _read_parquet(path)
    elif ext in (".csv", ".tsv", ".txt"):
        sep = "\t" if ext == ".tsv" else ","
        head = pd.read_csv(path, sep=sep, nrows=0)
        if {task, worker, label} <= set(head.columns):
            return "long", pd.read_csv(path, sep=sep)
        named = [c for c in (task, worker, label) if c in head.columns]
        if named:
            missing = [c for c in (task, worker, label) if c not in head.columns]
            raise ValueError(f"{path}: a long-format table needs the columns {task!r}, {worker!r}, {label!r}; "
                             f"it lacks {missing} (it has {list(head.columns)[:10]})")
        frame = pd.read_csv(path, sep=sep, header=None)
        if frame.shape[0] and not any(_numeric_row([v]) for v in frame.iloc[0]):
            frame = frame.iloc[1:]  # a header row of classifier names (no entry a number)
    else:
        raise ValueError(f"{path}: unknown file type {ext or '(none)'}; give .csv, .tsv, .parquet, .npy or .mat")
    if {task, worker, label} <= set(map(str, frame.columns)):
        return "long", frame
    return "dense", _dense(frame, path)


def _numeric_row(row) -> bool:
    try:
        np.asarray(row, dtype=np.float64)
        return True
    except (TypeError, ValueError):
        return False


def _dense(values, path: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: a dense label matrix must hold numbers (labels 0..K-1, -1 for missing); "
                         "found text") from None
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"{path}: a dense label matrix must be 2-D (items x classifiers) or 3-D soft labels "
                         f"(items x classes x classifiers); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: the matrix holds NaN or infinite entries (use -1 for a missing label)")
    if arr.ndim == 2:
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{path}: hard labels must be whole numbers (0..K-1, -1 for missing)")
        return arr.astype(np.int64)
    return arr


def _read_mat(path: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except Exception as e:  # scipy raises several types for a file that is not MATLAB's
        raise ValueError(f"{path}: not a readable .mat file ({e})") from None
    arrays = {k: v for k, v in content.items() if not k.startswith("__") and isinstance(v, np.ndarray)
              and v.dtype.kind in "iuf" and v.ndim in (2, 3) and v.size}
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    for name in MAT_NAMES:
        if name in arrays:
            return arrays[name]
    raise ValueError(f"{path}: expected one 2-D or 3-D numeric array (or one named {', '.join(MAT_NAMES)}); "
                     f"found {sorted(arrays) or 'none'}")


def write_table(frame, path: str) -> None:
    """``frame`` (a DataFrame) to CSV, TSV or Parquet, by ``path``'s extension."""
    ext = _ext(path)
    if ext in (".parquet", ".pq"):
        try:
            frame.to_parquet(path)
        except ImportError:
            raise ValueError(f"{path}: writing Parquet needs pyarrow (pip install 'deem[parquet]')") from None
    else:
        frame.to_csv(path, sep="\t" if ext == ".tsv" else ",")
