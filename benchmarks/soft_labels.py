"""Soft-label accuracy: does any aggregator beat averaging the classifiers' probabilities?

Real ensembles on datasets that ship with scikit-learn (no network): for each
dataset and seed, split train/test in half, train a dozen diverse sklearn
classifiers, each on its own random subset of the training rows and features
(so they differ and some are weak), and take their ``predict_proba`` on the test
split as soft labels ``(N, K, D)``. Variant ``missing``: the same soft labels
with each classifier's column zeroed (missing) on a random 30% of the items.

Methods, scored against the test truth (all fitted on the test split's labels
only, without ground truth; EM hidden states are matched to the averaged
probabilities' argmax by Hungarian, never to the truth):

- ``mean prob``: argmax of the average of the present classifiers' probabilities (the baseline)
- ``majority vote``: the most frequent argmax (ties to the smallest class)
- ``DEEM default (soft)``: ``DEEM()`` on the soft labels (missing entries as all-zero
  columns): ``solver='auto'``, which is the virtual-evidence EM below, through the estimator
  (aligned to the majority vote at fit, like any user would get)
- ``DEEM soft (gwg)``: ``DEEM(solver='gwg')`` on the soft labels (the sampler-trained RBM)
- ``DEEM exact (hard)``: ``DEEM(solver='exact')`` (Dawid–Skene EM) on the argmax labels, -1 where missing
- ``virtual evidence``: :func:`deem.solvers.soft_evidence.fit_soft_evidence` (prior 2)
- ``geometric pool``: the library's ``train_exact`` EM run directly on soft labels
  (posterior ∝ pi_m prod_i exp(sum_l v_il log P_i(l|m)), fractional counts), with
  the hierarchical prior (prior 2) and without it (prior 0)

Run: ``python benchmarks/soft_labels.py --json benchmarks/results/soft-labels.json``
(``--seeds``, ``--datasets``, ``--threads``; ``--help``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn import datasets as skd
from sklearn.discriminant_analysis import (
    LinearDiscriminantAnalysis,
    QuadraticDiscriminantAnalysis,
)
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from deem import DEEM
from deem._validation import LabelData
from deem.alignment import hungarian_map
from deem.rbm import RBM
from deem.solvers.soft_evidence import fit_soft_evidence, posterior_soft_evidence
from deem.solvers import train_exact

METHODS = ["mean prob", "majority vote", "DEEM default (soft)", "DEEM soft (gwg)", "DEEM exact (hard)",
           "virtual evidence", "geometric pool, prior 2", "geometric pool, prior 0"]
MISSING_RATE = 0.3


# ----------------------------------------------------------------------------- data
def load(name: str, seed: int):
    if name == "digits":
        return skd.load_digits(return_X_y=True)
    if name == "wine":
        return skd.load_wine(return_X_y=True)
    if name == "breast_cancer":
        return skd.load_breast_cancer(return_X_y=True)
    if name == "iris":
        return skd.load_iris(return_X_y=True)
    if name == "synth-20class":  # many classes
        return skd.make_classification(n_samples=2000, n_features=30, n_informative=16, n_redundant=6,
                                       n_classes=20, n_clusters_per_class=1, class_sep=1.5, flip_y=0.02,
                                       random_state=100 + seed)
    if name == "synth-imbalanced":  # class imbalance
        return skd.make_classification(n_samples=3000, n_features=20, n_informative=8, n_redundant=4,
                                       n_classes=5, n_clusters_per_class=2, weights=[0.6, 0.2, 0.1, 0.07, 0.03],
                                       class_sep=1.0, flip_y=0.03, random_state=200 + seed)
    raise ValueError(f"unknown dataset {name!r}")


DATASETS = ["digits", "wine", "breast_cancer", "iris", "synth-20class", "synth-imbalanced"]


def ensemble(seed: int):
    """A dozen diverse classifiers; some are weak on purpose (stumps, 1-NN, naive Bayes)."""
    def scaled(est):
        return make_pipeline(StandardScaler(), est)

    return [
        ("logreg", scaled(LogisticRegression(max_iter=500))),
        ("logreg-strongreg", scaled(LogisticRegression(C=0.01, max_iter=500))),
        ("gaussian-nb", GaussianNB()),
        ("knn-1", scaled(KNeighborsClassifier(n_neighbors=1))),
        ("knn-15", scaled(KNeighborsClassifier(n_neighbors=15))),
        ("tree-depth2", DecisionTreeClassifier(max_depth=2, random_state=seed)),
        ("tree-full", DecisionTreeClassifier(random_state=seed)),
        ("random-forest", RandomForestClassifier(n_estimators=50, random_state=seed)),
        ("extra-trees", ExtraTreesClassifier(n_estimators=50, random_state=seed)),
        ("svc-rbf", scaled(SVC(probability=True, random_state=seed))),
        ("mlp", scaled(MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=seed))),
        ("lda", LinearDiscriminantAnalysis()),
        ("qda-reg", QuadraticDiscriminantAnalysis(reg_param=0.5)),
    ]


def soft_labels(name: str, seed: int):
    """``(V (N, K, D) float64, y_test (N,), member names, member test accuracies)``."""
    X, y = load(name, seed)
    y = np.unique(y, return_inverse=True)[1]
    k = int(y.max()) + 1
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)
    members = ensemble(seed)
    V = np.zeros((len(X_te), k, len(members)))
    accs = []
    for j, (_, est) in enumerate(members):
        n_rows = max(int(rng.uniform(0.2, 0.8) * len(X_tr)), 4 * k)
        # rows: a random subset holding every class at least twice
        rows = rng.permutation(len(X_tr))[:n_rows]
        for c in range(k):
            if (y_tr[rows] == c).sum() < 2:
                rows = np.concatenate([rows, np.flatnonzero(y_tr == c)[:2]])
        n_feat = max(1, round(rng.uniform(0.2, 0.7) * X.shape[1]))
        feats = np.sort(rng.permutation(X.shape[1])[:n_feat])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                est.fit(X_tr[rows][:, feats], y_tr[rows])
            except Exception:  # e.g. QDA with fewer rows of a class than features: use every training row
                est.fit(X_tr[:, feats], y_tr)
            proba = est.predict_proba(X_te[:, feats])
        V[:, est.classes_, j] = proba
        accs.append(float((V[:, :, j].argmax(axis=1) == y_te).mean()))
    V = V / V.sum(axis=1, keepdims=True)
    return V, y_te, [m for m, _ in members], accs


def drop_entries(V: np.ndarray, seed: int) -> np.ndarray:
    """Zero each classifier's column on a random MISSING_RATE of the rows (every row keeps one)."""
    rng = np.random.default_rng(10_000 + seed)
    n, _, d = V.shape
    missing = rng.random((n, d)) < MISSING_RATE
    missing[np.arange(n), rng.integers(0, d, n)] = False
    out = V.copy()
    out.transpose(0, 2, 1)[missing] = 0.0
    return out


