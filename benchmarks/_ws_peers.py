"""Run peer label models (Snorkel, crowd-kit) on one weak-supervision label matrix, as black boxes.

Run with the interpreter of a separate environment that has ``snorkel`` and/or ``crowd-kit``
installed (never this repository's)::

    /work/venvs/bench/bin/python -I benchmarks/_ws_peers.py L.npy --methods snorkel,ds,mace,mv \\
        --n-classes K --seed 0 --out result.json

``L.npy``: a dense integer matrix ``(n_items, n_lfs)``, labels ``0..K-1``, ``-1`` = abstain.

Methods:

- ``snorkel``: ``LabelModel(cardinality=K).fit(L, n_epochs=500, seed=seed)``; ``pred`` is the argmax of
  ``predict_proba(L)``, ties to the smallest label.
- ``ds``, ``mace``, ``mv``: crowd-kit's ``DawidSkene(n_iter=100)``, ``MACE(random_state=seed)`` and
  ``MajorityVote()`` on the long table of the votes (task = row, worker = column); ``proba`` is
  their ``probas_`` with columns ``0..K-1`` (rows with no vote get ``1/K``).

``--threads`` (default 1, as in ``_original_runner.py``) sets ``torch.set_num_threads`` for Snorkel;
``0`` leaves torch's default. Every method gives ``pred = -1`` on rows with no vote at all.

The result, written to ``--out`` (or printed), is ``{"ok": true, "results": {method: {"pred": [...],
"proba": [[...]] or null, "seconds": fit + predict wall time}}}``; a method that fails, or does not
import here, gets ``{"error": "..."}`` instead, and the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback

import numpy as np

CROWDKIT = {"ds": ("DawidSkene", {"n_iter": 100}), "mace": ("MACE", {}), "mv": ("MajorityVote", {})}


def run_snorkel(L: np.ndarray, k: int, seed: int, threads: int):
    import torch
    from snorkel.labeling.model import LabelModel

    if threads > 0:
        torch.set_num_threads(threads)

    t0 = time.perf_counter()
    model = LabelModel(cardinality=k, verbose=False)
    model.fit(L, n_epochs=500, seed=seed)
    proba = np.asarray(model.predict_proba(L), dtype=float)
    seconds = time.perf_counter() - t0
    return proba.argmax(axis=1), proba, seconds


def run_crowdkit(name: str, L: np.ndarray, k: int, seed: int):
    import pandas as pd
    from crowdkit import aggregation

    cls_name, kwargs = CROWDKIT[name]
    if name == "mace":
        kwargs = {**kwargs, "random_state": seed}
    rows, cols = np.nonzero(L >= 0)
    answers = pd.DataFrame({"task": rows, "worker": cols, "label": L[rows, cols]})
    t0 = time.perf_counter()
    model = getattr(aggregation, cls_name)(**kwargs)
    labels = model.fit_predict(answers)
    seconds = time.perf_counter() - t0
    pred = labels.reindex(range(L.shape[0])).fillna(-1).to_numpy(dtype=int)
    probas = getattr(model, "probas_", None)
    proba = None
    if probas is not None:
        proba = np.array(probas.reindex(index=range(L.shape[0]), columns=range(k)).fillna(0.0), dtype=float)
        proba[pred < 0] = 1.0 / k
    return pred, proba, seconds


def run_method(name: str, L: np.ndarray, k: int, seed: int, threads: int = 1) -> dict:
    if name == "snorkel":
        pred, proba, seconds = run_snorkel(L, k, seed, threads)
    elif name in CROWDKIT:
        pred, proba, seconds = run_crowdkit(name, L, k, seed)
    else:
        raise ValueError(f"unknown method {name!r} (known: snorkel, {', '.join(CROWDKIT)})")
    pred = np.where((L >= 0).any(axis=1), pred, -1)
    return {"pred": [int(p) for p in pred], "proba": None if proba is None else proba.tolist(), "seconds": seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("L", help=".npy label matrix (n_items, n_lfs), -1 = abstain")
    ap.add_argument("--methods", default="snorkel,ds,mace,mv", help="comma-separated method names")
    ap.add_argument("--n-classes", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for snorkel (default 1; 0: torch's default)")
    ap.add_argument("--out", help="write the JSON result here instead of stdout")
    args = ap.parse_args(argv)
    try:
        L = np.asarray(np.load(args.L), dtype=np.int64)
        results = {}
        for name in filter(None, (m.strip() for m in args.methods.split(","))):
            try:
                with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the result
                    results[name] = run_method(name, L, args.n_classes, args.seed, args.threads)
            except Exception as exc:  # noqa: BLE001 -- one failing method must not sink the others
                results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        result, status = {"ok": True, "results": results}, 0
    except Exception as exc:  # noqa: BLE001 -- report, never crash the caller
        result, status = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 1
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
