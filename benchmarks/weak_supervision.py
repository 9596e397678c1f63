"""DEEM and its peers on weak-supervision label matrices: three real WRENCH sets and a seeded synthetic grid.

    OMP_NUM_THREADS=1 python benchmarks/weak_supervision.py [--sets real,synthetic] [--quick]
        [--methods mv,ours-auto,ours-ignorable,ours-informative,ours-converged,ours-exact,snorkel,ds,mace,original]
        [--data-dir /work/shared/weak_supervision] [--peers-python /work/venvs/bench/bin/python]
        [--original-python /work/venvs/deem020/bin/python] [--original-timeout 300]
        [--original-synthetic 10] [--peers-timeout 1800] [--threads 1]
        [--json out.json] [--load earlier.json ...] [--rerun-errors] [--render-only]
        [--write-results benchmarks/RESULTS.md]

In a weak-supervision matrix every column is a labeling function (LF) that looks at every item and
votes or abstains, so *whether* it fires is evidence (many LFs only ever vote for one class), unlike
a crowd where a missing label means the item was never shown.

Sets (``--sets``, default ``real,synthetic``):

- ``real``: ``youtube``, ``trec``, ``census`` from ``--data-dir``; each folder holds ``L.csv`` (no
  header, ints, ``-1`` = abstain), ``y.csv`` (gold) and ``meta.json`` (``K``). They are read in place,
  never copied into the repository (the ``.npy`` handed to the subprocesses lives in a temporary folder).
- ``synthetic``: ``deem.datasets.labeling_functions`` on a fixed grid (``synthetic_grid()``, seed
  ``GRID_SEED``): the full factorial of ``n_classes`` (2, 3, 5, 10) × class balance (``uniform``;
  ``imbalanced`` = ``[0.85, 0.15]`` for K = 2, a Dirichlet(1) draw floored at 0.01 for K > 2) ×
  ``one_class_share`` (0, 0.5, 1) × coverage regime (``sparse`` (0.005, 0.05), ``medium``
  (0.03, 0.3), ``dense`` (0.1, 0.6)) = 72 ensembles. The other factors are balanced, shuffled lists
  over the 72: ``precision`` ranges (``weak`` (0.55, 0.75), ``mixed`` (0.6, 0.95), ``strong``
  (0.8, 0.99)), ``n_voters`` (5, 10, 20, 40, 60; sparse ensembles take 20, 40 or 60 so that enough
  rows get a vote), ``n_correlated`` (0 or 30% of the voters, half each), ``activity_spread``
  (0, 0.5, 1) and ``n_samples`` (500, 1000, 2000, 5000, weighted towards the small ones to keep the
  run short). ``random_state`` of ensemble ``i`` is ``i``. Each name records its settings, e.g.
  ``s07-K2-imb15-oc0.5-v20+6c-cov.03-.3-pmixed-as0.5-n1000``: index, classes, balance (``uni``;
  ``imbNN`` = minority share in percent), one-class share, voters + correlated copies, coverage,
  precision range, activity spread, rows. ``--quick`` keeps 5 of them (the smallest of each K and
  the smallest imbalanced binary one) for a smoke run.

Methods (``--methods``; all by default):

- ``mv``: majority vote in numpy here, ties to the smallest label, ``-1`` on rows with no vote.
- ``ours-auto``, ``ours-ignorable``, ``ours-informative``: this repository's
  ``DEEM(n_classes=K, random_state=0, missing=M).fit(L).predict(L)`` with ``M`` = ``'auto'`` (the
  default), ``'ignorable'``, ``'informative'``; ``ours-converged`` is ``anchor='none'`` (EM run to
  convergence instead of the default's majority-vote-anchored reading, see ``deem/anchor.py``);
  ``ours-exact`` is ``solver='exact'`` with the default
  ``missing``. Each records ``missing_`` (what ``'auto'`` chose), ``solver_`` and any warnings.
  An exception is recorded as the method's error (with its traceback), never worked around.
- ``snorkel``, ``ds``, ``mace``: ``benchmarks/_ws_peers.py`` run once per set by ``--peers-python``
  (Snorkel 0.10.0 ``LabelModel``; crowd-kit ``DawidSkene(n_iter=100)``, ``MACE``), seed 0, torch
  threads ``--threads``; their own fit + predict wall time. ``--peers-timeout`` bounds the subprocess.
- ``original``: ``deem==0.2.0`` ``DEEM(n_classes=K, random_state=0, device='cpu')`` through
  ``benchmarks/_original_runner.py`` in ``--original-python`` (predictions aligned to the majority
  vote with its ``predict(X, align_to=X)``; time = its fit + predict). It is slow, so it runs on the
  real sets and on the ``--original-synthetic`` (default 10; 2 with ``--quick``) synthetic sets with
  the fewest cells (rows × LFs), each run stopped after ``--original-timeout`` seconds (default 300)
  and recorded as ``timeout``.

``--peers-python`` and ``--original-python`` default to the paths above when they exist; without an
interpreter those methods are skipped with a note (nothing is recorded, so a later run fills them in).

Metrics, on the rows with at least one vote (a prediction of ``-1`` there counts as wrong): accuracy;
for binary sets also the F1 of class 1 (``sklearn.metrics.f1_score``); a binary set is *imbalanced*
when its minority class holds < 30% of those rows. For every method the wall seconds.

Output: ``--json`` is rewritten after every result (``{"meta": ..., "sets": {name: {"kind",
"settings", sizes, "results": {method: {...}}}}}``); ``--load`` merges earlier JSON files and skips every
(set, method) already there (``--rerun-errors``: except errors and timeouts). ``--render-only`` runs
nothing. ``--write-results FILE`` replaces the section between ``<!-- weak-supervision:start -->`` and
``<!-- weak-supervision:end -->`` (appended if absent; the file is read right before writing and the
rest left untouched) with: (1) a table of the real sets (rows = sets, columns = methods, cells
``acc (F1)``) and their wall seconds; (2) a summary per method: mean accuracy over the synthetic sets,
mean over all sets, the change of that mean against mv on the same sets, the number of sets more than
one point below mv and the worst difference to mv (both over all sets), mean F1 on the imbalanced
binary sets and on how many of them the method's F1 beats mv's, errors, total seconds; how often
``ours-auto`` chose ``informative`` vs ``ignorable``; (3) the command lines and the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS_SCRIPT = os.path.join(HERE, "_ws_peers.py")
ORIGINAL_RUNNER = os.path.join(HERE, "_original_runner.py")
DEFAULT_DATA = "/work/shared/weak_supervision"
DEFAULT_PEERS_PY = "/work/venvs/bench/bin/python"
DEFAULT_ORIGINAL_PY = "/work/venvs/deem020/bin/python"
START, END = "<!-- weak-supervision:start -->", "<!-- weak-supervision:end -->"

REAL_SETS = ("youtube", "trec", "census")
OURS = {"ours-auto": {"missing": "auto"}, "ours-ignorable": {"missing": "ignorable"},
        "ours-informative": {"missing": "informative"}, "ours-converged": {"anchor": "none"},
        "ours-exact": {"solver": "exact"}}
PEERS = ("snorkel", "ds", "mace")
ALL_METHODS = ("mv", *OURS, *PEERS, "original")
SEED = 0
IMBALANCED_BELOW = 0.30

GRID_SEED = 20251126
K_LEVELS = (2, 3, 5, 10)
BALANCES = ("uniform", "imbalanced")
ONE_CLASS = (0.0, 0.5, 1.0)
COVERAGES = {"sparse": (0.005, 0.05), "medium": (0.03, 0.3), "dense": (0.1, 0.6)}
PRECISIONS = {"weak": (0.55, 0.75), "mixed": (0.6, 0.95), "strong": (0.8, 0.99)}
VOTERS = (5, 10, 20, 40, 60)
SPARSE_VOTERS = (20, 40, 60)
SPREADS = (0.0, 0.5, 1.0)
SAMPLES = {500: 24, 1000: 22, 2000: 16, 5000: 10}  # level: how many of the 72 ensembles


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_range(r) -> str:
    return "-".join(f"{v:g}".replace("0.", ".", 1) for v in r)


# ------------------------------------------------------------------------------ data
def _balanced(rng: np.random.Generator, levels, n: int, counts=None) -> list:
    """A shuffled list of ``n`` levels, each (or as ``counts`` says) about equally often."""
    if counts is None:
        items = [levels[i % len(levels)] for i in range(n)]
    else:
        items = [lv for lv, c in counts.items() for _ in range(c)]
        assert len(items) == n
    return [items[i] for i in rng.permutation(n)]


def synthetic_grid() -> list:
    """The fixed list of synthetic ensembles: ``[{"name", "settings"}]`` (settings = ``labeling_functions`` kwargs)."""
    rng = np.random.default_rng(GRID_SEED)
    cells = [(k, b, oc, cov) for k in K_LEVELS for b in BALANCES for oc in ONE_CLASS for cov in COVERAGES]
    n = len(cells)
    precisions = _balanced(rng, list(PRECISIONS), n)
    voters = _balanced(rng, VOTERS, n)
    sparse_voters = _balanced(rng, SPARSE_VOTERS, n)
    correlated = _balanced(rng, (False, True), n)
    spreads = _balanced(rng, SPREADS, n)
    samples = _balanced(rng, None, n, SAMPLES)
    grid = []
    for i, (k, bal, oc, cov) in enumerate(cells):
        if bal == "uniform":
            balance, tag = None, "uni"
        elif k == 2:
            balance = [0.85, 0.15]
            tag = "imb15"
        else:
            draw = np.maximum(np.random.default_rng([GRID_SEED, i]).dirichlet(np.ones(k)), 0.01)
            balance = (draw / draw.sum()).tolist()
            tag = f"imb{round(100 * min(balance)):02d}"
        nv = sparse_voters[i] if cov == "sparse" else voters[i]
        nc = round(0.3 * nv) if correlated[i] else 0
        settings = {"n_samples": samples[i], "n_voters": nv, "n_classes": k, "class_balance": balance,
                    "one_class_share": oc, "coverage": list(COVERAGES[cov]),
                    "precision": list(PRECISIONS[precisions[i]]), "n_correlated": nc,
                    "activity_spread": spreads[i], "random_state": i}
        name = (f"s{i:02d}-K{k}-{tag}-oc{oc:g}-v{nv}+{nc}c-cov{_fmt_range(COVERAGES[cov])}"
                f"-p{precisions[i]}-as{spreads[i]:g}-n{samples[i]}")
        grid.append({"name": name, "settings": settings, "coverage_regime": cov,
                     "precision_regime": precisions[i]})
    return grid


def quick_subset(grid: list) -> list:
    """Five small ensembles: the smallest of each K, and the smallest imbalanced binary one."""
    def size(e):
        s = e["settings"]
        return (s["n_samples"] * (s["n_voters"] + s["n_correlated"]), e["name"])
    picked = [min((e for e in grid if e["settings"]["n_classes"] == k), key=size) for k in K_LEVELS]
    rest = [e for e in grid if e["settings"]["n_classes"] == 2 and e["settings"]["class_balance"] is not None
            and e not in picked]
    picked.append(min(rest, key=size))
    return picked


def load_real(data_dir: str, name: str):
    folder = os.path.join(data_dir, name)
    L = np.loadtxt(os.path.join(folder, "L.csv"), delimiter=",", dtype=np.int64, ndmin=2)
    y = np.loadtxt(os.path.join(folder, "y.csv"), delimiter=",", dtype=np.int64, ndmin=1)
    k = None
    meta_path = os.path.join(folder, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            k = json.load(f).get("K")
    k = int(k) if k else int(max(L.max(), y.max())) + 1
    return L, y, k


def make_synthetic(entry: dict):
    from deem.datasets import labeling_functions

    s = dict(entry["settings"])
    s["coverage"], s["precision"] = tuple(s["coverage"]), tuple(s["precision"])
    L, y = labeling_functions(**s)
    return np.asarray(L, dtype=np.int64), np.asarray(y, dtype=np.int64), int(s["n_classes"])


# --------------------------------------------------------------------------- metrics
def majority_vote(L: np.ndarray, k: int) -> np.ndarray:
    """Majority vote per row, ties to the smallest label; ``-1`` where no LF voted."""
    counts = np.stack([(L == c).sum(axis=1) for c in range(k)], axis=1)
    return np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)


def score(pred, y: np.ndarray, mask: np.ndarray, k: int) -> dict:
    from sklearn.metrics import f1_score

    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    if pred.shape != y.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {y.shape[0]} rows")
    out = {"accuracy": float((pred[mask] == y[mask]).mean()) if mask.any() else None}
    if k == 2:
        out["f1"] = float(f1_score(y[mask], pred[mask], labels=[1], average=None, zero_division=0)[0])
    return out


def describe(L: np.ndarray, y: np.ndarray, k: int) -> dict:
    mask = (L >= 0).any(axis=1)
    shares = np.bincount(y[mask], minlength=k) / max(int(mask.sum()), 1)
    info = {"n_rows": int(L.shape[0]), "n_lfs": int(L.shape[1]), "n_classes": k,
            "n_covered": int(mask.sum()), "coverage": float(mask.mean()), "votes": int((L >= 0).sum()),
            "class_shares": [round(float(s), 4) for s in shares], "minority_share": float(shares.min())}
    info["imbalanced"] = bool(k == 2 and info["minority_share"] < IMBALANCED_BELOW)
    return info


# ----------------------------------------------------------------------------- methods
def run_ours(name: str, L: np.ndarray, k: int) -> dict:
    from deem import DEEM

    params = {"n_classes": k, "random_state": SEED, **OURS[name]}
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()) as out:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        model = DEEM(**params).fit(L)
        pred = model.predict(L)
        seconds = time.perf_counter() - t0
    res = {"pred": pred, "seconds": seconds, "params": {p: v for p, v in params.items() if p != "n_classes"},
           "missing_": getattr(model, "missing_", None), "solver_": getattr(model, "solver_", None),
           "anchor_": getattr(model, "anchor_", None)}
    lbf = getattr(model, "missing_log_bayes_factor_", None)
    if lbf is not None:
        res["missing_log_bayes_factor_"] = float(lbf)
    msgs = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if msgs:
        res["warnings"] = msgs[:5]
    if out.getvalue().strip():
        res["stdout"] = out.getvalue()[-500:]
    return res


def run_peers(python: str, methods: list, L: np.ndarray, k: int, tmpdir: str, threads: int, timeout) -> dict:
    x_path, out = os.path.join(tmpdir, "L.npy"), os.path.join(tmpdir, "peers.json")
    if os.path.exists(out):
        os.remove(out)
    np.save(x_path, L)
    cmd = [python, "-I", PEERS_SCRIPT, x_path, "--methods", ",".join(methods), "--n-classes", str(k),
           "--seed", str(SEED), "--threads", str(threads), "--out", out]
    try:
        proc = subprocess.run(cmd, cwd=tmpdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {m: {"error": "timeout", "timeout_s": timeout} for m in methods}
    try:
        with open(out) as f:
            res = json.load(f)
    except (OSError, ValueError):
        return {m: {"error": f"peers exited {proc.returncode}: {proc.stderr[-1000:]}"} for m in methods}
    if not res.get("ok"):
        return {m: {"error": res.get("error", "peers failed")} for m in methods}
    return {m: res["results"].get(m, {"error": "no result"}) for m in methods}


def run_original(python: str, L: np.ndarray, k: int, tmpdir: str, threads: int, timeout) -> dict:
    x_path, pred_path, out = (os.path.join(tmpdir, f) for f in ("X.npy", "pred.npy", "original.json"))
    for p in (pred_path, out):
        if os.path.exists(p):
            os.remove(p)
    np.save(x_path, L)
    cfg = {"params": {"n_classes": k, "random_state": SEED, "device": "cpu"}, "threads": threads,
           "align_to": "self", "predictions_out": pred_path}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([python, "-I", ORIGINAL_RUNNER, x_path, json.dumps(cfg), "--out", out],
                              cwd=tmpdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timeout", "timeout_s": timeout, "wall_seconds": time.perf_counter() - t0}
    try:
        with open(out) as f:
            res = json.load(f)
    except (OSError, ValueError):
        return {"error": f"runner exited {proc.returncode}: {proc.stderr[-1000:]}"}
    if not res.get("ok"):
        return {"error": res.get("error", "runner failed"), "traceback": res.get("traceback")}
    return {"pred": np.load(pred_path), "seconds": res["fit_seconds"] + res["predict_seconds"],
            "epochs": res.get("epochs")}


# ------------------------------------------------------------------------------ state
def _empty_state() -> dict:
    return {"meta": {"runs": []}, "sets": {}}


def merge(state: dict, other: dict) -> None:
    state["meta"]["runs"].extend(other.get("meta", {}).get("runs", []))
    for name, entry in other.get("sets", {}).items():
        mine = state["sets"].setdefault(name, {k: v for k, v in entry.items() if k != "results"})
        mine.setdefault("results", {}).update(entry.get("results", {}))


def save(state: dict, path) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)


def record(ctx, m: str, res: dict) -> None:
    """Score ``res["pred"]``, store the result (predictions dropped) and rewrite the JSON."""
    state, json_path, rec, y, mask, k = ctx
    res = dict(res)
    pred = res.pop("pred", None)
    res.pop("proba", None)
    if not _is_error(res):
        try:
            res.update(score(pred, y, mask, k))
        except Exception as exc:  # noqa: BLE001 -- a malformed prediction is the method's error
            res = {"error": f"{type(exc).__name__}: {exc}", **res}
    rec["results"][m] = res
    save(state, json_path)
    if _is_error(res):
        log(f"  {m}: ERROR {res['error'][:300]}")
    else:
        extra = f", F1 {res['f1']:.3f}" if "f1" in res else ""
        extra += f", missing_={res['missing_']}" if res.get("missing_") else ""
        log(f"  {m}: acc {res['accuracy']:.4f}{extra}, {res['seconds']:.2f} s")


def _is_error(res: dict) -> bool:
    return "error" in res


def _library_fingerprint() -> dict:
    files = sorted(f for f in os.listdir(os.path.join(REPO, "deem")) if f.endswith(".py"))
    h = hashlib.sha256()
    for f in files:
        with open(os.path.join(REPO, "deem", f), "rb") as fh:
            h.update(f.encode() + b"\0" + fh.read())
    info = {"deem_py_sha256": h.hexdigest()[:16]}
    with contextlib.suppress(Exception):
        info["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                          text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "deem", "csrc"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["deem_tree_dirty"] = bool(dirty)
    return info


# ----------------------------------------------------------------------------- render
def _f(x, digits=4) -> str:
    return "–" if x is None else f"{x:.{digits}f}".replace("0.", ".", 1)


def _cell(res) -> str:
    if res is None:
        return "–"
    if _is_error(res):
        return "timeout" if res["error"] == "timeout" else "error"
    text = _f(res.get("accuracy"))
    if res.get("f1") is not None:
        text += f" (F1 {_f(res['f1'], 2)})"
    return text


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _pt(x) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def render(state: dict, methods: list) -> str:
    sets = state["sets"]
    real = [n for n in REAL_SETS if n in sets] + sorted(n for n, e in sets.items()
                                                         if e.get("kind") == "real" and n not in REAL_SETS)
    synth = sorted(n for n, e in sets.items() if e.get("kind") == "synthetic")
    methods = [m for m in methods if any(m in sets[n].get("results", {}) for n in sets)]
    names = {"ours-auto": "ours (auto)", "ours-ignorable": "ours ignorable", "ours-informative": "ours informative",
             "ours-converged": "ours converged",
             "ours-exact": "ours exact", "original": "deem 0.2.0"}
    lines = ["## Weak supervision: labeling-function matrices", "",
             "Accuracy on the rows with at least one vote; binary sets also the F1 of class 1. `mv` = majority "
             "vote, ties to the smallest label. `ours (auto)` is `DEEM(n_classes=K, random_state=0)` (`missing="
             "'auto'`, `anchor='auto'`), `ours ignorable` / `ours informative` force `missing`, `ours converged` is "
             "`anchor='none'` (EM to convergence), `ours exact` is `solver='exact'`; "
             "Snorkel 0.10.0 `LabelModel` (500 epochs), crowd-kit 1.4.2 Dawid–Skene and MACE; deem 0.2.0 "
             "defaults (aligned to the majority vote). `python benchmarks/weak_supervision.py --help` tells "
             "how the sets are built and how to regenerate this.", ""]
    if real:
        lines += ["| set | rows | LFs | K | rows with a vote | " + " | ".join(names.get(m, m) for m in methods) + " |",
                  "|---|---|---|---|---|" + "---|" * len(methods)]
        for n in real:
            e = sets[n]
            lines.append(f"| {n} | {e['n_rows']:,} | {e['n_lfs']} | {e['n_classes']} | {e['coverage']:.1%} | "
                         + " | ".join(_cell(e["results"].get(m)) for m in methods) + " |")
        lines += ["", "Wall seconds (fit + predict) on the real sets:", "",
                  "| set | " + " | ".join(names.get(m, m) for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for n in real:
            res = sets[n]["results"]
            cells = []
            for m in methods:
                r = res.get(m)
                if r is None:
                    cells.append("–")
                elif _is_error(r):
                    cells.append(f"> {r['timeout_s']:g}" if r["error"] == "timeout" else "error")
                else:
                    cells.append(f"{r['seconds']:.2f}")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")

    all_sets = real + synth
    imb = [n for n in all_sets if sets[n].get("imbalanced")]
    lines += [f"Summary over {len(synth)} synthetic ensembles (`deem.datasets.labeling_functions`) and all "
              f"{len(all_sets)} sets; Δ in accuracy points against `mv`; {len(imb)} imbalanced binary sets "
              f"(minority < {IMBALANCED_BELOW:.0%} of the rows with a vote). A method's means cover the sets where "
              "it gave a result (`sets`).", "",
              "| method | sets | mean acc, synthetic | mean acc, all | Δ mean vs mv, same sets | "
              "sets > 1 pt below mv | worst Δ vs mv | mean F1, imbalanced binary | imbalanced: F1 > mv's | "
              "errors | total s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]

    def ok(n, m):
        r = sets[n]["results"].get(m)
        return r if r is not None and not _is_error(r) else None

    for m in methods:
        done = [n for n in all_sets if ok(n, m)]
        acc = {n: ok(n, m)["accuracy"] for n in done}
        mv = {n: ok(n, "mv")["accuracy"] for n in done if ok(n, "mv")}
        diffs = [acc[n] - mv[n] for n in done if n in mv and acc[n] is not None and mv[n] is not None]
        imb_done = [n for n in imb if ok(n, m)]
        f1s = [ok(n, m)["f1"] for n in imb_done]
        beats = sum(1 for n in imb_done if ok(n, "mv") and ok(n, m)["f1"] > ok(n, "mv")["f1"])
        errors = sum(1 for n in all_sets if sets[n]["results"].get(m) is not None
                     and _is_error(sets[n]["results"][m]))
        secs = sum(ok(n, m)["seconds"] for n in done)
        lines.append(
            f"| {names.get(m, m)} | {len(done)} | {_f(_mean([acc[n] for n in done if n in synth]))} | "
            f"{_f(_mean(acc.values()))} | {_pt(_mean(diffs)) if m != 'mv' else '–'} | "
            f"{sum(d < -0.01 for d in diffs) if m != 'mv' else '–'} | "
            f"{_pt(min(diffs)) if diffs and m != 'mv' else '–'} | "
            f"{f'{_f(_mean(f1s), 3)} ({len(f1s)})' if f1s else '–'} | "
            f"{f'{beats}/{len(imb_done)}' if m != 'mv' and imb_done else '–'} | {errors} | {secs:.0f} |")
    chose = {}
    for n in all_sets:
        r = ok(n, "ours-auto")
        if r:
            chose.setdefault(sets[n]["kind"], {}).setdefault(r.get("missing_"), 0)
            chose[sets[n]["kind"]][r.get("missing_")] += 1
    if chose:
        parts = [f"{kind}: " + ", ".join(f"{v} {c}" for c, v in sorted(d.items(), key=lambda t: str(t[0])))
                 for kind, d in sorted(chose.items())]
        per_real = ", ".join(f"{n} {ok(n, 'ours-auto')['missing_']}" for n in real if ok(n, "ours-auto"))
        lines += ["", "`missing='auto'` chose — " + "; ".join(parts) + (f" ({per_real})." if per_real else ".")]
    errs = [(n, m, r) for n in all_sets for m, r in sets[n]["results"].items() if _is_error(r)]
    if errs:
        lines += ["", "Errors and timeouts:", ""]
        lines += [f"- `{n}` / {m}: {r['error'] if r['error'] != 'timeout' else 'timeout after %g s' % r['timeout_s']}"
                  .replace("\n", " ")[:300] for n, m, r in errs]
    lines += ["", "Runs:", ""]
    for run in state["meta"]["runs"]:
        lines.append(f"- `{run['command']}` — {run['date']}, {run['platform']}, Python {run['python']}, "
                     f"{run.get('cpus', '?')} CPUs ({run.get('cpu_model') or run.get('machine', '?')}), "
                     f"{run.get('seconds', 0):.0f} s" + _library_note(run.get("library")))
    return "\n".join(lines)


def _library_note(lib) -> str:
    if not lib:
        return ""
    text = f"; deem at {lib.get('git_head', '?')}"
    if lib.get("deem_tree_dirty"):
        text += " + uncommitted changes"
    return text + f" (deem/*.py sha256 {lib['deem_py_sha256']})"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor()


def write_section(path: str, body: str) -> None:
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"  # read right before writing
    section = f"{START}\n{body}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


# ------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma-separated, from {','.join(ALL_METHODS)}")
    ap.add_argument("--sets", default="real,synthetic", help="real, synthetic or both (comma-separated)")
    ap.add_argument("--quick", action="store_true", help="only 5 synthetic sets (a smoke run)")
    ap.add_argument("--data-dir", default=DEFAULT_DATA, help="folder of the real sets")
    ap.add_argument("--peers-python", default=DEFAULT_PEERS_PY if os.path.exists(DEFAULT_PEERS_PY) else None,
                    help="interpreter with snorkel and crowd-kit")
    ap.add_argument("--original-python",
                    default=DEFAULT_ORIGINAL_PY if os.path.exists(DEFAULT_ORIGINAL_PY) else None,
                    help="interpreter with deem==0.2.0")
    ap.add_argument("--original-timeout", type=float, default=300.0, help="seconds per original run")
    ap.add_argument("--original-synthetic", type=int, help="original runs on this many smallest synthetic sets "
                    "(default 10; 2 with --quick)")
    ap.add_argument("--peers-timeout", type=float, default=1800.0, help="seconds per peers subprocess")
    ap.add_argument("--threads", type=int, default=1, help="torch threads here and in the subprocesses (0: default)")
    ap.add_argument("--json", help="write (and keep updating) all results here")
    ap.add_argument("--load", action="append", default=[], help="merge the results of an earlier --json")
    ap.add_argument("--rerun-errors", action="store_true", help="rerun loaded errors and timeouts")
    ap.add_argument("--render-only", action="store_true", help="run nothing; print (and write) the loaded results")
    ap.add_argument("--write-results", help="markdown file whose weak-supervision section is replaced")
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; known: {', '.join(ALL_METHODS)}")
    kinds = {s.strip() for s in args.sets.split(",") if s.strip()}
    if kinds - {"real", "synthetic"}:
        ap.error("--sets takes real and/or synthetic")

    state = _empty_state()
    for path in args.load:
        with open(path) as f:
            merge(state, json.load(f))
    if args.render_only:
        text = render(state, list(ALL_METHODS))
        print(text)
        if args.write_results:
            write_section(args.write_results, text)
        return 0

    notes = []
    if any(m in PEERS for m in methods) and not args.peers_python:
        notes.append(f"no --peers-python ({DEFAULT_PEERS_PY} missing): skipped {', '.join(PEERS)}")
        methods = [m for m in methods if m not in PEERS]
    if "original" in methods and not args.original_python:
        notes.append(f"no --original-python ({DEFAULT_ORIGINAL_PY} missing): skipped original")
        methods = [m for m in methods if m != "original"]
    for note in notes:
        log(f"note: {note}")
    if args.threads > 0 and any(m in OURS for m in methods):
        import torch

        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    run_info = {"command": " ".join([os.path.relpath(sys.executable, REPO) if sys.executable.startswith(REPO)
                                     else sys.executable, script, *sys.argv[1:]]),
                "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "platform": platform.platform(), "machine": platform.machine(), "cpu_model": _cpu_model(),
                "python": platform.python_version(), "cpus": os.cpu_count(), "methods": methods,
                "notes": notes, "threads": args.threads}
    if any(m in OURS for m in methods):
        run_info["library"] = _library_fingerprint()
    if run_info["env"]:
        run_info["command"] = " ".join(f"{k}={v}" for k, v in run_info["env"].items()) + " " + run_info["command"]
    state["meta"]["runs"].append(run_info)
    save(state, args.json)

    todo = []  # (name, kind, loader, entry)
    if "real" in kinds:
        todo += [(n, "real", None) for n in REAL_SETS if os.path.isdir(os.path.join(args.data_dir, n))]
        missing = [n for n in REAL_SETS if not os.path.isdir(os.path.join(args.data_dir, n))]
        if missing:
            log(f"note: real sets not found in {args.data_dir}: {', '.join(missing)}")
    original_synth = set()
    if "synthetic" in kinds:
        grid = synthetic_grid()
        if args.quick:
            grid = quick_subset(grid)
        n_orig = args.original_synthetic if args.original_synthetic is not None else (2 if args.quick else 10)
        by_size = sorted(grid, key=lambda e: (e["settings"]["n_samples"]
                                              * (e["settings"]["n_voters"] + e["settings"]["n_correlated"]), e["name"]))
        original_synth = {e["name"] for e in by_size[:n_orig]}
        todo += [(e["name"], "synthetic", e) for e in grid]

    def have(name, m):
        r = state["sets"].get(name, {}).get("results", {}).get(m)
        return r is not None and not (args.rerun_errors and _is_error(r))

    ran = False
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as tmpdir:
        for i, (name, kind, entry) in enumerate(todo):
            wanted = [m for m in methods if not have(name, m)
                      and not (m == "original" and kind == "synthetic" and name not in original_synth)]
            if not wanted:
                continue
            ran = True
            if kind == "real":
                L, y, k = load_real(args.data_dir, name)
                settings = {"source": os.path.join(args.data_dir, name)}
            else:
                L, y, k = make_synthetic(entry)
                settings = {**entry["settings"], "coverage_regime": entry["coverage_regime"],
                            "precision_regime": entry["precision_regime"]}
            info = describe(L, y, k)
            rec = state["sets"].setdefault(name, {})
            rec.update({"kind": kind, "settings": settings, **info})
            rec.setdefault("results", {})
            ctx = (state, args.json, rec, y, (L >= 0).any(axis=1), k)
            log(f"[{i + 1}/{len(todo)}] {name}: {info['n_rows']} rows × {info['n_lfs']} LFs, K={k}, "
                f"{info['coverage']:.1%} with a vote")

            for m in wanted:
                if m == "mv":
                    t0 = time.perf_counter()
                    pred = majority_vote(L, k)
                    record(ctx, m, {"pred": pred, "seconds": time.perf_counter() - t0})
                elif m in OURS:
                    try:
                        res = run_ours(m, L, k)
                    except Exception as exc:  # noqa: BLE001 -- record the library's error, never work around it
                        res = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
                    record(ctx, m, res)
            peers = [m for m in wanted if m in PEERS]
            if peers:
                for m, res in run_peers(args.peers_python, peers, L, k, tmpdir, args.threads,
                                        args.peers_timeout).items():
                    record(ctx, m, res)
            if "original" in wanted:
                record(ctx, "original", run_original(args.original_python, L, k, tmpdir, args.threads,
                                                args.original_timeout))

    run_info["seconds"] = time.perf_counter() - t_start
    if not ran:  # everything was loaded: this call only renders
        state["meta"]["runs"].remove(run_info)
    save(state, args.json)
    text = render(state, list(ALL_METHODS))
    print(text)
    if args.write_results:
        write_section(args.write_results, text)
    log(f"done in {run_info['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
