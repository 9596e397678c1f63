"""Do richer latent-class models beat DEEM's exact default on real crowds? A study, not library code.

    OMP_NUM_THREADS=1 python benchmarks/model_variants.py [--datasets-dir ../shared/datasets]
        [--synthetic] [--json benchmarks/results/model-variants.json]

Issue 4 asks for a mean accuracy over the crowds at least 0.5 point above Dawid–Skene's,
from better modelling. This script fits, on each dataset folder (``answers.csv`` +
``truth.csv``), the default and principled extensions of its one-hidden-unit model,
all with the same settings on every dataset (nothing here looks at the gold labels
except the final score):

- ``majority-vote``: ties to the smallest label.
- ``default``: ``DEEM()`` (``solver='bayes'``: variational Bayes, prior learned by empirical Bayes).
- ``exact-map``: ``DEEM(solver='exact')`` (MAP EM; pooled + diagonal Dirichlet priors).
- ``vb-bcc``: the default's model with the prior chosen by the evidence lower bound over
  a grid instead of learned continuously (an independent numpy implementation).
- ``subtypes-M``: each class split into M subtypes with their own confusions (a hidden
  unit of K*M states summed per class; the model of "enhanced BCC", Li et al. 2019,
  for correlated workers), variational Bayes with a stick-breaking prior on the
  subtype weights, best evidence of 5 random starts.
- ``hard-items``: each task is easy (workers answer with their own confusion) or hard
  (every worker answers with one shared confusion): a hidden state (class, difficulty).
- ``communities-M``: workers fall into M communities, each with its own Dirichlet prior
  on the confusions, learned by empirical Bayes (community-based BCC, Venanzi et al.
  2014): a sparse worker borrows from the workers it resembles instead of from everyone.
- ``item-terms-L``: a per-task term added to every worker's confusion logits,
  ``P_i(l | c, task j) ∝ exp(sigma_i[c, l] + tau_j[c, l])``, L2-penalized (worker weight
  0.01, task weight L): the probabilistic form of regularized minimax conditional
  entropy (Zhou et al. 2012, 2015), fitted by EM with L-BFGS M-steps.

``--load FILE`` reuses the results of an earlier ``--json`` for the methods not run now.
``--synthetic`` adds the 104 hard-label synthetic ensembles of
``train_hyperparameter_predictor.py`` (known truth; DS-like, spammers, adversarial and
correlated copies, hard items, imbalance, 2-10 classes) to check the variants there too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment, minimize
from scipy.special import betaln, digamma, gammaln

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

sys.path.insert(0, HERE)
from accuracy import load_dataset, to_wide  # noqa: E402

from deem import DEEM  # noqa: E402


# ----------------------------------------------------------------------------- data
def to_matrix(folder):
    """Dense (tasks, workers) labels with -1 missing, gold labels (-1 where none), K (accuracy.py's loaders)."""
    answers, gold, k = load_dataset(folder)
    tasks, X = to_wide(answers)
    y = gold.reindex(tasks).fillna(-1).to_numpy().astype(np.int64)
    return X, y, k


def one_hot(X, k):
    """(N, D*K) sparse indicator of worker d giving label l."""
    n, d = np.nonzero(X >= 0)
    return sp.csr_matrix((np.ones(len(n)), (n, d * k + X[n, d])), shape=(X.shape[0], X.shape[1] * k))


def vote_counts(X, k):
    A = one_hot(X, k)
    return np.asarray(A @ np.tile(np.eye(k), (X.shape[1], 1)))


def vote_starts(X, k):
    """The two EM starts every fit here tries: the soft and the hard majority vote, (N, K) each."""
    votes = vote_counts(X, k)
    soft = votes / votes.sum(axis=1, keepdims=True)
    return soft, np.eye(k)[soft.argmax(axis=1)]


def accuracy(q, X, y, k):
    """Accuracy on gold tasks, hidden states matched to the majority vote's classes."""
    mv = vote_counts(X, k).argmax(axis=1)
    pred = q.argmax(axis=1)
    table = np.zeros((k, k))
    np.add.at(table, (pred, mv), 1)
    r, c = linear_sum_assignment(table, maximize=True)
    mapping = np.empty(k, dtype=np.int64)
    mapping[r] = c
    ok = y >= 0
    return float((mapping[pred][ok] == y[ok]).mean())


# ----------------------------------------------------------------------------- variational Bayes
def kl_dirichlet(a, b):
    a0, b0 = a.sum(-1), b.sum(-1)
    return float((gammaln(a0) - gammaln(a).sum(-1) - gammaln(b0) + gammaln(b).sum(-1)
                  + ((a - b) * (digamma(a) - digamma(a0)[..., None])).sum(-1)).sum())


def kl_beta(a, b, a0, b0):
    return float((betaln(a0, b0) - betaln(a, b) + (a - a0) * digamma(a) + (b - b0) * digamma(b)
                  + (a0 - a + b0 - b) * digamma(a + b)).sum())


def expected_log_dirichlet(a):
    return digamma(a) - digamma(a.sum(-1, keepdims=True))


def variational_fit(X, k, subtypes=1, diag=2.0, off=1.0, a_pi=1.0, stick=(4.0, 1.0), seed=0,
                    max_iter=500, tol=1e-7):
    """Mean-field VB of the latent-class model with ``subtypes`` hidden states per class.

    q(class, subtype) per task; Dirichlet posteriors for each worker's confusion of each
    (class, subtype) under the prior ``Dir(off + diag * e_class)``; Dirichlet for the
    class weights; stick-breaking Beta(stick) for the subtype weights within a class.
    Returns ``(q (N, K), evidence lower bound)``.
    """
    n, d = X.shape
    m = subtypes
    A = one_hot(X, k)
    rng = np.random.default_rng(seed)
    votes = vote_counts(X, k)
    votes = votes / votes.sum(axis=1, keepdims=True)
    split = rng.dirichlet(np.ones(m), size=n) if m > 1 else np.ones((n, 1))
    Q = (votes[:, :, None] * split[:, None, :]).reshape(n, k * m)
    prior = np.repeat(np.full((k, k), off) + diag * np.eye(k), m, axis=0)  # (K*M, K_label)
    last = -np.inf
    for _ in range(max_iter):
        counts = np.asarray(A.T @ Q).reshape(d, k, k * m).transpose(0, 2, 1)  # (D, K*M, K_label)
        post = counts + prior[None]
        mass = Q.sum(axis=0).reshape(k, m)
        post_pi = mass.sum(axis=1) + a_pi
        log_sub = np.zeros((k, m))
        kl_sub = 0.0
        if m > 1:
            tail = np.cumsum(mass[:, ::-1], axis=1)[:, ::-1] - mass  # weight of later subtypes
            va, vb = stick[0] + mass[:, :-1], stick[1] + tail[:, :-1]
            e_v, e_1v = digamma(va) - digamma(va + vb), digamma(vb) - digamma(va + vb)
            log_sub[:, :-1] += e_v
            log_sub[:, 1:] += np.cumsum(e_1v, axis=1)
            kl_sub = kl_beta(va, vb, stick[0], stick[1])
        E = expected_log_dirichlet(post)
        scores = (np.asarray(A @ E.transpose(0, 2, 1).reshape(d * k, k * m))
                  + (expected_log_dirichlet(post_pi)[:, None] + log_sub).reshape(-1))
        top = scores.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(scores - top).sum(axis=1))
        Q = np.exp(scores - lse[:, None])
        elbo = (lse.sum() - kl_dirichlet(post, np.broadcast_to(prior[None], post.shape))
                - kl_dirichlet(post_pi, np.full_like(post_pi, a_pi)) - kl_sub)
        if abs(elbo - last) < tol * abs(elbo):
            break
        last = elbo
    return Q.reshape(n, k, m).sum(axis=2), elbo


