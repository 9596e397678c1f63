"""Would a confusion prior of learned shape close the gap to Dawid–Skene on ``web``? A study, not library code.

    OMP_NUM_THREADS=1 python benchmarks/prior_shape_study.py [--datasets web,rte,...] [--cv web]
        [--datasets-dir ../shared/datasets] [--json out.json]

The default (``solver='bayes'``) puts one Dirichlet prior on every voter's confusion column m,
``Dir(off + diag * e_m)``, and learns its two numbers by empirical Bayes. On ``web`` (a 5-grade relevance
scale) it trails crowd-kit's Dawid–Skene by 3.6 points, and Dawid–Skene without any prior does better
there (RESULTS.md, "Missing labels"). This study asks whether a prior whose *shape* is learned -- a
full ``K x K`` matrix of pseudo-counts ``A[l, m]`` shared by all voters, by the same empirical Bayes --
or a flat prior would do better, and whether any principled criterion (the evidence lower bound, the
held-out predictive likelihood of labels) would pick the configuration that scores best.

Every fit here is plain mean-field VB of the one-unit model (ignorable missingness), iterated from the
soft majority vote until no posterior probability moves by 1e-7 (at most 3000 steps); the prior's
numbers are set by empirical Bayes after every step, as the package's ``vb_update`` does. It is plain
EM, one start, no SQUAREM, so its symmetric fit can end at another fixed point than the package's default
(two starts; the default's accuracy is printed beside it). Columns:

* ``symmetric``: ``A = off + diag * I``, both learned (the default's model);
* ``full``: ``A`` learned whole, from the majority vote; ``full, warm``: from the symmetric fit's fixed point;
* ``flat 1`` / ``flat .5``: ``A`` fixed at 1 or 0.5 everywhere (no diagonal);
* ``gain bound``: at the symmetric fit, how much the bound rises when only ``A`` is re-learned whole (a
  lower bound on what the full prior's fit gains); ``penalty``: ``K^2/2 log D - log(D K)``, a BIC charge
  for the K^2 - 2 further prior numbers (each column's K numbers informed by D voters, the symmetric
  prior's two by D K columns).
* ``--cv``: on those sets, the labels are split in five folds; each configuration is fitted without one
  fold and scores that fold's labels by ``log sum_m q_n(m) E[P_i(l | m)]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import digamma as np_digamma
from scipy.special import gammaln

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from accuracy import DEFAULT_DATASETS, load_dataset

TOL, MAX_STEPS, BOUNDS = 1e-7, 3000, (1e-3, 1e3)
dg = torch.special.digamma


class Labels:
    """One crowd's labels as three index arrays (task, worker, label) and the gold labels by task index."""

    def __init__(self, answers, gold, k):
        self.tasks, t = np.unique(answers["task"].to_numpy(), return_inverse=True)
        _, w = np.unique(answers["worker"].to_numpy(), return_inverse=True)
        self.n, self.d, self.k = len(self.tasks), int(w.max()) + 1, k
        self.t, self.w = torch.as_tensor(t), torch.as_tensor(w)
        self.lab = torch.as_tensor(answers["label"].to_numpy().copy())
        idx = {x: i for i, x in enumerate(self.tasks)}
        self.gold = np.array([idx.get(x, -1) for x in gold.index]), gold.to_numpy()
        keep = self.gold[0] >= 0
        self.gold = (self.gold[0][keep], self.gold[1][keep])

    def subset(self, keep):
        out = object.__new__(Labels)
        out.__dict__.update(self.__dict__)
        out.t, out.w, out.lab = self.t[keep], self.w[keep], self.lab[keep]
        return out

    def counts(self, q):
        """``(K_l, K_m, D)`` expected counts of each voter's labels per true class."""
        c = torch.zeros(self.k, self.d, self.k, dtype=torch.float64)
        c.index_put_((self.lab, self.w), q[self.t], accumulate=True)
        return c.permute(0, 2, 1)

    def scores(self, elog):
        """``(N, K)``: the sum over each task's labels of ``E[log P_i(l | m)]``."""
        s = torch.zeros(self.n, self.k, dtype=torch.float64)
        return s.index_add_(0, self.t, elog[self.lab, :, self.w])

    def accuracy(self, q):
        return float((q.argmax(1).numpy()[self.gold[0]] == self.gold[1]).mean())

    def soft_vote(self):
        c = torch.zeros(self.n, self.k, dtype=torch.float64)
        c.index_put_((self.t, self.lab), torch.ones(len(self.t), dtype=torch.float64), accumulate=True)
        return c / c.sum(1, keepdim=True).clamp(min=1)


