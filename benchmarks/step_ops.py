"""Time the two ops of one ``solver='bayes'`` EM step on a real crowd, alone: the sparse evidence pass
and ``vb_update`` (with and without the bound's KL), best of 5 repeats of ``--calls`` calls.

    OMP_NUM_THREADS=2 python benchmarks/step_ops.py [--dataset ../shared/datasets/adult2] [--calls 200]

The parameters are random (seeded): the cost of a call does not depend on them.
"""
import argparse
import math
import os
import time

import pandas as pd
import torch

from deem import ops
from deem.sparse import SparseLabels


def best_ms(f, calls):
    f()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            f()
        runs.append((time.perf_counter() - t0) / calls * 1e3)
    return min(runs)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=os.path.join(here, "..", "..", "shared", "datasets", "adult2"))
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    df = pd.read_csv(os.path.join(args.dataset, "answers.csv"))
    items, _ = pd.factorize(df["task"])
    voters, _ = pd.factorize(df["worker"])
    labels = SparseLabels.from_triples(items, voters, df["label"].to_numpy())
    d, k = labels.n_classifiers, int(df["label"].max()) + 1
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(k, k, d, generator=g, dtype=torch.float64), 0)
    logpi = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    log_abstain = torch.log(torch.rand(d, k, generator=g, dtype=torch.float64) * 0.5)
    counts, mass = labels.evidence_pass(logp, logpi, log_abstain, True, False)[:2]
    log_prior = torch.tensor([0.0, math.log(0.2), math.log(0.1), math.log(100.0)], dtype=torch.float64)
    modelled = torch.zeros(d, dtype=torch.float64)
    modelled[: max(1, d // 100)] = 1.0
    print(f"{os.path.basename(os.path.normpath(args.dataset))}: {labels.n_rows} items, {d} voters, "
          f"{labels.n_labels} labels, K={k}, {torch.get_num_threads()} threads")
    t = best_ms(lambda: labels.evidence_pass(logp, logpi, log_abstain, True, False), args.calls)
    print(f"evidence pass        {t:.3f} ms")
    t = best_ms(lambda: ops.vb_update(counts, mass, log_prior, modelled, 1.0, 1e-3, 1e3, True, True), args.calls)
    print(f"vb_update, KL        {t:.3f} ms")
    t = best_ms(lambda: ops.vb_update(counts, mass, log_prior, modelled, 1.0, 1e-3, 1e3, False, False), args.calls)
    print(f"vb_update, no KL     {t:.3f} ms")


if __name__ == "__main__":
    main()