def vb_bcc(X, k):
    """VB-BCC with the prior chosen by the evidence lower bound over a grid."""
    fits = [variational_fit(X, k, diag=a, off=b) for a in (0.5, 1, 2, 4, 8, 16) for b in (0.25, 0.5, 1, 2, 4)]
    return max(fits, key=lambda f: f[1])[0]


def subtypes(X, k, m):
    return max((variational_fit(X, k, subtypes=m, seed=s) for s in range(5)), key=lambda f: f[1])[0]


# ----------------------------------------------------------------------------- hard-item mixture
def hard_items(X, k, strength=2.0, diag=2.0, hard_diag=2.0, max_iter=2000, tol=1e-6):
    """MAP EM of a (class, easy/hard) hidden state; hard tasks share one confusion for all workers."""
    n, d = X.shape
    A = one_hot(X, k)
    V = vote_counts(X, k)
    best = None
    for q0 in vote_starts(X, k):
        Q = np.stack([0.8 * q0, 0.2 * q0], axis=2)
        for _ in range(max_iter):
            counts = np.asarray(A.T @ Q[:, :, 0]).reshape(d, k, k)  # (D, K_label, K_class)
            pooled = counts.sum(axis=0, keepdims=True)
            pooled = pooled / np.maximum(pooled.sum(axis=1, keepdims=True), 1e-300)
            conf = counts + strength * pooled + diag * np.eye(k)[None]
            logp = np.log(np.maximum(conf / conf.sum(axis=1, keepdims=True), 1e-300))
            mass = Q.sum(axis=0)
            logpi = np.log(mass.sum(axis=1) / mass.sum())
            shared = V.T @ Q[:, :, 1] + hard_diag * np.eye(k) + 1e-3
            shared = shared / shared.sum(axis=0, keepdims=True)
            rho = (mass[:, 1] + 1) / (mass.sum(axis=1) + 2)
            easy = np.asarray(A @ logp.reshape(d * k, k)) + logpi + np.log(1 - rho)
            hard = V @ np.log(shared) + logpi + np.log(rho)
            S = np.stack([easy, hard], axis=2).reshape(n, -1)
            top = S.max(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(S - top).sum(axis=1))
            new = np.exp(S - lse[:, None]).reshape(n, k, 2)
            moved = np.abs(new - Q).max()
            Q = new
            if moved < tol:
                break
        score = lse.sum() + strength * (pooled * logp).sum() + diag * np.trace(logp, axis1=1, axis2=2).sum()
        if best is None or score > best[0]:
            best = (score, Q.sum(axis=2))
    return best[1]