def eb_value(s, d, a):
    """The prior's part of the bound for every column: ``d (lgamma(sum a) - sum lgamma(a)) + sum (a - 1) s``."""
    return float(d * (gammaln(a.sum(0)) - gammaln(a).sum(0)).sum() + ((a - 1) * s).sum())


def learn_full(s, d, a0):
    """``A`` maximizing ``eb_value`` column by column (each column's objective is concave), in log space."""
    out = np.empty_like(a0)
    for m in range(s.shape[1]):
        def f(z, m=m):
            a = np.exp(z)
            v = d * (gammaln(a.sum()) - gammaln(a).sum()) + ((a - 1) * s[:, m]).sum()
            return -v, -(d * (np_digamma(a.sum()) - np_digamma(a)) + s[:, m]) * a
        r = minimize(f, np.log(a0[:, m]), jac=True, method="L-BFGS-B", bounds=[tuple(map(math.log, BOUNDS))] * len(a0))
        out[:, m] = np.exp(r.x)
    return out


def learn_symmetric(s, d, a0):
    """``off + diag * I`` maximizing ``eb_value``."""
    k = s.shape[0]

    def f(z):
        a = np.exp(z[1]) + np.exp(z[0]) * np.eye(k)
        return -eb_value(s, d, a)
    x0 = np.log([max(a0[0, 0] - a0[1, 0], BOUNDS[0]), a0[1, 0]]) if k > 1 else np.log([1.0, 1.0])
    r = minimize(f, x0, method="L-BFGS-B", bounds=[tuple(map(math.log, BOUNDS))] * 2)
    return np.exp(r.x[1]) + np.exp(r.x[0]) * np.eye(k)


def fit(data, prior, a, q):
    """Mean-field VB from the row posteriors ``q``; ``prior``: 'symmetric', 'full' or 'fixed' (``a`` kept).
    Returns ``(q, elbo, A, steps)``."""
    k, d = data.k, data.d
    for step in range(MAX_STEPS):
        c = data.counts(q)
        for _ in range(1 if prior == "fixed" else 2):  # learn A at the new counts, then the posteriors at A
            post = c + torch.as_tensor(a).unsqueeze(-1)
            elog = dg(post) - dg(post.sum(0, keepdim=True))
            if prior == "symmetric":
                a = learn_symmetric(elog.sum(2).numpy(), d, a)
            elif prior == "full":
                a = learn_full(elog.sum(2).numpy(), d, a)
        post = c + torch.as_tensor(a).unsqueeze(-1)
        total = post.sum(0, keepdim=True)
        elog = dg(post) - dg(total)
        ppi = q.sum(0) + 1.0
        elpi = dg(ppi) - dg(ppi.sum())
        s = data.scores(elog) + elpi
        ll = torch.logsumexp(s, 1)
        new_q = (s - ll[:, None]).exp()
        at = torch.as_tensor(a)
        kl = float(torch.lgamma(total).sum() - torch.lgamma(post).sum() + ((post - at.unsqueeze(-1)) * elog).sum()
                   - d * (torch.lgamma(at.sum(0)).sum() - torch.lgamma(at).sum()))
        kl += float(torch.lgamma(ppi.sum()) - torch.lgamma(ppi).sum() + ((ppi - 1) * elpi).sum()) - math.lgamma(k)
        elbo = float(ll.sum()) - kl
        move = float((new_q - q).abs().max())
        q = new_q
        if move < TOL:
            break
    return q, elbo, a, step + 1


