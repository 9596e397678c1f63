"""The samplers on crowds stored sparse: ``solver='gwg'`` / ``'dlp'`` with ``layout='dense'`` against ``'sparse'``.

    OMP_NUM_THREADS=1 python benchmarks/sparse_samplers.py [--tasks 20000,200000] [--per-task 5]
        [--solvers gwg,dlp] [--hidden-dim 2] [--epochs 2] [--device cpu] [--json out.json]

Each case runs in a fresh subprocess (``--run``) so that its peak RSS is its own. A synthetic crowd of
``tasks`` tasks, tasks / 50 workers, ``--per-task`` labels a task from Zipf-like worker activity (as
``benchmarks/scale.py`` builds them), K = 3, is fitted by ``DEEM(solver=..., hidden_dim=..., epochs=...,
layout=..., random_state=0).fit(labels)`` then ``predict(labels)``, with the labels given as a
``SparseLabels`` (``layout='dense'`` densifies them: memory tasks x workers). Reported: fit and predict
seconds, seconds per epoch, peak RSS, accuracy, and whether the two layouts' parameters came out equal
(they should, bit for bit on the CPU). A dense case whose matrix would pass ``--dense-limit`` cells is
skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def run_one(spec: dict) -> dict:
    sys.path.insert(0, REPO)
    import numpy as np
    import torch

    from deem import DEEM
    from deem.sparse import SparseLabels
    from scale import synthetic_crowd

    df, truth = synthetic_crowd(spec["tasks"], max(spec["tasks"] // 50, 10), spec["per_task"], 3, zipf=True)
    labels = SparseLabels.from_triples(df.task.values, df.worker.values, df.label.values)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    t0 = time.perf_counter()
    model = DEEM(solver=spec["solver"], hidden_dim=spec["hidden_dim"], epochs=spec["epochs"], layout=spec["layout"],
                 device=spec["device"], random_state=0).fit(labels)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    pred = model.predict(labels)
    predict_s = time.perf_counter() - t1
    params = {p: getattr(model.model_, p).detach().cpu() for p in ("W", "b_v", "b_h")}
    if spec.get("save"):
        torch.save(params, spec["save"])
    return {"fit_seconds": fit_s, "predict_seconds": predict_s, "seconds_per_epoch": fit_s / spec["epochs"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "rss_before_mb": before,
            "accuracy": float((np.asarray(pred) == truth.values).mean()), "layout_": model.layout_,
            "labels": int(len(df)), "workers": int(labels.n_classifiers)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="20000,200000")
    ap.add_argument("--per-task", type=int, default=5)
    ap.add_argument("--solvers", default="gwg,dlp")
    ap.add_argument("--hidden-dim", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dense-limit", type=float, default=2e9)
    ap.add_argument("--json")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_one(json.loads(args.run))))
        return
    import tempfile

    import torch

    rows = []
    for tasks in (int(t) for t in args.tasks.split(",") if t):
        for solver in args.solvers.split(","):
            saved = {}
            for layout in ("dense", "sparse"):
                cells = tasks * max(tasks // 50, 10)
                if layout == "dense" and cells > args.dense_limit:
                    print(f"{tasks} tasks {solver} dense: skipped ({cells:.2g} cells)")
                    continue
                path = os.path.join(tempfile.mkdtemp(), "params.pt")
                spec = {"tasks": tasks, "per_task": args.per_task, "solver": solver, "hidden_dim": args.hidden_dim,
                        "epochs": args.epochs, "layout": layout, "device": args.device, "save": path}
                out = subprocess.run([sys.executable, __file__, "--run", json.dumps(spec)], capture_output=True,
                                     text=True)
                if out.returncode:
                    print(out.stderr[-2000:])
                    continue
                res = json.loads(out.stdout.strip().splitlines()[-1])
                saved[layout] = torch.load(path)
                row = {"tasks": tasks, "solver": solver, "layout": layout, **res}
                if len(saved) == 2:
                    row["same_parameters_as_dense"] = all(torch.equal(saved["dense"][p], saved["sparse"][p])
                                                          for p in saved["dense"])
                rows.append(row)
                print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
