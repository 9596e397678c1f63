"""Why the default scores what it scores on the sets where it falls short: the evidence behind README's claims.

    OMP_NUM_THREADS=1 python benchmarks/missingness_study.py [--datasets-dir ../shared/datasets]
        [--ws-dir ../shared/weak_supervision] [--parts presence,web,census,anchor,presence-priors]
        [--json out.json]

- ``presence``: the log Bayes factor of class-dependent presence that ``missing='auto'`` reads
  (``deem.missingness.presence_log_bayes_factor``) on every crowd and labeling-function set, and
  what the informative and the ignorable fits score there (accuracy on the gold tasks / rows with a vote).
- ``web``: ``solver='exact'`` on ``web`` with and without each of its two priors (the pooled
  ``prior_strength`` and the diagonal "a voter names the true class more often than any other"),
  from each of the two starts, against Dawid–Skene-style EM without priors stopped after 10 to 3000
  iterations; and ``bayes`` with its learned prior and with the prior held at its start.
- ``census``: the informative model fitted with the gold labels (supervised naive Bayes: is the model
  family able to separate the classes?), EM started from those parameters (does the likelihood keep
  them?), and what the unsupervised fit's hidden classes track (votes per row).
- ``anchor``: where the fit stops (``deem/anchor.py``): on every crowd and labeling-function set, the
  default and each of ``anchor='majority'`` / ``'none'`` under each ``missing`` choice.
- ``presence-priors``: the presence test under its uniform Beta(1, 1) group priors (what ``'auto'``
  reads) against a hierarchical prior, the group rates ``Beta(kappa * p, kappa * (1 - p))`` around the
  voter's own rate ``p ~ U(0, 1)`` (integrated on a logit grid), for ``kappa`` in 0.5, 1, 2, 5, on the
  eight crowds (where ``'ignorable'`` is right) and the 75 labeling-function sets of
  ``benchmarks/weak_supervision.py`` (where ``'informative'`` is): wrong calls per prior.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from accuracy import load_dataset, to_wide  # noqa: E402
from scipy.special import betaln, logsumexp  # noqa: E402

from deem import DEEM, ops  # noqa: E402
from deem._validation import check_labels  # noqa: E402
from deem.missingness import presence_log_bayes_factor  # noqa: E402
from deem.rbm import RBM  # noqa: E402
from deem.solvers import map_m_step_informative, train_exact  # noqa: E402
from deem.solvers.bayes import train_variational  # noqa: E402

CROWDS = ["rte", "dog", "face", "product", "web", "ms", "sp", "adult2"]
WS = ["youtube", "trec", "census"]


def load_ws(folder):
    L = np.loadtxt(os.path.join(folder, "L.csv"), delimiter=",", dtype=np.int64)
    y = np.loadtxt(os.path.join(folder, "y.csv"), delimiter=",", dtype=np.int64)
    return L, y, int(max(L.max(), y.max())) + 1


def crowd_matrix(folder):
    answers, gold, k = load_dataset(folder)
    tasks, X = to_wide(answers)
    g = gold.reindex(tasks)
    known = g.notna().to_numpy()
    return X, g.fillna(-1).astype(np.int64).to_numpy(), known, k


def load_set(args, name):
    """``(labels, gold, rows scored, K)`` of a crowd (gold tasks) or a labeling-function set (rows with a vote)."""
    if name in CROWDS:
        return crowd_matrix(os.path.join(args.datasets_dir, name))
    X, y, k = load_ws(os.path.join(args.ws_dir, name))
    return X, y, (X >= 0).any(1), k


def acc(pred, y, mask):
    return float((pred[mask] == y[mask]).mean())


def presence(args):
    rows = []
    for name in CROWDS + WS:
        X, y, mask, k = load_set(args, name)
        factor = presence_log_bayes_factor(torch.as_tensor(X), k)
        row = {"set": name, "log_bayes_factor": factor}
        for missing in ("informative", "ignorable"):
            row[missing] = acc(DEEM(n_classes=k, missing=missing).fit(X).predict(X), y, mask)
        rows.append(row)
        print(f"{name}: log BF {factor:+.1f}, informative {row['informative']:.4f}, "
              f"ignorable {row['ignorable']:.4f}", flush=True)
    return rows


def _hidden_accuracy(rbm, data, y, mask):
    return acc(rbm.hidden_probs(data)[:, 0].argmax(1).numpy(), y, mask)


def _loglik(rbm, data):
    with torch.no_grad():
        logp = rbm.W[..., 0].double().log_softmax(0)
        logpi = rbm.b_h[0].double().log_softmax(0)
        return -float(ops.hard_evidence_pass(data.values, logp, logpi, None, False, False)[2])


def web(args):
    import deem.solvers as solvers
    import deem.solvers.bayes as variational

    X, y, mask, k = crowd_matrix(os.path.join(args.datasets_dir, "web"))
    data = check_labels(X, n_classes=k)
    both = solvers.start_posteriors
    rows = []
    try:
        for strength, diagonal in [(2.0, 2.0), (0.0, 0.0), (0.0, 2.0), (2.0, 0.0)]:
            for which, start in enumerate(("soft", "hard")):
                solvers.start_posteriors = lambda d, w=which: (both(d)[w],)
                rbm = RBM(data.n_classifiers, k, 1)
                train_exact(rbm, data, strength, diagonal_strength=diagonal)
                rows.append({"fit": f"exact prior_strength={strength:g} diagonal={diagonal:g} start={start}",
                             "accuracy": _hidden_accuracy(rbm, data, y, mask), "loglik": _loglik(rbm, data)})
                print(rows[-1], flush=True)
        solvers.start_posteriors = lambda d: (both(d)[0],)
        for iters in (10, 30, 100, 3000):
            rbm = RBM(data.n_classifiers, k, 1)
            train_exact(rbm, data, 0.0, diagonal_strength=0.0, max_iter=iters)
            rows.append({"fit": f"EM without priors, soft start, {iters} iterations",
                         "accuracy": _hidden_accuracy(rbm, data, y, mask), "loglik": _loglik(rbm, data)})
            print(rows[-1], flush=True)
        for which, start in enumerate(("soft", "hard")):
            variational.start_posteriors = lambda d, w=which: (both(d)[w],)
            for learn in (True, False):
                rbm = RBM(data.n_classifiers, k, 1)
                fit = train_variational(rbm, data, learn=learn)
                rows.append({"fit": f"bayes start={start} prior {'learned' if learn else 'held at its start'}",
                             "accuracy": _hidden_accuracy(rbm, data, y, mask), "prior": fit.prior})
                print(rows[-1], flush=True)
    finally:
        solvers.start_posteriors = both
        variational.start_posteriors = both
    return rows


def census(args):
    L, y, k = load_ws(os.path.join(args.ws_dir, "census"))
    data = check_labels(L, n_classes=k)
    has = (L >= 0).any(1)
    truth = torch.nn.functional.one_hot(torch.as_tensor(y), k).double()
    from deem.alignment import confusion_counts

    counts = confusion_counts(data, truth).permute(1, 2, 0)
    log_ext, logpi, _ = map_m_step_informative(counts, truth.sum(0), 2.0, 2.0)
    out = {}

    def score(log_ext, logpi):
        logp, la = log_ext[:-1].contiguous(), log_ext[-1].t().contiguous()
        _, _, nll, post = ops.hard_evidence_pass(data.values, logp, logpi, la, False, True)
        return -float(nll), post.argmax(1).numpy()

    ll, pred = score(log_ext, logpi)
    out["supervised"] = {"loglik": ll, "accuracy": acc(pred, y, has)}
    # EM from the supervised parameters: does the likelihood keep them?
    for _ in range(300):
        logp, la = log_ext[:-1].contiguous(), log_ext[-1].t().contiguous()
        c, mass, _, _ = ops.hard_evidence_pass(data.values, logp, logpi, la, True, False)
        log_ext, logpi, _ = map_m_step_informative(c, mass, 2.0, 2.0)
    ll, pred = score(log_ext, logpi)
    out["em_from_supervised"] = {"loglik": ll, "accuracy": acc(pred, y, has)}
    model = DEEM(missing="informative").fit(L)
    pred = model.predict(L)
    votes = (L >= 0).sum(1)
    out["default"] = {"accuracy": acc(pred, y, has),
                      "votes_per_row_by_predicted_class": [float(votes[pred == c].mean()) for c in range(k)],
                      "votes_per_row_by_true_class": [float(votes[y == c].mean()) for c in range(k)]}
    print(json.dumps(out, indent=1), flush=True)
    return out


def anchor(args):
    rows = []
    settings = {"default": {}, "ignorable-majority": {"missing": "ignorable", "anchor": "majority"},
                "ignorable-none": {"missing": "ignorable", "anchor": "none"},
                "informative-majority": {"missing": "informative", "anchor": "majority"},
                "informative-none": {"missing": "informative", "anchor": "none"}}
    for name in CROWDS + WS:
        X, y, mask, k = load_set(args, name)
        row = {"set": name}
        for label, params in settings.items():
            row[label] = acc(DEEM(n_classes=k, random_state=0, **params).fit(X).predict(X), y, mask)
        rows.append(row)
        print(name + ": " + ", ".join(f"{m} {row[m]:.4f}" for m in settings), flush=True)
    return rows


def _presence_groups(values: np.ndarray, k: int):
    """Per voter that answers on some rows but not all: rows per group and answers per group ``(D', K + 1)``,
    the groups being the other voters' majority vote (``k``: none of them voted), as in
    ``deem.missingness.presence_log_bayes_factor``; and the number of rows."""
    x = torch.as_tensor(values).long()
    n, d = x.shape
    present = x >= 0
    row, col = present.nonzero(as_tuple=True)
    lab = x[row, col]
    votes = torch.zeros(n, k, dtype=torch.int64)
    votes.index_put_((row, lab), torch.ones_like(lab), accumulate=True)
    group = torch.where(votes.sum(1) > 0, votes.argmax(1), torch.full((n,), k))
    others = votes[row].clone()
    others[torch.arange(len(row)), lab] -= 1
    loo = torch.where(others.sum(1) > 0, others.argmax(1), torch.full_like(lab, k))
    ones = torch.ones_like(loo, dtype=torch.float64)
    hits = torch.zeros(d, k + 1, dtype=torch.float64).index_put_((col, loo), ones, accumulate=True)
    in_mv = torch.zeros(d, k + 1, dtype=torch.float64).index_put_((col, group[row]), ones, accumulate=True)
    size = torch.bincount(group, minlength=k + 1).double().unsqueeze(0) - in_mv + hits
    total = present.sum(0)
    keep = (total > 0) & (total < n)
    return size[keep].numpy(), hits[keep].numpy(), n


_LOGIT = np.linspace(-18.0, 18.0, 361)
_P = 1.0 / (1.0 + np.exp(-_LOGIT))
_LOG_WEIGHT = np.log(_P * (1.0 - _P) * (_LOGIT[1] - _LOGIT[0]))  # U(0, 1) on p, on the logit grid


def _hierarchical_log_bayes_factor(size, hits, n, kappa):
    a, b = kappa * _P[None, :, None], kappa * (1.0 - _P[None, :, None])
    h, m = hits[:, None, :], size[:, None, :]
    per_p = np.where(m > 0, betaln(h + a, m - h + b) - betaln(a, b), 0.0).sum(2)  # (D', grid)
    grouped = logsumexp(per_p + _LOG_WEIGHT[None, :], axis=1)
    total = hits.sum(1)
    return float((grouped - betaln(1.0 + total, 1.0 + n - total)).sum())


def presence_priors(args):
    import weak_supervision as ws

    kappas = (0.5, 1.0, 2.0, 5.0)
    sets = [(name, "crowd", crowd_matrix(os.path.join(args.datasets_dir, name))[0],
             crowd_matrix(os.path.join(args.datasets_dir, name))[3]) for name in CROWDS]
    sets += [(name, "labeling functions", *load_ws(os.path.join(args.ws_dir, name))[::2]) for name in WS]
    for entry in ws.synthetic_grid():
        L, _, k = ws.make_synthetic(entry)
        sets.append((entry["name"], "labeling functions", L, k))
    rows, wrong = [], {"uniform": 0, **{f"kappa={kp:g}": 0 for kp in kappas}}
    for name, kind, X, k in sets:
        size, hits, n = _presence_groups(X, k)
        row = {"set": name, "kind": kind, "uniform": presence_log_bayes_factor(torch.as_tensor(X), k)}
        for kp in kappas:
            row[f"kappa={kp:g}"] = _hierarchical_log_bayes_factor(size, hits, n, kp)
        for prior in wrong:
            wrong[prior] += int((row[prior] > 0) != (kind == "labeling functions"))
        rows.append(row)
        print(f"{name} ({kind}): " + ", ".join(f"{p} {row[p]:+.1f}" for p in wrong), flush=True)
    print("wrong calls: " + ", ".join(f"{p} {c}" for p, c in wrong.items()), flush=True)
    return {"sets": rows, "wrong_calls": wrong}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets-dir", default=os.path.join(REPO, "..", "shared", "datasets"))
    ap.add_argument("--ws-dir", default=os.path.join(REPO, "..", "shared", "weak_supervision"))
    ap.add_argument("--parts", default="presence,web,census")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    parts = {"presence": presence, "web": web, "census": census, "anchor": anchor,
             "presence-priors": presence_priors}
    results = {}
    for part in args.parts.split(","):
        if part not in parts:
            ap.error(f"unknown part {part!r}; choose from {sorted(parts)}")
        results[part] = parts[part](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
