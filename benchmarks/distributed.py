"""One fit across gloo processes on this machine: time, peak memory per rank and bytes all-reduced per pass.

    OMP_NUM_THREADS=1 python benchmarks/distributed.py [--labels 5M,50M] [--procs 1,2] [--json out.json]

The synthetic crowds of ``benchmarks/scale.py`` (labels / 5 tasks, tasks / 50 workers, Zipf-like worker
activity, K = 3, seed 0) are generated once per size and saved to a temporary folder. ``procs = 1`` runs
``DEEM(random_state=0).fit_long(df)`` + ``predict_long(df)`` in one plain process; ``procs = P > 1`` runs
``torchrun --standalone --nproc_per_node=P`` with every rank reading the rows of its own contiguous block
of tasks and fitting with ``distributed=True`` (gloo), then predicting its block. Each process has one
thread. Reported: wall seconds (the slowest rank, from a barrier after loading to the end of predict),
each rank's peak RSS, the passes of the fit, the bytes each rank all-reduced (float64 sums of the fit) in
all and per pass, and accuracy over all tasks.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_rank(folder: str) -> None:
    """One process (under torchrun or alone): fit its block of tasks, write its figures."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, REPO)
    from deem import DEEM, distributed, ops

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    arrays = np.load(os.path.join(folder, "crowd.npz"))
    task, worker, label, truth = arrays["task"], arrays["worker"], arrays["label"], arrays["truth"]
    n_tasks = truth.shape[0]
    lo, hi = rank * n_tasks // world, (rank + 1) * n_tasks // world
    rows = slice(int(np.searchsorted(task, lo)), int(np.searchsorted(task, hi)))  # tasks are sorted
    df = pd.DataFrame({"task": task[rows], "worker": worker[rows], "label": label[rows]})
    del arrays, task, worker, label
    reduced = [0]
    passes = [0]
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        inner_sum = distributed.Comm.sum

        def counted(self, t):
            reduced[0] += t.numel() * 8
            return inner_sum(self, t)

        distributed.Comm.sum = counted
        dist.barrier()
    inner_pass = ops.csr_evidence_pass

    def counted_pass(*args, **kwargs):
        passes[0] += 1
        return inner_pass(*args, **kwargs)

    ops.csr_evidence_pass = counted_pass
    t0 = time.perf_counter()
    model = DEEM(random_state=0, distributed=world > 1).fit_long(df)
    fit_passes = passes[0]
    pred = model.predict_long(df)
    seconds = time.perf_counter() - t0
    correct = int((pred.to_numpy() == truth[pred.index.to_numpy()]).sum())
    out = {"rank": rank, "world": world, "seconds": seconds, "peak_rss_mb": _rss_mb(), "passes": fit_passes,
           "reduced_bytes": reduced[0], "correct": correct, "tasks": int(len(pred)), "labels": int(len(df))}
    with open(os.path.join(folder, f"rank{rank}-of{world}.json"), "w") as f:
        json.dump(out, f)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


FOLDER_VAR = "DEEM_DISTRIBUTED_BENCH_FOLDER"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default="5M,50M")
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    import numpy as np
    from scale import synthetic_crowd

    env = dict(os.environ, OMP_NUM_THREADS="1")
    results = {"meta": {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
                        "when": time.strftime("%Y-%m-%dT%H:%M:%S")}, "runs": []}
    for size in filter(None, args.labels.split(",")):
        labels = int(float(size.upper().rstrip("M")) * 1e6) if size.upper().endswith("M") else int(size)
        n = labels // 5
        with tempfile.TemporaryDirectory() as folder:
            df, truth = synthetic_crowd(n, max(n // 50, 5), 5, 3, zipf=True)
            np.savez(os.path.join(folder, "crowd.npz"), task=df.task.to_numpy(), worker=df.worker.to_numpy(),
                     label=df.label.to_numpy(), truth=truth.to_numpy())
            del df, truth
            for procs in (int(p) for p in args.procs.split(",")):
                script = [os.path.abspath(__file__)]
                env[FOLDER_VAR] = folder  # torchrun would read a --flag after the script as its own
                cmd = [sys.executable, *script] if procs == 1 else [
                    sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                    *script]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{size} x{procs}: ERROR {proc.stderr[-1500:]}", file=sys.stderr)
                    continue
                ranks = [json.load(open(os.path.join(folder, f"rank{r}-of{procs}.json"))) for r in range(procs)]
                row = {"set": f"{size} labels", "procs": procs, "seconds": max(r["seconds"] for r in ranks),
                       "peak_rss_mb_per_rank": [round(r["peak_rss_mb"], 1) for r in ranks],
                       "passes": ranks[0]["passes"], "reduced_bytes_per_rank": ranks[0]["reduced_bytes"],
                       "reduced_bytes_per_pass": ranks[0]["reduced_bytes"] / max(ranks[0]["passes"], 1),
                       "accuracy": sum(r["correct"] for r in ranks) / sum(r["tasks"] for r in ranks),
                       "labels_per_rank": [r["labels"] for r in ranks]}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    if os.environ.get(FOLDER_VAR):  # a process of one run (alone or under torchrun)
        run_rank(os.environ[FOLDER_VAR])
        sys.exit(0)
    sys.exit(main())
