"""How far from its fixed point a fit stops, and at what cost, for a few stopping tolerances.

    OMP_NUM_THREADS=2 python benchmarks/stopping.py [--datasets-dir ../shared/datasets] [--sets web,adult2]
        [--tols 1e-8:1e-12,1e-6:1e-10,1e-6:1e-12] [--json out.json]

Each ``TOL:OBJ`` pair runs ``DEEM(random_state=0).fit_long(df)`` then ``predict_proba_long(df)`` with every
SQUAREM run of the fit stopped when one EM step moves no probability by ``TOL`` or the objective moves by
less than ``OBJ`` (relative) between two checks -- the solvers' ``tol`` and ``OBJECTIVE_RTOL * tol`` of
:mod:`deem.solvers.squarem` (the defaults are 1e-8 and 1e-12), set here by wrapping ``squarem``. It reports
the EM evaluations the fit spent, the consensus accuracy against ``truth.csv``, and the largest difference
of any task's posterior from that of a reference fit run to 1e-11 and 1e-15. A synthetic Dawid–Skene crowd
(``deem.datasets.dawid_skene``, 2,000 items, 8 voters, K = 3, 30% missing) is measured too (accuracy
against its truth).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pandas as pd

import deem.solvers.squarem as squarem_module
from deem import DEEM
from deem.datasets import dawid_skene

HERE = os.path.dirname(os.path.abspath(__file__))
_inner = squarem_module.squarem
_setting: dict = {}
_evaluations = [0]


def _squarem(em_step, theta, normalize, max_iter, tol, **kwargs):
    """``squarem`` with the tolerances of ``_setting`` (when set), counting the EM evaluations."""
    saved = squarem_module.OBJECTIVE_RTOL
    if _setting:
        tol = _setting["tol"]
        squarem_module.OBJECTIVE_RTOL = _setting["obj"] / tol
    try:
        out = _inner(em_step, theta, normalize, max_iter, tol, **kwargs)
    finally:
        squarem_module.OBJECTIVE_RTOL = saved
    _evaluations[0] += out[3]
    return out


squarem_module.squarem = _squarem  # best_of_starts looks the name up at each call


def cases(datasets_dir: str, names):
    for name in names:
        folder = os.path.join(datasets_dir, name)
        df = pd.read_csv(os.path.join(folder, "answers.csv"))
        truth = pd.read_csv(os.path.join(folder, "truth.csv")).set_index("task")["label"]
        yield name, df, truth
    x, y = dawid_skene(n_samples=2000, n_classifiers=8, n_classes=3, missing_rate=0.3, random_state=11)
    n, d = x.shape
    rows, cols = np.nonzero(x >= 0)
    df = pd.DataFrame({"task": rows, "worker": cols, "label": x[rows, cols]})
    yield "synthetic-ds", df, pd.Series(np.asarray(y), index=np.arange(n))


def run(df, truth, tol: float, obj: float):
    _setting.clear()
    _setting.update(tol=tol, obj=obj)
    _evaluations[0] = 0
    model = DEEM(random_state=0).fit_long(df)
    proba = model.predict_proba_long(df)
    pred = proba.idxmax(axis=1)
    accuracy = float((pred.reindex(truth.index) == truth).mean())
    return proba.to_numpy(), _evaluations[0], accuracy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets-dir", default=os.path.join(HERE, "..", "..", "shared", "datasets"))
    ap.add_argument("--sets", default="web,adult2")
    ap.add_argument("--tols", default="1e-8:1e-12,1e-6:1e-10,1e-6:1e-12")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    settings = [tuple(float(v) for v in pair.split(":")) for pair in args.tols.split(",") if pair]
    out = {}
    for name, df, truth in cases(args.datasets_dir, [s for s in args.sets.split(",") if s]):
        reference, ref_evals, ref_acc = run(df, truth, 1e-11, 1e-15)
        rows = []
        for tol, obj in settings:
            proba, evals, acc = run(df, truth, tol, obj)
            gap = float(np.abs(proba - reference).max())
            rows.append({"tol": tol, "objective_rtol": obj, "evaluations": evals, "accuracy": acc,
                         "max_posterior_gap": gap})
            print(f"{name}: tol {tol:g} objective {obj:g}: {evals} evaluations (reference {ref_evals}), "
                  f"accuracy {acc:.4f} (reference {ref_acc:.4f}), largest posterior gap {gap:.1e}", flush=True)
        out[name] = {"reference_evaluations": ref_evals, "reference_accuracy": ref_acc, "settings": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
