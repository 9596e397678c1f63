"""Crowds with few labels per task: where should the fit stop? A study behind ``anchor='auto'``'s rule.

    OMP_NUM_THREADS=1 python benchmarks/few_labels_study.py [--crowdkit-python /path/to/python] [--json out.json]

Each crowd of ``--data-dir`` is cut to ``--per`` labels per task (a random subset of each task's labels,
``--seeds`` draws), and these consensuses are scored on the gold tasks:

* ``mv``: majority vote of the cut, ties to the smallest label;
* ``converged``: ``DEEM(missing='ignorable', anchor='none')``, EM to convergence;
* ``anchored``: ``DEEM(missing='ignorable', anchor='majority')``, one update from the majority vote;
* ``default``: ``DEEM()``, whatever ``missing='auto'`` and ``anchor='auto'`` decide;
* ``ds``: crowd-kit's Dawid-Skene (100 iterations), if ``--crowdkit-python`` (or this interpreter) has it;
* one more column per ``--ours-config NAME=JSON``: ``DEEM(**JSON)``.

``--per`` beyond a crowd's labels per task keeps all of them (``--per 1000`` is the whole crowd).

``--synthetic`` runs instead 30 crowds drawn from the Dawid-Skene model itself (``deem.datasets.dawid_skene``,
about 2.1 labels a row: K=2, 3, 5 with 10, 20, 30 workers, ten seeds each), where the model holds, and
prints ``converged``, ``anchored`` and majority vote there.

``anchor='auto'`` iterates under ignorable missingness only where at most half the rows carry fewer
than three labels (:mod:`deem.anchor`). The printed table gives each method's mean over the seeds, and
the last lines the means over the crowds and how many cuts fall more than a point below majority vote.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import accuracy as acc  # noqa: E402

DS_RUNNER = """
import sys, pandas as pd
from crowdkit.aggregation import DawidSkene
answers = pd.read_csv(sys.argv[1], dtype={"task": str, "worker": str})
DawidSkene(n_iter=100).fit_predict(answers).rename("label").to_csv(sys.argv[2])
"""


def cut(answers: pd.DataFrame, per: int, seed: int) -> pd.DataFrame:
    """``per`` labels of each task (all of a task's labels where it has fewer), drawn at random."""
    return answers.sample(frac=1.0, random_state=seed).groupby("task", sort=False).head(per)


def ours(answers: pd.DataFrame, **params):
    from deem import DEEM

    with contextlib.redirect_stdout(io.StringIO()):
        model = DEEM(random_state=0, **params).fit_long(answers)
    return model.predict_long(answers), model


def dawid_skene(python: str, answers: pd.DataFrame):
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "answers.csv"), os.path.join(tmp, "pred.csv")
        answers.to_csv(src, index=False)
        subprocess.run([python, "-I", "-c", DS_RUNNER, src, out], check=True, stdout=subprocess.DEVNULL)
        pred = pd.read_csv(out, dtype={"task": str}).set_index("task")["label"]
    return pred


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(os.path.dirname(HERE), "..", "shared", "datasets"))
    parser.add_argument("--per", default="1,2,3", help="labels kept per task, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--crowdkit-python", default=None, help="interpreter with crowd-kit (for ds)")
    parser.add_argument("--ours-config", action="append", default=[],
                        help='NAME=JSON: one more column, DEEM(**JSON), e.g. exact=\'{"solver": "exact"}\'')
    parser.add_argument("--json", default=None, help="write every cut's scores here")
    parser.add_argument("--load", default=None, help="render the scores of an earlier --json; run nothing")
    parser.add_argument("--synthetic", action="store_true", help="Dawid-Skene crowds instead (docstring)")
    args = parser.parse_args(argv)
    if args.synthetic:
        synthetic()
        return 0
    if args.load:
        with open(args.load) as f:
            render(json.load(f)["rows"])
        return 0
    pers = [int(p) for p in args.per.split(",")]
    extra = dict(cfg.split("=", 1) for cfg in args.ours_config)
    extra = {name: json.loads(params) for name, params in extra.items()}
    seeds = [int(s) for s in args.seeds.split(",")]
    python = args.crowdkit_python or (sys.executable if acc.crowdkit_here() else None)
    names = sorted(d for d in os.listdir(args.data_dir) if os.path.exists(os.path.join(args.data_dir, d, "answers.csv")))
    rows = []
    for name in names:
        answers, gold, _ = acc.load_dataset(os.path.join(args.data_dir, name))
        for per in pers:
            for seed in seeds:
                part = cut(answers, per, seed)
                row = {"set": name, "per": per, "seed": seed,
                       "mv": acc.accuracy(acc.majority_vote(part, ties="smallest"), gold)}
                for key, params in (("converged", {"missing": "ignorable", "anchor": "none"}),
                                    ("anchored", {"missing": "ignorable", "anchor": "majority"}), ("default", {}),
                                    *extra.items()):
                    pred, model = ours(part, **params)
                    row[key] = acc.accuracy(pred, gold)
                    if key == "default":
                        row["default_reading"] = f"{model.missing_}/{model.anchor_}"
                        row["few_share"] = model.anchor_few_labels_share_
                if python:
                    row["ds"] = acc.accuracy(dawid_skene(python, part), gold)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "rows": rows}, f, indent=1)
    render(rows)
    return 0