# ----------------------------------------------------------------------------- worker communities
def _log_beta(a):
    return gammaln(a).sum(-1) - gammaln(a.sum(-1))


def _community_prior(log_params, k):
    diag, off = np.exp(log_params)
    return np.full((k, k), off) + diag * np.eye(k)  # (K_class, K_label)


def _fit_community_prior(weighted_elog, weight, log_params, k):
    """(diag, off) of one community maximizing its weighted prior terms of the bound."""
    bound = (np.log(1e-3), np.log(1e3))

    def negative(h):
        a = _community_prior(h, k)
        value = -weight * _log_beta(a).sum() + ((a - 1) * weighted_elog).sum()
        grad = weight * (digamma(a.sum(axis=1))[:, None] - digamma(a)) + weighted_elog
        diag, off = np.exp(h)
        return -value, -np.array([np.trace(grad) * diag, grad.sum() * off])

    return minimize(negative, log_params, jac=True, method="L-BFGS-B", bounds=[bound] * 2).x


def communities(X, k, m, a_pi=1.0, max_iter=1000, tol=1e-7):
    """Community-based BCC: q(community) per worker, q(confusion | community) Dirichlet, priors by EB.

    For fixed task posteriors the optimal q(confusion | community c) is Dir(alpha_c + counts)
    and q(community c) is proportional to rho_c times the Dirichlet-multinomial evidence of the
    worker's expected counts under alpha_c; the communities start at distinct strengths.
    """
    n, d = X.shape
    A = one_hot(X, k)
    best = None
    for Q in vote_starts(X, k):
        params = [np.log([s, 1.0]) for s in (8.0, 1.0, 0.2, 3.0, 0.5)[:m]]
        rho = np.full(m, 1.0 / m)
        for _ in range(max_iter):
            counts = np.asarray(A.T @ Q).reshape(d, k, k).transpose(0, 2, 1)  # (D, K_class, K_label)
            for rounds in range(2):  # responsibilities, priors, responsibilities again
                alphas = np.stack([_community_prior(h, k) for h in params])
                post = counts[:, None] + alphas[None]  # (D, M, K, K)
                evidence = (_log_beta(post) - _log_beta(alphas)[None]).sum(-1) + np.log(rho)[None]
                R = np.exp(evidence - evidence.max(axis=1, keepdims=True))
                R /= R.sum(axis=1, keepdims=True)
                elog = expected_log_dirichlet(post)
                if rounds == 0:
                    params = [_fit_community_prior((R[:, c, None, None] * elog[:, c]).sum(0), R[:, c].sum(),
                                                   params[c], k) for c in range(m)]
            rho = R.sum(axis=0) + 1e-9
            rho /= rho.sum()
            E = (R[:, :, None, None] * elog).sum(axis=1)
            scores = np.asarray(A @ E.transpose(0, 2, 1).reshape(d * k, k)) + expected_log_dirichlet(Q.sum(0) + a_pi)
            new = np.exp(scores - scores.max(axis=1, keepdims=True))
            new /= new.sum(axis=1, keepdims=True)
            moved = np.abs(new - Q).max()
            Q = new
            if moved < tol:
                break
        # collapsed bound at the final task posteriors: worker evidences + class weights + entropy
        counts = np.asarray(A.T @ Q).reshape(d, k, k).transpose(0, 2, 1)
        alphas = np.stack([_community_prior(h, k) for h in params])
        evidence = (_log_beta(counts[:, None] + alphas[None]) - _log_beta(alphas)[None]).sum(-1) + np.log(rho)[None]
        top = evidence.max(axis=1)
        score = ((top + np.log(np.exp(evidence - top[:, None]).sum(axis=1))).sum()
                 + _log_beta(Q.sum(0) + a_pi) - _log_beta(np.full(k, a_pi))
                 - (Q * np.log(np.maximum(Q, 1e-300))).sum())
        if best is None or score > best[0]:
            best = (score, Q)
    return best[1]