def start_prior(k):
    return 1.0 + 2.0 * np.eye(k)  # the package's start of the learned prior, (diag, off) = (2, 1)


def held_out(data, prior, a0, folds=5, seed=0):
    """Sum over the labels of each fold of ``log sum_m q_n(m) E[P_i(l | m)]`` under the fit without it."""
    fold = np.random.default_rng(seed).integers(0, folds, len(data.t))
    total = 0.0
    for f in range(folds):
        train, test = data.subset(torch.as_tensor(fold != f)), data.subset(torch.as_tensor(fold == f))
        q, _, a, _ = fit(train, prior, a0.copy(), data.soft_vote())
        post = train.counts(q) + torch.as_tensor(a).unsqueeze(-1)
        mean = post / post.sum(0, keepdim=True)
        total += float((q[test.t] * mean[test.lab, :, test.w]).sum(1).log().sum())
    return total


def study(name, folder, cv):
    from deem import DEEM

    answers, gold, k = load_dataset(os.path.join(folder, name))
    data = Labels(answers, gold, k)
    default = DEEM(random_state=0).fit_long(answers)
    pred = default.predict_long(answers)
    row = {"K": k, "D": data.d, "default": float((pred.reindex(gold.index).to_numpy() == gold.to_numpy()).mean())}
    configs = {"symmetric": ("symmetric", start_prior(k)), "full": ("full", start_prior(k)),
               "flat 1": ("fixed", np.ones((k, k))), "flat .5": ("fixed", np.full((k, k), 0.5))}
    q0 = data.soft_vote()
    for label, (prior, a0) in configs.items():
        q, elbo, a, steps = fit(data, prior, a0.copy(), q0)
        row[label] = {"accuracy": data.accuracy(q), "elbo": elbo, "steps": steps}
        if label == "symmetric":
            q_sym, a_sym = q, a
            post = data.counts(q) + torch.as_tensor(a).unsqueeze(-1)
            s = (dg(post) - dg(post.sum(0, keepdim=True))).sum(2).numpy()
            row["gain bound"] = eb_value(s, data.d, learn_full(s, data.d, a.copy())) - eb_value(s, data.d, a)
            row["penalty"] = 0.5 * k * k * math.log(data.d) - math.log(data.d * k)
        if label == "full":
            row["full"]["prior"] = np.round(a, 3).tolist()
        if cv:
            row[label]["held_out"] = held_out(data, prior, a0)
        print(f"{name} {label}: {row[label]}", flush=True)
    q, elbo, a, steps = fit(data, "full", a_sym.copy(), q_sym)
    row["full, warm"] = {"accuracy": data.accuracy(q), "elbo": elbo, "steps": steps}
    print(f"{name}: {({x: v for x, v in row.items() if x != 'full'})}", flush=True)
    return row


def render(rows):
    cols = ["symmetric", "full", "full, warm", "flat 1", "flat .5"]
    out = ["| crowd | K | D | default | " + " | ".join(cols) + " | gain bound | penalty |",
           "|---" * (len(cols) + 6) + "|"]
    for name, r in rows.items():
        cells = []
        for c in cols:
            cell = f"{r[c]['accuracy']:.4f} ({r[c]['elbo']:,.0f})"
            if "held_out" in r[c]:
                cell += f" [{r[c]['held_out']:,.0f}]"
            cells.append(cell)
        out.append(f"| {name} | {r['K']} | {r['D']} | {r['default']:.4f} | " + " | ".join(cells)
                   + f" | {r['gain bound']:.1f} | {r['penalty']:.1f} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="rte,dog,face,product,web,ms,sp,adult2")
    p.add_argument("--datasets-dir", default=DEFAULT_DATASETS)
    p.add_argument("--cv", default="", help="comma-separated sets that also get the five-fold held-out score")
    p.add_argument("--json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cv = set(filter(None, a.cv.split(",")))
    rows = {n: study(n, a.datasets_dir, n in cv) for n in a.datasets.split(",")}
    print(render(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