def synthetic() -> None:
    """Converged against anchored where the model holds: crowds drawn from it, about 2.1 labels a row."""
    from deem import DEEM
    from deem.datasets import dawid_skene

    scores, labels = [], []
    for seed in range(10):
        for k, d, n in ((2, 10, 1000), (3, 20, 2000), (5, 30, 3000)):
            X, y = dawid_skene(n_samples=n, n_classifiers=d, n_classes=k, missing_rate=1 - 1.2 / d, random_state=seed)
            labels.append((X >= 0).sum(axis=1).mean())
            row = [float((DEEM(missing="ignorable", anchor=a).fit(X).predict(X) == y).mean())
                   for a in ("none", "majority")]
            counts = np.stack([(X == c).sum(axis=1) for c in range(k)], axis=1)
            row.append(float((counts.argmax(axis=1) == y).mean()))
            scores.append(row)
    s = np.array(scores)
    print(f"{len(s)} Dawid-Skene crowds, {np.mean(labels):.2f} labels a row: converged {s[:, 0].mean():.4f}, "
          f"anchored {s[:, 1].mean():.4f}, majority vote {s[:, 2].mean():.4f}; converged above anchored on "
          f"{int((s[:, 0] > s[:, 1]).sum())}, below on {int((s[:, 0] < s[:, 1]).sum())}")


def render(rows: list) -> None:
    """The mean of each method over the seeds, per crowd and labels per task; then the means over the crowds."""
    df = pd.DataFrame(rows)
    fixed = ("mv", "converged", "anchored", "default", "ds", "seed", "per", "set", "default_reading", "few_share")
    methods = [m for m in ("mv", "converged", "anchored", "default", "ds") if m in df]
    methods += [c for c in df.columns if c not in fixed]
    table = df.groupby(["per", "set"])[methods].mean()
    print("| labels per task | crowd | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for (per, name), means in table.iterrows():
        print(f"| {per} | {name} | " + " | ".join(f"{means[m]:.4f}" for m in methods) + " |")
    for per, group in df.groupby("per"):
        means = group[methods].mean()
        below = {m: int((group[m] < group["mv"] - 0.01).sum()) for m in methods if m != "mv"}
        print(f"{per} per task, {len(group)} cuts: means " + ", ".join(f"{m} {means[m]:.4f}" for m in methods)
              + "; cuts > 1 pt below mv: " + ", ".join(f"{m} {n}" for m, n in below.items()))
        readings = group["default_reading"].value_counts().to_dict()
        print(f"  the default read them as {readings}")


if __name__ == "__main__":
    raise SystemExit(main())
