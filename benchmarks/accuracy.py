"""Accuracy of DEEM and its peers on real crowdsourcing datasets.

    python benchmarks/accuracy.py [--datasets-dir ../shared/datasets] [--datasets rte,dog]
        [--methods mv,ds,glad,mmsr,mace,original,original-auto,ours] [--seeds 0,1,2]
        [--original-python /work/venvs/deem020/bin/python]
        [--crowdkit-python /work/venvs/bench/bin/python]
        [--ours-config NAME=JSON ...] [--json out.json] [--load earlier.json ...]
        [--write-results benchmarks/RESULTS.md]

Each dataset folder holds ``answers.csv`` (task,worker,label; labels 0..K-1) and
``truth.csv`` (task,label). Accuracy is measured on the tasks with a gold label (a task
with no prediction counts as wrong); time is the wall time of fitting and predicting
(for the original: its ``fit`` + ``predict`` as timed inside the runner, interpreter
start-up and imports excluded). Stochastic methods run once per seed and report the mean
(± standard deviation); deterministic ones run once.

Methods:

- ``mv``: crowd-kit ``MajorityVote``. Ties: crowd-kit takes ``idxmax`` over the columns of
  ``answers[["task", "label"]].value_counts().unstack("label")``, whose order depends on
  pandas: with pandas 3.x the labels come in order of first appearance in the answers
  (row order of answers.csv), with pandas 2.x sorted. So a tie goes to the label seen
  first in the data under pandas 3 (what the datasets README measured), to the smallest
  under pandas 2. ``majority_vote`` below implements both; each mv run records whether
  crowd-kit agreed with the first-seen rule and the accuracy under the smallest-label rule.
- ``ds``: ``DawidSkene(n_iter=100)``; ``glad``: ``GLAD()``; ``mmsr``: ``MMSR(random_state=seed)``;
  ``mace``: ``MACE(random_state=seed)`` (crowd-kit defaults otherwise; MMSR and MACE are
  stochastic, their default seed is 0).
- ``original`` / ``original-auto``: ``deem==0.2.0`` ``DEEM(n_classes=K, random_state=seed)``
  with its defaults / with ``auto_hyperparameters=True``, through ``_original_runner.py``
  in the interpreter given by ``--original-python``; the long answers become a dense
  task × worker matrix with -1 for missing, and predictions are aligned with its own
  ``predict(X, align_to=X)`` (Hungarian matching to the majority vote).
- ``ours``: ``from deem import DEEM``; ``DEEM(random_state=seed, **params).fit_long(answers)``
  then ``predict_long(answers)`` (a Series indexed by task). ``--ours-config NAME=JSON``
  adds named parameter sets (default: one, ``ours`` = ``{}``).

crowd-kit runs in this interpreter if it imports here, else in ``--crowdkit-python``
(this script again, as a subprocess). ``--json`` is rewritten after every result, so a
long run can be followed and resumed: ``--load`` merges earlier results and methods
already there for a dataset are skipped unless ``--rerun``.
``--write-results`` replaces the section between ``<!-- accuracy:start -->`` and
``<!-- accuracy:end -->`` in that file (appending it if absent).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RUNNER = os.path.join(HERE, "_original_runner.py")
DEFAULT_DATASETS = os.path.join(REPO, "..", "shared", "datasets")
START, END = "<!-- accuracy:start -->", "<!-- accuracy:end -->"

PEERS = ["mv", "ds", "glad", "mmsr", "mace"]
ORIGINALS = ["original", "original-auto"]
ALL_METHODS = PEERS + ORIGINALS + ["ours"]
STOCHASTIC = {"mmsr", "mace", "original", "original-auto"}  # and every ours config
LABELS = {"mv": "majority vote", "ds": "Dawid–Skene", "glad": "GLAD", "mmsr": "M-MSR",
          "mace": "MACE", "original": "deem 0.2.0 defaults",
          "original-auto": "deem 0.2.0 auto_hyperparameters"}


# ------------------------------------------------------------------------------ data
def load_dataset(folder: str):
    answers = pd.read_csv(os.path.join(folder, "answers.csv"), dtype={"task": str, "worker": str})
    truth = pd.read_csv(os.path.join(folder, "truth.csv"), dtype={"task": str})
    answers["label"] = answers["label"].astype(np.int64)
    gold = truth.set_index("task")["label"].astype(np.int64)
    n_classes = int(max(answers["label"].max(), gold.max())) + 1
    return answers[["task", "worker", "label"]], gold, n_classes


def to_wide(answers: pd.DataFrame):
    """Long answers → (tasks, int64 matrix tasks × workers with -1 missing)."""
    tasks = np.sort(answers["task"].unique())
    workers = np.sort(answers["worker"].unique())
    ti = pd.Index(tasks).get_indexer(answers["task"])
    wi = pd.Index(workers).get_indexer(answers["worker"])
    X = np.full((len(tasks), len(workers)), -1, dtype=np.int64)
    X[ti, wi] = answers["label"].to_numpy()
    return tasks, X


def majority_vote(answers: pd.DataFrame, ties: str = "first-seen") -> pd.Series:
    """Majority vote per task; ties to the label seen first in ``answers`` or to the smallest."""
    tasks, X = to_wide(answers)
    labels = np.sort(answers["label"].unique())
    if ties == "first-seen":
        order = np.asarray(list(dict.fromkeys(answers["label"].tolist())))
    elif ties == "smallest":
        order = labels
    else:
        raise ValueError(ties)
    counts = np.stack([(X == c).sum(axis=1) for c in order], axis=1)
    return pd.Series(order[counts.argmax(axis=1)], index=tasks)


def accuracy(pred: pd.Series, gold: pd.Series) -> float:
    pred = pd.Series(pred)
    pred.index = pred.index.astype(str)
    aligned = pred.reindex(gold.index)
    return float((aligned.to_numpy() == gold.to_numpy()).mean())


# ----------------------------------------------------------------------------- peers
def run_peer(method: str, answers: pd.DataFrame, seed: int):
    from crowdkit import aggregation as A
    model = {
        "mv": lambda: A.MajorityVote(),
        "ds": lambda: A.DawidSkene(n_iter=100),
        "glad": lambda: A.GLAD(),
        "mmsr": lambda: A.MMSR(random_state=seed),
        "mace": lambda: A.MACE(random_state=seed),
    }[method]()
    t0 = time.perf_counter()
    pred = model.fit_predict(answers)
    return pred, time.perf_counter() - t0


def crowdkit_here() -> bool:
    try:
        import crowdkit.aggregation  # noqa: F401
        return True
    except ImportError:
        return False


# -------------------------------------------------------------------------- original
def run_original(python: str, answers: pd.DataFrame, n_classes: int, seed: int, auto: bool,
                 threads, tmpdir: str, timeout=None):
    tasks, X = to_wide(answers)
    x_path = os.path.join(tmpdir, "X.npy")
    pred_path = os.path.join(tmpdir, "pred.npy")
    out = os.path.join(tmpdir, "result.json")
    for p in (pred_path, out):
        if os.path.exists(p):
            os.remove(p)
    np.save(x_path, X)
    params = {"n_classes": n_classes, "random_state": seed, "device": "cpu"}
    if auto:
        params["auto_hyperparameters"] = True
    cfg = {"params": params, "threads": threads, "align_to": "self", "predictions_out": pred_path}
    try:
        proc = subprocess.run([python, "-I", RUNNER, x_path, json.dumps(cfg), "--out", out],
                              cwd=tmpdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"timed out after {timeout} s") from err
    try:
        with open(out) as f:
            res = json.load(f)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"runner exited {proc.returncode}: {proc.stderr[-1500:]}") from err
    if not res.get("ok"):
        raise RuntimeError(res.get("error", "runner failed"))
    pred = pd.Series(np.load(pred_path), index=tasks)
    extra = {"epochs": res.get("epochs"), "params": res.get("params")}
    return pred, res["fit_seconds"] + res["predict_seconds"], extra


# ------------------------------------------------------------------------------ ours
def run_ours(params: dict, answers: pd.DataFrame, seed: int):
    try:
        from deem import DEEM
    except ImportError:
        sys.path.insert(0, REPO)
        from deem import DEEM
    model = DEEM(**{"random_state": seed, **params})
    t0 = time.perf_counter()
    model.fit_long(answers)
    pred = model.predict_long(answers)
    return pred, time.perf_counter() - t0


# ----------------------------------------------------------------------------- table
def summarize(per_seed: list) -> dict:
    accs = [r["accuracy"] for r in per_seed]
    secs = [r["seconds"] for r in per_seed]
    return {"accuracy": statistics.mean(accs),
            "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "seconds": statistics.mean(secs), "n_runs": len(accs), "runs": per_seed}


def render_table(results: dict, datasets: list, methods: list) -> str:
    methods = [m for m in methods if any(m in results.get(d, {}) for d in datasets)]
    head = "| dataset | " + " | ".join(LABELS.get(m, m) for m in methods) + " |"
    lines = [head, "|---|" + "---|" * len(methods)]
    for d in datasets:
        cells = []
        for m in methods:
            r = results.get(d, {}).get(m)
            if r is None:
                cells.append("")
            elif "error" in r:
                cells.append(f"error: {r['error'][:60]}")
            else:
                spread = f" ±{r['accuracy_std']:.4f}" if r["n_runs"] > 1 else ""
                runs = f", n={r['n_runs']}" if r["n_runs"] > 1 or m in STOCHASTIC or m not in LABELS else ""
                cells.append(f"{r['accuracy']:.4f}{spread} ({r['seconds']:.2f} s{runs})")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_section(path: str, body: str) -> None:
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    section = f"{START}\n{body}\n{END}"
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="DEEM accuracy on crowdsourcing datasets")
    ap.add_argument("--datasets-dir", default=DEFAULT_DATASETS)
    ap.add_argument("--datasets", help="comma-separated folder names (default: every folder)")
    ap.add_argument("--methods", default=",".join(ALL_METHODS),
                    help=f"comma-separated, from {','.join(ALL_METHODS)}")
    ap.add_argument("--seeds", default="0,1,2", help="seeds for stochastic methods")
    ap.add_argument("--original-python", help="interpreter with deem==0.2.0 (needed by original*)")
    ap.add_argument("--crowdkit-python", help="interpreter with crowd-kit, if this one lacks it")
    ap.add_argument("--original-timeout", type=float, help="seconds per original run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the original (0: default)")
    ap.add_argument("--ours-config", action="append", default=[],
                    help='NAME=JSON params of our DEEM, e.g. ours-gpu=\'{"device": "cuda"}\'')
    ap.add_argument("--json", help="write (and keep updating) all results here")
    ap.add_argument("--load", action="append", default=[], help="merge results of an earlier --json")
    ap.add_argument("--rerun", action="store_true", help="rerun methods already loaded")
    ap.add_argument("--render-only", action="store_true",
                    help="run nothing: print (and --write-results) the --load'ed results")
    ap.add_argument("--write-results", help="markdown file whose accuracy section is replaced")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    ours = {}
    for spec in args.ours_config:
        name, _, js = spec.partition("=")
        ours[name] = json.loads(js or "{}")
    if "ours" in methods:
        methods.remove("ours")
        ours = ours or {"ours": {}}
        methods += list(ours)
    unknown = [m for m in methods if m not in PEERS + ORIGINALS and m not in ours]
    if unknown:
        ap.error(f"unknown methods: {unknown}")
    seeds = [int(s) for s in args.seeds.split(",")]
    folders = sorted(d for d in os.listdir(args.datasets_dir)
                     if os.path.isfile(os.path.join(args.datasets_dir, d, "answers.csv")))
    if args.datasets:
        wanted = args.datasets.split(",")
        missing = [d for d in wanted if d not in folders]
        if missing:
            ap.error(f"no such datasets in {args.datasets_dir}: {missing}")
        folders = wanted

    results: dict = {}
    loaded_configs: dict = {}  # our configurations named in the loaded files' metadata
    for path in args.load:
        with open(path) as f:
            loaded = json.load(f)
        for d, by_method in loaded["results"].items():
            results.setdefault(d, {}).update(by_method)
        loaded_configs.update(loaded.get("meta", {}).get("ours_configs", {}))

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    def save():
        if args.json:
            meta = {"python": sys.version.split()[0], "platform": platform.platform(),
                    "seeds": seeds, "ours_configs": {**loaded_configs, **ours}, "threads_original": args.threads}
            tmp = args.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"meta": meta, "results": results}, f, indent=2)
            os.replace(tmp, args.json)

    # crowd-kit elsewhere: run the peer part in that interpreter, merge its JSON.
    peers = [m for m in methods if m in PEERS]
    if args.render_only:
        methods_here, folders_to_run = [], []
    elif peers and not crowdkit_here():
        if not args.crowdkit_python:
            ap.error("crowd-kit is not importable here: pass --crowdkit-python")
        todo = [m for m in peers if args.rerun or any(m not in results.get(d, {}) for d in folders)]
        if todo:
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "peers.json")
                cmd = [args.crowdkit_python, "-I", os.path.abspath(__file__),
                       "--datasets-dir", os.path.abspath(args.datasets_dir),
                       "--datasets", ",".join(folders), "--methods", ",".join(todo),
                       "--seeds", args.seeds, "--json", out] + (["--quiet"] if args.quiet else [])
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                with open(out) as f:
                    for d, by_method in json.load(f)["results"].items():
                        results.setdefault(d, {}).update(by_method)
        methods_here, folders_to_run = [m for m in methods if m not in PEERS], folders
    else:
        methods_here, folders_to_run = methods, folders

    with tempfile.TemporaryDirectory(prefix="deem-accuracy-") as tmpdir:
        for d in folders_to_run:
            answers, gold, k = load_dataset(os.path.join(args.datasets_dir, d))
            log(f"{d}: {answers['task'].nunique()} tasks, {answers['worker'].nunique()} workers, "
                f"{len(answers)} labels, K={k}")
            for m in methods_here:
                if m in results.get(d, {}) and not args.rerun:
                    continue
                runs = []
                try:
                    for seed in (seeds if (m in STOCHASTIC or m in ours) else seeds[:1]):
                        extra = {}
                        if m in PEERS:
                            pred, secs = run_peer(m, answers, seed)
                        elif m in ORIGINALS:
                            if not args.original_python:
                                raise RuntimeError("needs --original-python")
                            pred, secs, extra = run_original(
                                args.original_python, answers, k, seed, m == "original-auto",
                                args.threads or None, tmpdir, args.original_timeout)
                        else:
                            pred, secs = run_ours(ours[m], answers, seed)
                        run = {"seed": seed, "accuracy": accuracy(pred, gold), "seconds": secs, **extra}
                        if m == "mv":
                            mine = majority_vote(answers, "first-seen")
                            run["ties_first_seen_agrees"] = bool(
                                (mine.reindex(pred.index.astype(str)).to_numpy() == pred.to_numpy()).all())
                            run["accuracy_ties_smallest"] = accuracy(majority_vote(answers, "smallest"), gold)
                        runs.append(run)
                        log(f"  {m} seed {seed}: accuracy {run['accuracy']:.4f}, {secs:.2f} s")
                    results.setdefault(d, {})[m] = summarize(runs)
                except Exception as exc:
                    log(f"  {m}: {type(exc).__name__}: {exc}")
                    results.setdefault(d, {})[m] = {"error": f"{type(exc).__name__}: {exc}", "runs": runs}
                save()
    save()

    all_datasets = [d for d in folders] + [d for d in results if d not in folders]
    order = [m for m in ALL_METHODS if m != "ours"] + list(ours)
    order += sorted({m for d in results.values() for m in d} - set(order))
    table = render_table(results, all_datasets, order)
    print(table)
    if args.write_results:
        body = (f"Accuracy on tasks with a gold label; in brackets the mean wall time of fit + "
                f"predict and, for stochastic methods, the number of seeds (mean ± sd over "
                f"them). `python benchmarks/accuracy.py --help` tells how to regenerate it.\n\n{table}")
        write_section(args.write_results, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
