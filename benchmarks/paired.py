"""How far apart are two aggregators really? A paired comparison on the crowds.

    OMP_NUM_THREADS=1 python benchmarks/paired.py [--datasets-dir ../shared/datasets]
        [--ours-config '{"solver": "exact"}'] [--peer ds] [--json FILE]

Issue 4's goal is a difference of mean accuracies (ours vs Dawid–Skene over the
datasets). Both methods answer the same gold tasks, so the comparison is paired: on
each dataset only the tasks where exactly one of them is right count. This script
fits ``DEEM`` (defaults, or ``--ours-config``) and a crowd-kit peer on every dataset
folder and prints, per dataset, those discordant counts with McNemar's exact p-value,
then a paired bootstrap (tasks resampled within each dataset) of the difference of
the mean accuracies: its standard deviation says which differences these files can
resolve at all. Needs crowd-kit (the ``bench`` extra).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from scipy.stats import binomtest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from accuracy import REPO, load_dataset, run_ours, run_peer  # noqa: E402


def correct(pred, gold) -> np.ndarray:
    """1.0 where the prediction matches the gold label, per gold task (in ``gold``'s order)."""
    pred = pred.copy()
    pred.index = pred.index.astype(str)
    return (pred.reindex(gold.index).to_numpy() == gold.to_numpy()).astype(np.float64)


def bootstrap_mean_difference(diffs: dict, draws: int, seed: int) -> np.ndarray:
    """Mean over datasets of the accuracy difference, tasks resampled within each dataset."""
    rng = np.random.default_rng(seed)
    total = np.zeros(draws)
    for d in diffs.values():
        for start in range(0, draws, 500):  # bounded memory on the large datasets
            stop = min(start + 500, draws)
            total[start:stop] += d[rng.integers(0, len(d), (stop - start, len(d)))].mean(axis=1)
    return total / len(diffs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--ours-config", default="{}", help="DEEM keyword arguments as JSON (default: defaults)")
    parser.add_argument("--peer", default="ds", choices=["mv", "ds", "glad", "mace"])
    parser.add_argument("--draws", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    params = json.loads(args.ours_config)

    names = sorted(n for n in os.listdir(args.datasets_dir)
                   if os.path.exists(os.path.join(args.datasets_dir, n, "answers.csv")))
    if not names:
        parser.error(f"no dataset folders with answers.csv under {args.datasets_dir}")
    diffs, rows = {}, []
    header = ("dataset", "gold", "ours", args.peer, "only ours", "only peer", "McNemar p")
    print("{:10s} {:>6s} {:>7s} {:>7s} {:>10s} {:>10s} {:>10s}".format(*header))
    for name in names:
        answers, gold, _ = load_dataset(os.path.join(args.datasets_dir, name))
        ours = correct(run_ours(params, answers, args.seed)[0], gold)
        peer = correct(run_peer(args.peer, answers, args.seed)[0], gold)
        only_ours, only_peer = int(((ours == 1) & (peer == 0)).sum()), int(((ours == 0) & (peer == 1)).sum())
        p = binomtest(only_ours, only_ours + only_peer).pvalue if only_ours + only_peer else 1.0
        diffs[name] = ours - peer
        rows.append(dict(dataset=name, gold=len(gold), ours=ours.mean(), peer=peer.mean(),
                         only_ours=only_ours, only_peer=only_peer, mcnemar_p=p))
        print(f"{name:10s} {len(gold):6d} {ours.mean():7.4f} {peer.mean():7.4f} "
              f"{only_ours:10d} {only_peer:10d} {p:10.3f}")

    boot = bootstrap_mean_difference(diffs, args.draws, args.seed)
    observed = float(np.mean([d.mean() for d in diffs.values()]))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    sd = float(boot.std())
    print(f"\nmean accuracy difference ours - {args.peer}: {observed:+.4f} "
          f"(paired bootstrap sd {sd:.4f}, 95% interval [{lo:+.4f}, {hi:+.4f}], {args.draws} draws)")
    print(f"a difference of 0.005 is {0.005 / sd:.1f} bootstrap sds")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(command=" ".join(sys.argv), ours_config=params, peer=args.peer, datasets=rows,
                           mean_difference=observed, bootstrap_sd=sd, interval=[float(lo), float(hi)]), fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