# ----------------------------------------------------------------------------- methods
def aligned(hidden_probs: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Predicted classes, hidden states matched to ``reference`` (the averaged probabilities' argmax)."""
    mapping = hungarian_map(hidden_probs.argmax(axis=1), reference, k)
    return mapping[hidden_probs.argmax(axis=1)]


def run_method(method: str, V: np.ndarray, seed: int):
    n, k, d = V.shape
    present = V.sum(axis=1) > 0  # (N, D)
    mean_pred = V.sum(axis=2).argmax(axis=1)  # average over the present classifiers, same argmax
    if method == "mean prob":
        return mean_pred
    hard = np.where(present, V.argmax(axis=1), -1)
    if method == "majority vote":
        counts = np.zeros((n, k))
        for i in range(d):
            ok = hard[:, i] >= 0
            np.add.at(counts, (np.flatnonzero(ok), hard[ok, i]), 1)
        return counts.argmax(axis=1)
    if method == "DEEM default (soft)":
        return DEEM(random_state=seed, device="cpu").fit(V).predict(V)
    if method == "DEEM soft (gwg)":
        return DEEM(solver="gwg", random_state=seed, device="cpu").fit(V).predict(V)
    if method == "DEEM exact (hard)":
        return DEEM(solver="exact", n_classes=k, random_state=seed, device="cpu").fit(hard).predict(hard)
    if method == "virtual evidence":
        t = torch.from_numpy(V)
        logp, logpi, _ = fit_soft_evidence(t, prior_strength=2.0)
        return aligned(posterior_soft_evidence(t, logp, logpi).numpy(), mean_pred, k)
    if method.startswith("geometric pool"):
        strength = float(method.rsplit(" ", 1)[1])
        data = LabelData(torch.from_numpy(V).float().contiguous(), soft=True, n_classes=k)
        rbm = RBM(d, k, 1, device="cpu")
        train_exact(rbm, data, strength, max_iter=1000, tol=1e-7)
        with torch.no_grad():
            q = rbm.hidden_probs(data)[:, 0, :].double().numpy()
        return aligned(q, mean_pred, k)
    raise ValueError(method)


# ----------------------------------------------------------------------------- diagnostics
def collapse_diagnostic():
    """The case that made ``exact`` refuse soft labels (tests/test_exact.py): smoothed one-hot labels."""
    from deem.datasets import dawid_skene

    X, y = dawid_skene(n_samples=3000, n_classifiers=10, n_classes=3, missing_rate=0.3, random_state=11)
    rng = np.random.default_rng(0)
    hard = np.where(X < 0, rng.integers(0, 3, X.shape), X)
    out = {}
    for smooth_name, V in [("0.7*onehot+0.1 (missing->random label)",
                            (np.eye(3)[hard] * 0.7 + 0.1).transpose(0, 2, 1)),
                           ("0.7*onehot+0.1, missing->all-zero column",
                            np.where((X >= 0)[:, None, :], (np.eye(3)[np.maximum(X, 0)] * 0.7 + 0.1)
                                     .transpose(0, 2, 1), 0.0))]:
        row = {}
        for method in ["mean prob", "virtual evidence", "geometric pool, prior 2", "geometric pool, prior 0"]:
            pred = run_method(method, V, 0)
            row[method] = {"accuracy": float((pred == y).mean()), "classes_predicted": len(np.unique(pred)),
                           "largest_class_share": float(np.bincount(pred, minlength=3).max() / len(pred))}
        out[smooth_name] = row
    return out


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--json", type=Path, help="write every run and the summary here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    records = []
    ensemble_info = {}
    t_start = time.perf_counter()
    for name in args.datasets:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            V_full, y, member_names, accs = soft_labels(name, seed)
            ensemble_info.setdefault(name, []).append(
                {"seed": seed, "n_test": len(y), "n_classes": int(V_full.shape[1]),
                 "member_accuracy": dict(zip(member_names, accs, strict=True)),
                 "train_seconds": time.perf_counter() - t0})
            for variant in ("full", "missing"):
                V = V_full if variant == "full" else drop_entries(V_full, seed)
                for method in METHODS:
                    t = time.perf_counter()
                    try:
                        pred = run_method(method, V, seed)
                        err = None
                    except Exception as exc:  # report, don't stop the benchmark
                        pred, err = None, f"{type(exc).__name__}: {exc}"[:200]
                    secs = time.perf_counter() - t
                    rec = {"dataset": name, "variant": variant, "seed": seed, "method": method, "seconds": secs}
                    if err is None:
                        pred = np.asarray(pred)
                        rec.update(accuracy=float((pred == y).mean()), classes_predicted=len(np.unique(pred)),
                                   classes_true=len(np.unique(y)),
                                   largest_class_share=float(np.bincount(pred).max() / len(pred)),
                                   largest_true_share=float(np.bincount(y).max() / len(y)))
                    else:
                        rec["error"] = err
                    records.append(rec)
            print(f"# {name} seed {seed}: members' accuracy {min(accs):.3f}..{max(accs):.3f}, "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    summary = summarize(records, args.datasets)
    diag = collapse_diagnostic()
    print_tables(summary, records, args, diag, ensemble_info)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": "python benchmarks/soft_labels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": args.threads, "processor": platform.processor() or platform.machine()},
            "missing_rate": MISSING_RATE, "methods": METHODS, "summary": summary,
            "collapse_diagnostic": diag, "ensembles": ensemble_info, "runs": records,
        }
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)


def summarize(records, names):
    out = {}
    for variant in ("full", "missing"):
        for name in names:
            for method in METHODS:
                runs = [r for r in records
                        if r["dataset"] == name and r["variant"] == variant and r["method"] == method]
                ok = [r for r in runs if "accuracy" in r]
                entry = {"seconds": float(np.mean([r["seconds"] for r in runs])), "n": len(ok)}
                if ok:
                    entry.update(accuracy=float(np.mean([r["accuracy"] for r in ok])),
                                 sd=float(np.std([r["accuracy"] for r in ok])),
                                 min_classes_predicted=int(min(r["classes_predicted"] for r in ok)),
                                 classes_true=int(ok[0]["classes_true"]),
                                 max_excess_largest_share=float(max(r["largest_class_share"] - r["largest_true_share"]
                                                                    for r in ok)))
                if len(ok) < len(runs):
                    entry["error"] = next(r["error"] for r in runs if "error" in r)
                out[f"{variant}/{name}/{method}"] = entry
    return out


def print_tables(summary, records, args, diag, ensemble_info):
    print(f"Accuracy on the test split, mean over {args.seeds} seeds (in brackets: mean seconds of fit + predict).")
    for variant in ("full", "missing"):
        title = "all classifiers answer every item" if variant == "full" else \
            f"each classifier misses a random {MISSING_RATE:.0%} of the items"
        print(f"\n### {variant}: {title}\n")
        print("| dataset | " + " | ".join(METHODS) + " |")
        print("|---" * (len(METHODS) + 1) + "|")
        means = {m: [] for m in METHODS}
        for name in args.datasets:
            info = ensemble_info[name][0]
            cells = []
            for m in METHODS:
                e = summary[f"{variant}/{name}/{m}"]
                if "accuracy" in e:
                    means[m].append(e["accuracy"])
                    flag = "" if e["min_classes_predicted"] >= e["classes_true"] else \
                        f", {e['min_classes_predicted']}/{e['classes_true']} classes"
                    cells.append(f"{e['accuracy']:.4f} ({e['seconds']:.2f} s{flag})")
                else:
                    cells.append("error: " + e.get("error", "?")[:60])
            print(f"| {name} (N={info['n_test']}, K={info['n_classes']}) | " + " | ".join(cells) + " |")
        print("| **mean** | " + " | ".join(
            f"**{np.mean(v):.4f}**" if len(v) == len(args.datasets) else "n/a" for v in means.values()) + " |")
        # paired comparison of virtual evidence against the baseline, per seed
        wins = losses = 0
        for name in args.datasets:
            for seed in range(args.seeds):
                pick = {r["method"]: r.get("accuracy") for r in records
                        if r["dataset"] == name and r["variant"] == variant and r["seed"] == seed}
                if pick.get("virtual evidence") is None:
                    continue
                wins += pick["virtual evidence"] > pick["mean prob"]
                losses += pick["virtual evidence"] < pick["mean prob"]
        print(f"\nvirtual evidence vs mean prob, per (dataset, seed): {wins} better, {losses} worse, "
              f"{len(args.datasets) * args.seeds - wins - losses} tied")
    print("\n### collapse diagnostic: the soft labels of tests/test_exact.py (N=3000, K=3, D=10; "
          "largest true class share 0.338)\n")
    print("| soft labels | " + " | ".join(next(iter(diag.values())).keys()) + " |")
    print("|---" * (len(next(iter(diag.values()))) + 1) + "|")
    for label, row in diag.items():
        print(f"| {label} | " + " | ".join(
            f"{v['accuracy']:.4f} (largest predicted class {v['largest_class_share']:.0%})"
            for v in row.values()) + " |")


if __name__ == "__main__":
    main()
