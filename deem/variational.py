"""``solver='bayes'``: Bayesian classifier combination by variational Bayes, its prior learned by empirical Bayes.

The model is the one-hidden-unit model of ``solver='exact'`` (Dawid–Skene), with
the confusions and the class weights treated as random:

    pi ~ Dir(a_pi),   P_i(. | m) ~ Dir(off + diag * e_m),   h_n ~ pi,   v_ni ~ P_i(. | h_n).

Mean-field variational Bayes keeps a Dirichlet posterior per confusion column
and per class weight and a posterior q(h_n) per row. Where MAP EM (``'exact'``)
plugs in each classifier's most probable confusion, the variational posterior
scores a row with ``E[log P_i(l | m)]``, which is lower for a classifier seen on
few rows than for one with the same rates seen on many: little evidence counts
for less. The prior's two numbers (how strongly a classifier is believed to
name the true class, ``diag``, and how much every cell is smoothed, ``off``) are
not fixed: each iteration sets them to maximize the evidence lower bound
(type-II maximum likelihood), so a crowd of reliable, prolific classifiers gets
a weak prior and a sparse, noisy one a strong prior.

Each iteration is one pass of the fused ``free_energy_backward`` op with
``W = E[log P]`` and ``b_h = E[log pi]``: its statistics with a weight of -1 per
row are the expected counts of the row posteriors, exactly what the Dirichlet
updates need (the bound itself, which SQUAREM reads twice per cycle, is one
pass of ``free_energy``). On return the RBM holds ``W = E[log P]``, ``b_v = 0``,
``b_h = E[log pi]``, so its hidden posterior *is* the variational posterior.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

from . import ops
from ._validation import LabelData
from .alignment import confusion_counts
from .rbm import RBM
from .solvers import soft_vote_posterior
from .squarem import squarem

# Dirichlet pseudo-count of each class in the prior of the class weights.
CLASS_PRIOR = 1.0
# Start of the learned confusion prior: (diag, off) pseudo-counts.
PRIOR_START = (2.0, 1.0)
# The learned pseudo-counts stay within these bounds.
PRIOR_BOUNDS = (1e-3, 1e3)


def _expected_log(alpha: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.special.digamma(alpha) - torch.special.digamma(alpha.sum(dim=dim, keepdim=True))


def _kl_dirichlet(post: torch.Tensor, prior: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of KL(Dir(post) || Dir(prior)) over every distribution along ``dim``."""
    p0, a0 = post.sum(dim=dim), prior.sum(dim=dim)
    return (torch.lgamma(p0) - torch.lgamma(post).sum(dim=dim) - torch.lgamma(a0) + torch.lgamma(prior).sum(dim=dim)
            + ((post - prior) * _expected_log(post, dim)).sum(dim=dim)).sum()


def _prior_matrix(diag: float, off: float, k: int, like: torch.Tensor) -> torch.Tensor:
    """``(K_l, K_m)`` Dirichlet parameters of every confusion column: off everywhere, diag more on l == m."""
    return torch.full((k, k), off, dtype=like.dtype, device=like.device) + diag * torch.eye(
        k, dtype=like.dtype, device=like.device)


def learn_prior(expected_log_sum: np.ndarray, n_columns: int, start) -> tuple:
    """``(diag, off)`` maximizing the prior's part of the evidence lower bound.

    That part is ``sum over the D*K confusion columns of -log B(alpha) +
    sum_l (alpha_l - 1) E[log P(l)]`` with ``alpha = off + diag * e_m``; it needs
    only ``expected_log_sum[l, m]`` = the sum over classifiers of ``E[log P_i(l | m)]``
    and ``n_columns`` = the number of classifiers D. L-BFGS in log space from
    ``start``, within ``PRIOR_BOUNDS``.
    """
    k = expected_log_sum.shape[0]
    eye = np.eye(k)
    lo, hi = math.log(PRIOR_BOUNDS[0]), math.log(PRIOR_BOUNDS[1])

    def negative(log_params):
        diag, off = np.exp(log_params)
        alpha = off + diag * eye  # (K_l, K_m)
        value = (n_columns * (gammaln(alpha.sum(axis=0)).sum() - gammaln(alpha).sum())
                 + ((alpha - 1) * expected_log_sum).sum())
        grad_alpha = n_columns * (digamma(alpha.sum(axis=0))[None, :] - digamma(alpha)) + expected_log_sum
        return -value, -np.array([np.trace(grad_alpha) * diag, grad_alpha.sum() * off])

    x0 = np.clip(np.log(np.asarray(start, dtype=np.float64)), lo, hi)
    result = minimize(negative, x0, jac=True, method="L-BFGS-B", bounds=[(lo, hi)] * 2)
    diag, off = np.exp(result.x)
    return float(diag), float(off)


