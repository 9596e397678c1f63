"""Train the predictor behind ``DEEM(auto_hyperparameters=True)``: ``deem/data/hyperparameters.json``.

    python benchmarks/train_hyperparameter_predictor.py                  # full run (~30 min, 1 core)
    python benchmarks/train_hyperparameter_predictor.py --quick          # smoke run (< 1 min)
    python benchmarks/train_hyperparameter_predictor.py --refit-only     # refit from saved search results
        [--out deem/data/hyperparameters.json] [--results benchmarks/results/hyperparameter-search.json]
        [--seed 0] [--n-datasets 120] [--real-datasets ../shared/datasets] [--no-wait]

1. Generates ``--n-datasets`` synthetic ensembles with known truth (``make_ensemble``):
   Dawid-Skene labels with varied skills and confusion structure (symmetric, random,
   class-dependent), spammers, adversarial (label-permuting) classifiers, groups of
   correlated copies of one parent classifier, hard items on which everyone guesses,
   class imbalance, 2-10 classes, 3-100 classifiers, 200-3000 rows, and missingness from
   dense ensembles (density 100%) through uniform holes to crowd-like sparse matrices
   (a few labels per row, skewed worker activity, density down to ~3%). About one in five
   holds soft labels (per-classifier Dirichlet probabilities around the emitted label).
2. Fits every candidate configuration (``CANDIDATES``) on each, with
   ``DEEM(**config, random_state=seed).fit(X).score(X, y)``, recording the accuracy and
   time; the results go to ``--results`` after every dataset, and a rerun resumes from
   them (same seed and generator settings), fitting only what is missing.
3. Fits the predictor: standardized meta-features (``deem.meta_features``) of every
   ensemble and each candidate's accuracy gain over the default configuration (gains
   within +-0.2 point count as 0: a tie goes to the default). ``deem.autotune.Predictor``
   picks the candidate with the best mean gain over the ``k`` nearest ensembles of the
   same kind (hard/soft), and only when that gain exceeds ``margin`` and is positive on
   at least half of them; leave-one-out over the ensembles gives the evidence stored in
   the bundle's metadata (mean accuracy of the predicted configuration vs the default vs
   the per-dataset best). With ``--real-datasets DIR`` (folders of answers.csv/truth.csv)
   the default and the predicted configuration are also scored on those real crowds;
   this is a check only, they are not used for training.

Some candidates need ``scheduler=`` and ``use_preprocessing=``. A full run first checks (in
a fresh interpreter, every 60 s for up to 40 min) that ``DEEM`` accepts them; with
``--no-wait`` or after the wait, candidates it still rejects are left out and recorded as such.
The bundle is plain JSON; loading it never executes code.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

DEFAULT_OUT = os.path.join(REPO, "deem", "data", "hyperparameters.json")
DEFAULT_RESULTS = os.path.join(HERE, "results", "hyperparameter-search.json")
QUICK_OUT = os.path.join("/tmp", "deem-hyperparameters-quick.json")
QUICK_RESULTS = os.path.join("/tmp", "deem-hyperparameter-search-quick.json")

# Candidate configurations: name -> (overrides passed to DEEM, kinds it applies to).
# "default" is DEEM() as shipped (solver='auto' -> variational Bayes for hard labels,
# exact EM of the virtual-evidence model for soft ones).
_PRE = dict(use_preprocessing=True, preprocessing_layers=1)
CANDIDATES = {
    "default": ({}, ("hard", "soft")),
    "exact-prior2": (dict(solver="exact", prior_strength=2.0), ("hard",)),
    "exact-prior0": (dict(solver="exact", prior_strength=0.0), ("hard",)),
    "exact-prior5": (dict(solver="exact", prior_strength=5.0), ("hard",)),
    "gwg-default": (dict(solver="gwg"), ("hard", "soft")),
    "gwg-e30-lr1e-2-b256": (dict(solver="gwg", epochs=30, learning_rate=1e-2, batch_size=256), ("hard", "soft")),
    "gwg-e100-lr3e-2-b1024-m0.5": (dict(solver="gwg", epochs=100, learning_rate=3e-2, batch_size=1024, momentum=0.5),
                                   ("hard", "soft")),
    "gwg-e100-lr1e-2-b256-mvlo": (dict(solver="gwg", epochs=100, learning_rate=1e-2, batch_size=256,
                                       init_method="mv_lo"), ("hard", "soft")),
    "gwg-e200-lr1e-2-b256-cosine": (dict(solver="gwg", epochs=200, learning_rate=1e-2, batch_size=256,
                                         scheduler="cosine"), ("hard", "soft")),
    "gwg-e100-lr3e-2-b256-mv-exp": (dict(solver="gwg", epochs=100, learning_rate=3e-2, batch_size=256,
                                         init_method="mv", scheduler="exponential"), ("hard", "soft")),
    "gwg-pre-entmax": (dict(solver="gwg", epochs=50, learning_rate=1e-2, batch_size=256,
                            preprocessing_activation="entmax", **_PRE), ("hard", "soft")),
    "gwg-pre-sparsemax": (dict(solver="gwg", epochs=50, learning_rate=1e-2, batch_size=256,
                               preprocessing_activation="sparsemax", **_PRE), ("hard", "soft")),
}
QUICK_CANDIDATES = ("default", "exact-prior0", "gwg-e30-lr1e-2-b256", "gwg-pre-entmax")
NEEDS_NEW = {"scheduler", "use_preprocessing"}
PROBE = ("import numpy as np; from deem import DEEM; from deem.datasets import dawid_skene; "
         "X, _ = dawid_skene(200, 5, 3, random_state=0); "
         "DEEM(use_preprocessing=True, preprocessing_layers=1, scheduler='cosine', solver='gwg', epochs=2, "
         "random_state=0).fit(X).predict(X); print('ok')")

TIE = 0.002  # accuracy differences up to 0.2 point are ties (-> the default / the cheaper config)
# Selection rule, chosen by leave-one-out on the search results of the full run (k in 5..21,
# margin 0.5-2 points, win share 1/2-4/5): the loosest rules gained most on average but lost
# more than a point against the default on up to 15% of the hard-label ensembles; this one
# leaves the default only where nearly all similar ensembles agree.
K_NEIGHBOURS = 11
MARGIN = 0.01  # mean gain over the neighbours needed to leave the default (1 point)
MIN_WIN_FRACTION = 0.8  # share of the neighbours on which the chosen candidate must beat the default
MAX_DISTANCE_FACTOR = 1.5  # x the largest nearest-neighbour distance inside the training set


# ------------------------------------------------------------------------------ generator
def _confusions(rng, k, d, acc, structure):
    """``(d, k, k)`` row-stochastic confusion matrices with diagonal about ``acc[i]``."""
    conf = np.empty((d, k, k))
    for i in range(d):
        if structure == "class-dependent":
            diag = np.clip(acc[i] + rng.normal(0, 0.15, k), 1.0 / k * 0.5, 0.99)
        else:
            diag = np.full(k, acc[i])
        for c in range(k):
            if structure == "symmetric" or k == 2:
                off = np.full(k - 1, 1.0 / (k - 1))
            else:
                off = rng.dirichlet(np.full(k - 1, rng.choice([0.3, 1.0, 3.0])))
            conf[i, c] = np.insert(off * (1 - diag[c]), c, diag[c])
    return conf


def _draw(rng, probs):
    """One categorical draw per row of ``probs`` (..., k)."""
    u = rng.random(probs.shape[:-1] + (1,))
    return np.minimum((u > probs.cumsum(axis=-1)).sum(axis=-1), probs.shape[-1] - 1)


def make_ensemble(seed: int, quick: bool = False):
    """``(X, y, spec)``: a synthetic ensemble, its truth, and how it was made."""
    rng = np.random.default_rng(seed)
    soft = bool(rng.random() < 0.2)
    k = int(rng.choice([2, 2, 2, 3, 3, 4, 5, 6, 8, 10]))
    n = int(np.exp(rng.uniform(np.log(200), np.log(600 if quick else 3000))))
    pattern = "dense" if soft else str(rng.choice(["dense", "uniform", "crowd", "crowd"]))
    d_hi = 15 if soft else (100 if pattern == "crowd" else 60)
    d = int(np.exp(rng.uniform(np.log(3), np.log(12 if quick else d_hi))))
    if pattern == "crowd":
        d = max(d, 8)
    alpha = float(rng.choice([0.7, 2.0, 50.0]))
    prior = rng.dirichlet(np.full(k, alpha))
    prior = np.maximum(prior, 0.02)
    prior /= prior.sum()
    y = rng.choice(k, size=n, p=prior)

    chance = 1.0 / k
    lo = rng.uniform(chance, min(0.75, chance + 0.45))
    hi = rng.uniform(lo + 0.05, 0.97)
    acc = rng.uniform(lo, hi, d)
    n_spam = int(rng.random() < 0.3) * int(rng.uniform(0, 0.35) * d)
    acc[rng.permutation(d)[:n_spam]] = chance
    structure = str(rng.choice(["symmetric", "random", "class-dependent"]))
    conf = _confusions(rng, k, d, acc, structure)
    X = np.stack([_draw(rng, conf[i][y]) for i in range(d)], axis=1)  # (n, d)

    spec = dict(seed=seed, soft=soft, n_samples=n, n_classifiers=d, n_classes=k, class_alpha=alpha,
                pattern=pattern, accuracy=[round(lo, 3), round(hi, 3)], structure=structure, spammers=n_spam)
    if rng.random() < 0.3:  # hard items: everyone guesses more often
        hard = rng.random(n) < rng.uniform(0.1, 0.4)
        guess = rng.random((n, d)) < 0.6
        sel = hard[:, None] & guess
        X[sel] = rng.integers(0, k, sel.sum())
        spec["hard_items"] = float(hard.mean())
    if rng.random() < 0.2:  # adversarial: label-permuting classifiers
        n_adv = max(1, int(rng.uniform(0.05, 0.25) * d))
        for i in rng.permutation(d)[:n_adv]:
            perm = np.roll(np.arange(k), int(rng.integers(1, k)))
            X[:, i] = perm[X[:, i]]
        spec["adversarial"] = n_adv
    if rng.random() < 0.25 and d >= 4:  # correlated copies of a parent classifier
        n_copy = int(rng.integers(2, max(3, d // 3) + 1))
        parent, copies = rng.permutation(d)[:1 + n_copy][0], rng.permutation(d)[1:1 + n_copy]
        copies = [c for c in copies if c != parent]
        flip = rng.uniform(0.02, 0.2)
        for c in copies:
            noise = rng.random(n) < flip
            X[:, c] = np.where(noise, rng.integers(0, k, n), X[:, parent])
        spec["correlated_copies"] = len(copies)
        spec["copy_noise"] = round(float(flip), 3)

    if soft:
        # Dirichlet around the emitted label, sharpness per classifier.
        base = rng.uniform(0.3, 2.0, d)
        sharp = np.exp(rng.uniform(np.log(1.0), np.log(30.0), d))
        alpha_t = np.broadcast_to(base[None, None, :] / k, (n, k, d)).copy()
        alpha_t[np.arange(n)[:, None], X, np.arange(d)[None, :]] += sharp[None, :]
        g = rng.gamma(alpha_t) + 1e-12
        P = (g / g.sum(axis=1, keepdims=True)).astype(np.float32)
        spec["density"] = 1.0
        return P, y, spec

    if pattern == "uniform":
        density = rng.uniform(0.3, 0.95)
        present = rng.random((n, d)) < density
    elif pattern == "crowd":
        per_row = int(rng.integers(2, min(d, 10) + 1))
        activity = np.exp(rng.normal(0, rng.uniform(0, 1.5), d))
        present = np.zeros((n, d), bool)
        keys = rng.random((n, d)) ** (1.0 / activity[None, :])  # weighted sampling without replacement
        top = np.argpartition(-keys, per_row - 1, axis=1)[:, :per_row]
        present[np.arange(n)[:, None], top] = True
        spec["labels_per_row"] = per_row
    else:
        present = np.ones((n, d), bool)
    present[np.arange(n), rng.integers(0, d, n)] = True
    X = np.where(present, X, -1).astype(np.int64)
    spec["density"] = round(float(present.mean()), 4)
    return X, y, spec


# ------------------------------------------------------------------------------ search
def probe_new_features(wait_s: float, poll_s: float = 60.0) -> bool:
    """Whether DEEM takes scheduler= and use_preprocessing=; polls in fresh interpreters up to ``wait_s``."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    deadline = time.time() + wait_s
    while True:
        proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=REPO)
        if proc.returncode == 0 and proc.stdout.strip().endswith("ok"):
            return True
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        if time.time() + poll_s > deadline:
            print(f"scheduler/use_preprocessing still unavailable ({last}); leaving those candidates out", flush=True)
            return False
        print(f"waiting for scheduler/use_preprocessing support ({last}); retry in {poll_s:.0f} s", flush=True)
        time.sleep(poll_s)


