"""Crowds at scale: time and peak memory of ``fit_long`` + ``predict_long`` against crowd-kit's Dawid–Skene.

    OMP_NUM_THREADS=1 python benchmarks/scale.py [--labels 0.5M,5M] [--per-task 5] [--classes 3]
        [--methods ours,ds,mv] [--peers-python /work/venvs/bench/bin/python] [--ds-timeout 600]
        [--datasets-dir ../shared/datasets] [--real rte,dog,face,product,web,ms,sp,adult2] [--json out.json]
        [--device cuda]

Each measurement runs in a fresh subprocess (``--run``), so its peak RSS (``ru_maxrss``) is its own: the
subprocess builds the long-format frame, then runs one method on it and reports the method's wall seconds,
the process's peak RSS and the RSS before the method ran (the frame itself), and the accuracy against
the generator's truth (real sets: against ``truth.csv``).

Synthetic crowd of L labels (``--labels``, e.g. ``5M``): L / 5 tasks, tasks / 50 workers, ``--per-task``
labels per task from distinct workers drawn with Zipf-like activity (worker j is picked with weight
1 / (j + 10)), K classes with a Dirichlet(2) class prior; worker accuracy Beta(4, 2) (a worker names the
true class with that probability, else a uniformly chosen other class); seed 0. Methods: ``ours`` =
``DEEM(random_state=0).fit_long(df)`` then ``predict_long(df)`` (it also reports the passes over the
labels its fit made and the seconds per label per pass); ``ds`` = crowd-kit 1.4.2
``DawidSkene(n_iter=100).fit_predict(df)`` in ``--peers-python``, stopped after ``--ds-timeout``
seconds; ``mv`` = crowd-kit ``MajorityVote``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_PEERS_PY = "/work/venvs/bench/bin/python"


def synthetic_crowd(n_tasks: int, n_workers: int, per_task: int, k: int, seed: int = 0, zipf: bool = False):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.full(k, 2.0))
    truth = rng.choice(k, n_tasks, p=prior)
    accuracy = rng.beta(4.0, 2.0, n_workers)
    activity = 1.0 / (np.arange(n_workers) + 10.0) if zipf else np.ones(n_workers)
    activity /= activity.sum()

    def draw(rows):
        return rng.choice(n_workers, (rows, per_task), p=activity)

    workers = draw(n_tasks)
    # distinct workers per task: redraw the tasks with a repeat
    for _ in range(50):
        s = np.sort(workers, axis=1)
        dup = (s[:, 1:] == s[:, :-1]).any(axis=1)
        if not dup.any():
            break
        workers[dup] = draw(int(dup.sum()))
    else:
        raise RuntimeError("could not draw distinct workers per task")
    task = np.repeat(np.arange(n_tasks), per_task)
    worker = workers.reshape(-1)
    y = truth[task]
    right = rng.random(task.shape[0]) < accuracy[worker]
    wrong = (y + rng.integers(1, k, task.shape[0])) % k
    df = pd.DataFrame({"task": task, "worker": worker, "label": np.where(right, y, wrong)})
    return df, pd.Series(truth, name="label")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _count_passes(ops):
    """Wrap the sparse E-step op to count the passes over the labels and their seconds: [passes, seconds]."""
    box = [0, 0.0]
    inner = ops.csr_evidence_pass

    def counted(*args, **kwargs):
        t = time.perf_counter()
        out = inner(*args, **kwargs)
        box[0] += 1
        box[1] += time.perf_counter() - t
        return out

    ops.csr_evidence_pass = counted
    return box


def run_one(spec: dict) -> dict:
    """In this process: build the frame, run the method, report (called with --run)."""
    import pandas as pd

    if spec["kind"] == "synthetic":
        df, truth = synthetic_crowd(spec["n_tasks"], spec["n_workers"], spec["per_task"], spec["classes"],
                                    zipf=True)
    else:
        folder = os.path.join(spec["datasets_dir"], spec["name"])
        df = pd.read_csv(os.path.join(folder, "answers.csv"))
        truth = pd.read_csv(os.path.join(folder, "truth.csv")).set_index("task")["label"]
    if spec["method"] == "ours":  # imports before the clock starts
        sys.path.insert(0, REPO)
        from deem import DEEM, ops

        passes = _count_passes(ops)
    else:
        from crowdkit.aggregation import DawidSkene, MajorityVote
    before = _rss_mb()
    t0 = time.perf_counter()
    if spec["method"] == "ours":
        model = DEEM(random_state=0, device=spec.get("device", "auto")).fit_long(df)
        fit_passes = passes[0]
        pred = model.predict_long(df)
        extra = {"solver_": model.solver_, "layout_": model.layout_, "passes": fit_passes,
                 "pass_seconds": passes[1]}
    elif spec["method"] == "ds":
        pred = DawidSkene(n_iter=100).fit_predict(df)
        extra = {}
    else:
        pred = MajorityVote().fit_predict(df)
        extra = {}
    seconds = time.perf_counter() - t0
    if spec["method"] == "ours":
        extra["ns_per_label_per_pass"] = 1e9 * passes[1] / max(passes[0], 1) / len(df)
    acc = float((pred.reindex(truth.index) == truth).mean())
    return {"seconds": seconds, "peak_rss_mb": _rss_mb(), "rss_before_mb": before, "accuracy": acc,
            "labels": int(len(df)), **extra}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default="0.5M,5M")
    ap.add_argument("--per-task", type=int, default=5)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--methods", default="ours,ds,mv")
    ap.add_argument("--ds-timeout", type=float, default=600.0)
    ap.add_argument("--peers-python", default=DEFAULT_PEERS_PY)
    ap.add_argument("--datasets-dir", default=os.path.join(REPO, "..", "shared", "datasets"))
    ap.add_argument("--real", default="rte,dog,face,product,web,ms,sp,adult2")
    ap.add_argument("--json")
    ap.add_argument("--device", default="auto", help="DEEM's device (cuda: the peers still run on the CPU)")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run:
        print(json.dumps(run_one(json.loads(args.run))))
        return 0
    specs = []
    for size in filter(None, args.labels.split(",")):
        labels = int(float(size.upper().rstrip("M")) * 1e6) if size.upper().endswith("M") else int(size)
        n = labels // args.per_task
        w = max(n // 50, args.per_task)
        specs.append({"kind": "synthetic", "name": f"{size} labels ({n}x{w})", "n_tasks": n, "n_workers": w,
                      "per_task": args.per_task, "classes": args.classes})
    for name in filter(None, args.real.split(",")):
        specs.append({"kind": "real", "name": name, "datasets_dir": os.path.abspath(args.datasets_dir)})
    results = {"meta": {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "device": args.device,
                        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
                        "threads": os.environ.get("OMP_NUM_THREADS"), "when": time.strftime("%Y-%m-%dT%H:%M:%S")},
               "runs": []}
    for spec in specs:
        for method in args.methods.split(","):
            py = sys.executable if method == "ours" else args.peers_python
            if method != "ours" and not os.path.exists(py):
                print(f"{spec['name']} {method}: skipped (no {py})", file=sys.stderr)
                continue
            run = dict(spec, method=method, device=args.device)
            try:
                proc = subprocess.run([py, os.path.abspath(__file__), "--run", json.dumps(run)], capture_output=True,
                                      text=True, timeout=args.ds_timeout if method == "ds" else None)
            except subprocess.TimeoutExpired:
                proc = None
            if proc is None:
                res = {"error": f"timeout after {args.ds_timeout:g} s"}
            elif proc.returncode != 0:
                res = {"error": proc.stderr[-2000:]}
            else:
                res = json.loads(proc.stdout.strip().splitlines()[-1])
            results["runs"].append({"set": spec["name"], "method": method, **res})
            print(f"{spec['name']} {method}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in res.items() if k != "error")
                  + (f" ERROR {res['error'][-300:]}" if "error" in res else ""), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