def train_variational(rbm: RBM, data: LabelData, max_iter: int = 1000, tol: float = 1e-8,
                      learn: bool = True) -> Tuple[List[float], Tuple[float, float]]:
    """Fit the variational posterior; store ``E[log P]`` and ``E[log pi]`` in ``rbm``.

    Two starts, the soft and the hard majority vote; the one with the higher
    evidence lower bound wins. The iteration runs under SQUAREM (the bound is
    its objective); it stops when one iteration moves no posterior-mean
    probability by ``tol`` (checked every 5 cycles) or after ``max_iter`` iterations.
    ``learn=False`` keeps the prior at ``PRIOR_START``. Returns ``(history,
    (diag, off))``: the negative evidence lower bound per row at each check of
    the winning run, and its learned prior. The prior returned is the one the
    final posteriors were computed with.
    """
    if rbm.n_hidden != 1:
        raise ValueError("solver='bayes' needs hidden_dim=1 (one hidden unit of K states)")
    if data.soft:
        raise ValueError("solver='bayes' takes hard labels; for soft labels use solver='exact' (or 'auto')")
    n, k, d = data.n_rows, rbm.n_classes, rbm.n_visible
    dev = rbm.W.device
    minus_one = torch.full((n,), -1.0, dtype=torch.float64, device=dev)
    zero_bv = torch.zeros(d, k, dtype=torch.float64, device=dev)

    def stats(elog_p, elog_pi):
        out = ops.free_energy_backward(minus_one, data.values, elog_p.unsqueeze(-1).contiguous(), zero_bv,
                                       elog_pi.unsqueeze(0).contiguous())
        return out[-3][..., 0], out[-1][0]  # counts (K_l, K_m, D), class mass (K,)

    def log_evidence(elog_p, elog_pi):
        free = ops.free_energy(data.values, elog_p.unsqueeze(-1).contiguous(), zero_bv,
                               elog_pi.unsqueeze(0).contiguous())
        return -free.sum()

    lo, hi = math.log(PRIOR_BOUNDS[0]), math.log(PRIOR_BOUNDS[1])

    def posterior(theta):
        """Dirichlet posteriors of the confusions and class weights, and the prior ``(diag, off)``."""
        counts, mass, log_prior = theta
        diag, off = (float(x) for x in log_prior.exp())
        return counts + _prior_matrix(diag, off, k, counts).unsqueeze(-1), mass + CLASS_PRIOR, (diag, off)

    # theta = (expected counts (K_l, K_m, D), class mass (K,), log (diag, off)): one iteration
    # sets the Dirichlet posteriors from them, the prior by empirical Bayes, and the row
    # posteriors (through the fused op) that give the next expected counts.
    def em_step(theta, need_objective):
        post, post_pi, (diag, off) = posterior(theta)
        elog_p, elog_pi = _expected_log(post, dim=0), _expected_log(post_pi, dim=0)
        if learn:
            diag, off = learn_prior(elog_p.sum(dim=2).cpu().numpy(), d, (diag, off))
        counts, mass = stats(elog_p, elog_pi)
        new_theta = (counts, mass, torch.tensor([math.log(diag), math.log(off)], dtype=torch.float64, device=dev))
        if not need_objective:
            return new_theta, None, None
        prior = _prior_matrix(diag, off, k, post).unsqueeze(-1).expand_as(post)
        elbo = (log_evidence(elog_p, elog_pi) - _kl_dirichlet(post, prior, dim=0)
                - _kl_dirichlet(post_pi, torch.full_like(post_pi, CLASS_PRIOR), dim=0))
        return new_theta, elbo, -elbo / n

    def normalize(theta):
        counts, mass, log_prior = theta
        return counts.clamp(min=0.0), mass.clamp(min=0.0), log_prior.clamp(lo, hi)

    def distance(a, b):  # largest move of a posterior-mean probability
        pa, pb = posterior(a)[0], posterior(b)[0]
        return (pa / pa.sum(dim=0, keepdim=True) - pb / pb.sum(dim=0, keepdim=True)).abs().max()

    def run(q0):
        start = torch.tensor([math.log(x) for x in PRIOR_START], dtype=torch.float64, device=dev)
        theta0 = (confusion_counts(data, q0).permute(1, 2, 0).contiguous(), q0.sum(dim=0), start)
        theta, history, elbo, _ = squarem(em_step, theta0, normalize, int(max_iter), tol, distance=distance)
        post, post_pi, prior = posterior(theta)
        return elbo, _expected_log(post, dim=0), _expected_log(post_pi, dim=0), history, prior

    soft = soft_vote_posterior(data).to(dev)
    hard = torch.nn.functional.one_hot(soft.argmax(dim=1), k).double()
    _, elog_p, elog_pi, history, prior = max((run(q0) for q0 in (soft, hard)), key=lambda fit: fit[0])
    with torch.no_grad():
        rbm.W.copy_(elog_p.unsqueeze(-1).to(rbm.W.dtype))
        rbm.b_v.zero_()
        rbm.b_h.copy_(elog_pi.unsqueeze(0).to(rbm.b_h.dtype))
    return history, prior