def full_config(overrides: dict, kind: str) -> dict:
    """Every predicted key: DEEM's constructor defaults, then ``overrides``; solver resolved."""
    from deem import DEEM
    from deem.autotune import KEYS

    defaults = {name: p.default for name, p in inspect.signature(DEEM.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    cfg = {key: defaults.get(key) for key in KEYS}
    cfg.update(overrides)
    if cfg["solver"] == "auto":  # hidden_dim=1 and no preprocessing
        cfg["solver"] = "bayes" if kind == "hard" else "exact"
    cfg.setdefault("scheduler", "constant")
    if cfg["scheduler"] is None:
        cfg["scheduler"] = "constant"
    for key in ("epochs", "batch_size", "preprocessing_layers"):
        cfg[key] = int(cfg[key])
    for key in ("learning_rate", "momentum", "prior_strength"):
        cfg[key] = float(cfg[key])
    cfg["use_preprocessing"] = bool(cfg["use_preprocessing"])
    return cfg


def evaluate(X, y, overrides: dict, seed: int):
    import torch
    from deem import DEEM

    torch.manual_seed(seed)
    t = time.perf_counter()
    try:
        acc = float(DEEM(**overrides, random_state=seed).fit(X).score(X, y))
        err = None
    except Exception as exc:  # a candidate that fails scores 0 on this dataset
        acc, err = 0.0, f"{type(exc).__name__}: {exc}"[:300]
    return acc, time.perf_counter() - t, err


def run_search(args, candidates):
    from deem._validation import check_labels
    from deem.meta_features import meta_features

    settings = dict(seed=args.seed, quick=args.quick, generator="make_ensemble v2")
    results = {"settings": settings, "datasets": []}
    if os.path.exists(args.results):
        with open(args.results) as f:
            old = json.load(f)
        if old.get("settings") == settings:
            results = old
            print(f"resuming from {args.results}: {len(old['datasets'])} datasets", flush=True)
    by_seed = {r["spec"]["seed"]: r for r in results["datasets"]}
    t0 = time.time()
    spent = float(results.get("search_seconds", 0.0))
    for j in range(args.n_datasets):
        seed = args.seed * 100003 + j
        X, y, spec = make_ensemble(seed, quick=args.quick)
        kind = "soft" if spec["soft"] else "hard"
        rec = by_seed.get(seed)
        if rec is None:
            rec = dict(spec=spec, kind=kind, features=meta_features(check_labels(X)),
                       accuracy={}, seconds={}, errors={})
            results["datasets"].append(rec)
            by_seed[seed] = rec
        todo = [c for c in candidates if kind in CANDIDATES[c][1] and c not in rec["accuracy"]]
        for name in todo:
            acc, sec, err = evaluate(X, y, CANDIDATES[name][0], args.seed)
            rec["accuracy"][name] = acc
            rec["seconds"][name] = round(sec, 3)
            if err:
                rec["errors"][name] = err
        if todo:
            results["search_seconds"] = round(spent + time.time() - t0, 1)
            _write_json(args.results, results)
            best = max(rec["accuracy"].values())
            print(f"[{j + 1}/{args.n_datasets} {time.time() - t0:6.0f}s] {kind} n={spec['n_samples']} "
                  f"d={spec['n_classifiers']} k={spec['n_classes']} {spec['pattern']}: default "
                  f"{rec['accuracy']['default']:.4f} best {best:.4f} "
                  f"({max(rec['accuracy'], key=rec['accuracy'].get)})", flush=True)
    results["datasets"] = [by_seed[args.seed * 100003 + j] for j in range(args.n_datasets) if
                           args.seed * 100003 + j in by_seed]
    _write_json(args.results, results)
    return results


# ------------------------------------------------------------------------------ fit
def _gains(rec, names):
    """Accuracy minus the default's per candidate (None where not applicable); ties -> 0."""
    base = rec["accuracy"]["default"]
    out = []
    for name in names:
        a = rec["accuracy"].get(name)
        if a is None:
            out.append(None)
            continue
        g = a - base
        out.append(0.0 if abs(g) <= TIE else round(g, 5))
    return out


def _winner(rec, names):
    """Best candidate with ties (within TIE) going to the default, else to the fastest."""
    acc = rec["accuracy"]
    best = max(acc.values())
    close = [n for n in names if n in acc and acc[n] >= best - TIE]
    if "default" in close:
        return "default"
    return min(close, key=lambda n: rec["seconds"].get(n, math.inf))


def build_bundle(records, names, kinds_available, metadata=None):
    from deem.autotune import FORMAT, SCHEMA_VERSION
    from deem.meta_features import FEATURE_NAMES

    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    feats = np.array([[r["features"][f] for f in FEATURE_NAMES] for r in records], dtype=float)
    # The model is scikit-learn's: a StandardScaler and a nearest-neighbour index over the
    # standardized meta-features. The bundle stores their fitted arrays as JSON; deem.autotune
    # evaluates them in plain Python at fit time (no pickle, no sklearn objects to unpickle).
    scaler = StandardScaler().fit(feats)  # zero-variance features get scale 1
    mean, scale = scaler.mean_, scaler.scale_
    weights = np.ones(len(FEATURE_NAMES))
    weights[FEATURE_NAMES.index("soft")] = 0.0  # neighbours are taken within the same kind anyway
    z = scaler.transform(feats) * weights
    soft = feats[:, FEATURE_NAMES.index("soft")] >= 0.5
    max_distance = {}
    for kind, mask in (("hard", ~soft), ("soft", soft)):
        zz = z[mask]
        if len(zz) >= 2:
            # The farthest any training ensemble lies from its nearest other one, times a factor:
            # data farther than that from all of them is outside what the search covered.
            dist, _ = NearestNeighbors(n_neighbors=2).fit(zz).kneighbors(zz)
            max_distance[kind] = float(MAX_DISTANCE_FACTOR * dist[:, 1].max())
        else:
            max_distance[kind] = 0.0
    configs = [full_config(CANDIDATES[n][0], "soft" if CANDIDATES[n][1] == ("soft",) else "hard") for n in names]
    kinds = [list(kinds_available[n]) for n in names]
    # "default" is the hard default (exact EM); for soft labels the default is GWG with defaults.
    soft_default_name = "default-soft"
    names = list(names) + [soft_default_name]
    configs.append(full_config({}, "soft"))
    kinds.append(["soft"])
    i_def = names.index("default")
    kinds[i_def] = ["hard"]
    gains = []
    for r in records:
        g = _gains(r, names[:-1])
        if r["kind"] == "soft":  # the soft rows' default column belongs to default-soft
            g.append(g[i_def])
            g[i_def] = None
        else:
            g.append(None)
        gains.append(g)
    bundle = dict(
        format=FORMAT, schema_version=SCHEMA_VERSION, feature_names=list(FEATURE_NAMES),
        configs=configs, config_names=names, config_kinds=kinds,
        default_config=dict(hard=i_def, soft=len(names) - 1),
        model=dict(type="knn-gain", k=K_NEIGHBOURS, margin=MARGIN, min_win_fraction=MIN_WIN_FRACTION,
                   feature_mean=mean.tolist(),
                   feature_scale=scale.tolist(), feature_weights=weights.tolist(), train_features=feats.tolist(),
                   train_gain=gains, max_distance=max_distance),
        metadata=metadata or {},
    )
    return bundle


def _comparison(baseline_acc, predicted_acc, oracle_acc, chosen, baseline_name, baseline, worst_key, best_key=None):
    """Summary of predicted vs baseline accuracy over datasets (the keys the bundle's metadata uses)."""
    diff = np.asarray(predicted_acc) - np.asarray(baseline_acc)
    out = {
        "n_datasets": len(diff),
        "mean_accuracy_predicted": round(float(np.mean(predicted_acc)), 5),
        f"mean_accuracy_{baseline}": round(float(np.mean(baseline_acc)), 5),
        "mean_accuracy_oracle": round(float(np.mean(oracle_acc)), 5),
        "n_predicted_non_default": int(sum(c != baseline_name for c in chosen)),
        f"n_worse_than_{baseline}_by_over_1_point": int((diff < -0.01).sum()),
        f"n_better_than_{baseline}_by_over_1_point": int((diff > 0.01).sum()),
        worst_key: round(float(diff.min()), 5),
    }
    if best_key:
        out[best_key] = round(float(diff.max()), 5)
    return out


def leave_one_out(records, names, kinds_available):
    """Per kind: mean accuracy of the LOO-predicted config, the default, the best per dataset."""
    from deem.autotune import Predictor

    rows, sampler_rows = [], []
    for i, rec in enumerate(records):
        rest = records[:i] + records[i + 1:]
        pred = Predictor(build_bundle(rest, names, kinds_available))
        idx, _ = pred.choose(rec["features"])
        name = pred.config_names[idx]
        name = "default" if name == "default-soft" else name
        rows.append((rec["kind"], rec["accuracy"]["default"], rec["accuracy"][name],
                     max(rec["accuracy"].values()), name))
        # The same with solver='gwg' set by the user: the baseline is the sampler with defaults.
        idx, _ = pred.choose(rec["features"], {"solver": "gwg"})
        if idx is None or "gwg-default" not in rec["accuracy"]:  # e.g. --quick: no such candidate
            continue
        gwg_name = pred.config_names[idx]
        sampler_rows.append((rec["accuracy"]["gwg-default"], rec["accuracy"][gwg_name],
                             max(a for n, a in rec["accuracy"].items() if CANDIDATES[n][0].get("solver") == "gwg"),
                             gwg_name))
    out = {"solver_gwg_fixed": {} if not sampler_rows else _comparison(
        [r[0] for r in sampler_rows], [r[1] for r in sampler_rows], [r[2] for r in sampler_rows],
        [r[3] for r in sampler_rows], "gwg-default", baseline="gwg_defaults", worst_key="worst_difference")}
    for kind in ("hard", "soft", "all"):
        sel = [r for r in rows if kind in ("all", r[0])]
        if sel:
            out[kind] = _comparison([r[1] for r in sel], [r[2] for r in sel], [r[3] for r in sel],
                                    [r[4] for r in sel], "default", baseline="default",
                                    worst_key="worst_difference_to_default",
                                    best_key="best_difference_to_default")
    return out


def real_check(folder_root, bundle_path, seed):
    """Default vs auto-predicted configuration on real crowds (answers.csv/truth.csv folders)."""
    import pandas as pd
    import torch
    from deem import DEEM
    from deem._validation import check_labels
    from deem.autotune import load_predictor
    from deem.long_format import learn_coding, pivot
    from deem.meta_features import meta_features

    pred = load_predictor(bundle_path)
    out = {}
    for name in sorted(os.listdir(folder_root)):
        folder = os.path.join(folder_root, name)
        if not os.path.exists(os.path.join(folder, "answers.csv")):
            continue
        answers = pd.read_csv(os.path.join(folder, "answers.csv"), dtype={"task": str, "worker": str})
        truth = pd.read_csv(os.path.join(folder, "truth.csv"), dtype={"task": str}).set_index("task")["label"]
        workers, classes = learn_coding(answers, "worker", "label", None)
        X = pivot(answers, "task", "worker", "label", workers, classes).matrix
        feats = meta_features(check_labels(X))
        idx, why = pred.choose(feats)
        params = pred.configs[idx]
        res = {"chosen": pred.config_names[idx], "reason": why}
        for label, kw in (("default", {}), ("predicted", params)):
            torch.manual_seed(seed)
            t = time.perf_counter()
            model = DEEM(random_state=seed, **kw).fit_long(answers)
            p = model.predict_long(answers)
            acc = float((p.reindex(truth.index) == truth).mean())
            res[label] = dict(accuracy=round(acc, 5), seconds=round(time.perf_counter() - t, 2))
        res["difference"] = round(res["predicted"]["accuracy"] - res["default"]["accuracy"], 5)
        out[name] = res
        print(f"real {name}: {res}", flush=True)
    return out


def _write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 small datasets, 4 candidates, no waiting "
                    f"(defaults --out {QUICK_OUT}, --results {QUICK_RESULTS})")
    ap.add_argument("--out", help=f"bundle to write (default {os.path.relpath(DEFAULT_OUT, REPO)})")
    ap.add_argument("--results", help=f"search results (default {os.path.relpath(DEFAULT_RESULTS, REPO)})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-datasets", type=int, help="synthetic ensembles (default 120, quick 8)")
    ap.add_argument("--refit-only", action="store_true", help="no fitting: refit the predictor from --results")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for scheduler/use_preprocessing support")
    ap.add_argument("--wait-minutes", type=float, default=40.0)
    ap.add_argument("--real-datasets", help="folder of real crowds to check the bundle on (not trained on)")
    args = ap.parse_args(argv)
    args.out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    args.results = args.results or (QUICK_RESULTS if args.quick else DEFAULT_RESULTS)
    args.n_datasets = args.n_datasets or (8 if args.quick else 120)

    import torch
    torch.set_num_threads(1)
    t0 = time.time()
    names = list(QUICK_CANDIDATES if args.quick else CANDIDATES)
    if args.refit_only:
        with open(args.results) as f:
            results = json.load(f)
        available = {n for r in results["datasets"] for n in r["accuracy"]}
        names = [n for n in names if n in available]
        new_ok = all(n in available for n in CANDIDATES if NEEDS_NEW & set(CANDIDATES[n][0]))
    else:
        uses_new = any(NEEDS_NEW & set(CANDIDATES[n][0]) for n in names)
        new_ok = probe_new_features(0.0 if (args.quick or args.no_wait) else args.wait_minutes * 60) \
            if uses_new else True
        if not new_ok:
            names = [n for n in names if not NEEDS_NEW & set(CANDIDATES[n][0])]
        results = run_search(args, names)
    records = results["datasets"]
    if not args.refit_only:
        # Keep only the datasets this run was asked for.
        records = records[:args.n_datasets]
    # A candidate that failed everywhere (not implemented) is dropped rather than learned as "bad".
    names = [n for n in names if any(n in r["accuracy"] and n not in r["errors"] for r in records)
             or n == "default"]
    kinds_available = {n: CANDIDATES[n][1] for n in names}
    search_s = time.time() - t0

    loo = leave_one_out(records, names, kinds_available)
    import sklearn
    import torch as _torch
    from deem.autotune import KEYS
    winners = {}
    for r in records:
        w = _winner(r, names)
        winners[w] = winners.get(w, 0) + 1
    metadata = dict(
        command="python " + " ".join([os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "?"] + sys.argv[1:]),
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        python=platform.python_version(), numpy=np.__version__, torch=_torch.__version__,
        sklearn=sklearn.__version__, seed=args.seed, quick=args.quick, n_datasets=len(records),
        n_hard=sum(r["kind"] == "hard" for r in records), n_soft=sum(r["kind"] == "soft" for r in records),
        generator=("make_ensemble in benchmarks/train_hyperparameter_predictor.py: Dawid-Skene with symmetric/"
                   "random/class-dependent confusions, spammers, adversarial permuters, correlated copies, "
                   "hard items, class imbalance, K 2-10, D 3-100, N 200-3000, dense/uniform/crowd missingness, "
                   "20% soft (Dirichlet around the emitted label)"),
        candidates={n: CANDIDATES[n][0] for n in names},
        scheduler_and_preprocessing_available=new_ok,
        predicted_keys=list(KEYS),
        selection=dict(k=K_NEIGHBOURS, margin=MARGIN, min_win_fraction=MIN_WIN_FRACTION, tie=TIE,
                       max_distance_factor=MAX_DISTANCE_FACTOR),
        winners=winners,
        leave_one_out=loo,
        search_seconds=results.get("search_seconds", round(search_s, 1)),
        mean_fit_seconds={n: round(float(np.mean([r["seconds"][n] for r in records if n in r["seconds"]])), 3)
                          for n in names},
    )
    bundle = build_bundle(records, names, kinds_available, metadata)
    _write_json(args.out, bundle)
    if args.real_datasets:
        bundle["metadata"]["real_datasets_check"] = real_check(args.real_datasets, args.out, args.seed)
        _write_json(args.out, bundle)
    from deem.autotune import load_predictor
    load_predictor(args.out)  # the bundle must load
    print(json.dumps(dict(leave_one_out=loo, winners=winners), indent=1))
    print(f"wrote {args.out} ({len(records)} datasets, {len(names)} candidates) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