# ----------------------------------------------------------------------------- item terms (minimax entropy)
def item_terms(X, k, task_weight, worker_weight=0.01, outer=30, inner=30, tol=1e-5):
    """EM of P_i(l | c, j) = softmax_l(sigma_i[c] + tau_j[c]) with L2 penalties; returns q (N, K)."""
    import torch

    n, d = X.shape
    rows, cols = np.nonzero(X >= 0)
    r, c = torch.as_tensor(rows), torch.as_tensor(cols)
    label = torch.as_tensor(X[rows, cols]).view(-1, 1, 1).expand(-1, k, 1)
    Q = torch.as_tensor(vote_starts(X, k)[0])
    sigma = torch.zeros(d, k, k, dtype=torch.float64, requires_grad=True)
    tau = torch.zeros(n, k, k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([sigma, tau], max_iter=inner, line_search_fn="strong_wolfe", history_size=20)

    def log_lik():  # (labels, K_class): log P(given label | class) of each observed label
        logits = sigma[c] + tau[r]
        return logits.gather(2, label)[..., 0] - torch.logsumexp(logits, dim=2)

    def closure():
        opt.zero_grad()
        loss = (-(Q[r] * log_lik()).sum() + 0.5 * worker_weight * (sigma ** 2).sum()
                + 0.5 * task_weight * (tau ** 2).sum())
        loss.backward()
        return loss

    for _ in range(outer):
        opt.step(closure)
        with torch.no_grad():
            scores = torch.zeros(n, k, dtype=torch.float64).index_add_(0, r, log_lik()) + Q.mean(0).log()
            new = torch.softmax(scores, dim=1)
            moved = (new - Q).abs().max().item()
            Q = new
        if moved < tol:
            break
    return Q.numpy()


# ----------------------------------------------------------------------------- main
def default(X, k):
    return DEEM(n_classes=k, random_state=0, device="cpu").fit(X).predict_proba(X)


METHODS = {
    "majority-vote": vote_counts,
    "default": default,
    "exact-map": lambda X, k: DEEM(n_classes=k, solver="exact", random_state=0, device="cpu").fit(X).predict_proba(X),
    "vb-bcc": vb_bcc,
    "subtypes-3": lambda X, k: subtypes(X, k, 3),
    "subtypes-10": lambda X, k: subtypes(X, k, 10),
    "hard-items": hard_items,
    "communities-2": lambda X, k: communities(X, k, 2),
    "communities-3": lambda X, k: communities(X, k, 3),
    "item-terms-10": lambda X, k: item_terms(X, k, 10.0),
    "item-terms-30": lambda X, k: item_terms(X, k, 30.0),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", default=os.path.join(HERE, "..", "..", "shared", "datasets"))
    parser.add_argument("--synthetic", action="store_true", help="also the 104 synthetic hard-label ensembles")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--load", help="results of an earlier --json: kept for the methods not run now")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    results = {"command": " ".join(sys.argv), "real": {}, "synthetic": {}}
    if args.load:
        with open(args.load) as fh:
            earlier = json.load(fh)
        for part in ("real", "synthetic"):
            results[part] = {m: v for m, v in earlier.get(part, {}).items() if m not in methods}
        results["command"] = earlier.get("command", "") + " ; " + results["command"]
    names = sorted(n for n in os.listdir(args.datasets_dir)
                   if os.path.exists(os.path.join(args.datasets_dir, n, "answers.csv")))
    for name in names:
        X, y, k = to_matrix(os.path.join(args.datasets_dir, name))
        for method in methods:
            start = time.perf_counter()
            acc = accuracy(METHODS[method](X, k), X, y, k)
            results["real"].setdefault(method, {})[name] = acc
            print(f"{name:10s} {method:12s} {acc:.4f} ({time.perf_counter() - start:.1f} s)", flush=True)
    print("\nmean over the crowds:")
    for method in results["real"]:
        accs = results["real"][method]
        print(f"  {method:12s} {np.mean(list(accs.values())):.4f}  "
              + " ".join(f"{n} {a:.4f}" for n, a in accs.items()))
    if args.synthetic:
        from train_hyperparameter_predictor import make_ensemble

        for seed in range(120):
            X, y, spec = make_ensemble(seed)
            if spec["soft"]:
                continue
            for method in methods:
                q = METHODS[method](X, spec["n_classes"])
                results["synthetic"].setdefault(method, []).append(accuracy(q, X, y, spec["n_classes"]))
        print("\nsynthetic hard-label ensembles (mean accuracy, ensembles > 1 point below the default):")
        base = np.array(results["synthetic"].get("default", []))
        for method in results["synthetic"]:
            accs = np.array(results["synthetic"][method])
            worse = int((accs < base - 0.01).sum()) if len(base) else -1
            print(f"  {method:12s} n={len(accs)} mean {accs.mean():.4f}  below default by >1 pt: {worse}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
