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

Each iteration is two fused ops: ``vb_update`` turns the last pass's expected
counts into the Dirichlet (and Beta) posteriors, learns the prior's numbers (a
projected Newton solve to the optimum, the objective being strictly concave) and
returns the expected logs with the bound's KL; the evidence pass (dense or sparse)
scores every row with them, ``W = E[log P]`` and ``b_h = E[log pi]``, and gives the
next expected counts and the data term of the bound. SQUAREM reads the bound at
two of every three steps. On return the RBM holds ``W = E[log P]``, ``b_v = 0``,
``b_h = E[log pi]``, so its hidden posterior *is* the variational posterior.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import ops
from .._reference import _confusion_prior, _rate_prior, newton_box
from .._validation import LabelData, evidence_pass
from ..alignment import confusion_counts
from ..rbm import RBM
from ..missingness import abstention_counts
from ..distributed import total_int, total_many
from .exact import OneUnitFit, start_posteriors
from .squarem import TOL, best_of_starts

# Dirichlet pseudo-count of each class in the prior of the class weights.
CLASS_PRIOR = 1.0
# Start of the learned confusion prior: (diag, off) pseudo-counts; and under informative missingness
# the Beta prior (vote, abstain) of each voter's rate of voting per class.
PRIOR_START = (2.0, 1.0)
RATE_PRIOR_START = (0.5, 0.5)
# The learned pseudo-counts stay within these bounds.
PRIOR_BOUNDS = (1e-3, 1e3)


def learn_rate_prior(elog_vote_sum: float, elog_abstain_sum: float, n_columns: int, start) -> tuple:
    """``(vote, abstain)`` of the Beta prior of every voter-class rate of voting, by empirical Bayes.

    Maximizes ``n_columns * -log B(vote, abstain) + (vote - 1) * sum E[log f] + (abstain - 1) *
    sum E[log(1 - f)]`` over the ``n_columns = D * K`` rates (strictly concave): projected Newton from
    ``start`` within ``PRIOR_BOUNDS``, as the ``vb_update`` op does in each iteration.
    """
    f = _rate_prior(float(n_columns), float(elog_vote_sum), float(elog_abstain_sum))
    return tuple(newton_box(f, start, *PRIOR_BOUNDS))


def learn_prior(expected_log_sum: np.ndarray, n_columns: int, start) -> tuple:
    """``(diag, off)`` maximizing the prior's part of the evidence lower bound.

    That part is ``sum over the D*K confusion columns of -log B(alpha) +
    sum_l (alpha_l - 1) E[log P(l)]`` with ``alpha = off + diag * e_m``; it needs
    only ``expected_log_sum[l, m]`` = the sum over classifiers of ``E[log P_i(l | m)]``
    and ``n_columns`` = the number of classifiers D. It is strictly concave in (diag, off):
    projected Newton from ``start`` within ``PRIOR_BOUNDS``, as the ``vb_update`` op does.
    """
    e = np.asarray(expected_log_sum, dtype=np.float64)
    f = _confusion_prior(float(n_columns), e.shape[0], float(np.trace(e)), float(e.sum()))
    return tuple(newton_box(f, start, *PRIOR_BOUNDS))


def train_variational(rbm: RBM, data: LabelData, max_iter: int = 1000, tol: float = TOL,
                      learn: bool = True, informative: bool = False, comm=None, monitor=None,
                      progress=None, abstaining=None) -> OneUnitFit:
    """Fit the variational posterior; store ``E[log P]`` and ``E[log pi]`` in ``rbm``.

    Two starts, the soft and the hard majority vote; the one with the higher
    evidence lower bound wins (the second stops once it reaches the basin of the first
    one's fixed point). The iteration runs under SQUAREM (the bound is
    its objective); it stops when one iteration moves no posterior-mean
    probability by ``tol`` (checked every cycle) or after ``max_iter`` iterations;
    ``max_iter=0`` keeps the posterior of the confusions at each start under the prior's
    start values (anchored at the majority vote, :mod:`deem.anchor`). ``learn=False`` keeps the prior at its start. With ``informative=True`` every
    voter also has a rate of voting per class, ``f_im ~ Beta(vote, abstain)`` with its
    own two numbers learned by empirical Bayes (:mod:`deem.missingness`); the label
    given a vote keeps the Dirichlet prior above, so its pseudo-counts weigh against
    the voter's votes, not its abstentions. ``abstaining`` ``(D,)`` bool (with ``informative=True``): the voters
    whose abstentions are modelled; the others' missing labels are ignorable (a mixed model; ``None``: all
    voters). Returns a ``OneUnitFit``: the negative
    evidence lower bound per row at each check of the winning run and the learned
    prior (``{'diag', 'off'[, 'vote', 'abstain']}``) the final posteriors were computed with.
    ``comm`` (:mod:`deem.distributed`): ``data`` is this rank's share; every sum over items is all-reduced.
    ``monitor(rbm)``: called at every check with ``rbm`` holding the posterior there (``OneUnitFit.monitored``).
    """
    if rbm.n_hidden != 1:
        raise ValueError("solver='bayes' needs hidden_dim=1 (one hidden unit of K states)")
    if data.soft:
        raise ValueError("solver='bayes' takes hard labels; for soft labels use solver='exact' (or 'auto')")
    n, k, d = total_int(comm, data.n_rows), rbm.n_classes, rbm.n_visible
    dev = rbm.W.device
    start_prior = PRIOR_START + (RATE_PRIOR_START if informative else ())
    # 1 for a voter whose rate of voting is modelled, 0 for one whose missing labels are ignorable
    modelled = None
    if informative:
        modelled = (torch.ones(d, dtype=torch.float64, device=dev) if abstaining is None
                    else abstaining.to(device=dev, dtype=torch.float64))
    lo, hi = math.log(PRIOR_BOUNDS[0]), math.log(PRIOR_BOUNDS[1])

    # theta = (expected counts (K_l, K_m, D), class mass (K,), log prior numbers): one iteration
    # sets the Dirichlet (and Beta) posteriors from them, the prior by empirical Bayes and the
    # expected logs (one fused op, vb_update), then the row posteriors (one fused pass) that give the
    # next expected counts and the bound.
    weights = modelled if informative else None
    lo_b, hi_b = PRIOR_BOUNDS

    def expected_logs(theta):
        """``(E[log P(label)] (K_l, K_m, D), E[log pi] (K), E[log P(abstain)] (D, K) or None)`` under theta's
        posteriors, the prior kept."""
        elog_p, elog_pi, elog_abstain, _, _ = ops.vb_update(*theta, weights, CLASS_PRIOR, lo_b, hi_b, False, False)
        return elog_p, elog_pi, elog_abstain if informative else None

    def em_step(theta, need_objective):
        counts, mass, log_prior = theta
        elog_p, elog_pi, elog_abstain, log_prior, kl = ops.vb_update(
            counts, mass, log_prior, weights, CLASS_PRIOR, lo_b, hi_b, learn, need_objective)
        counts, mass, nll = total_many(comm, *evidence_pass(data, elog_p, elog_pi, elog_abstain, True, False)[:3])
        new_theta = (counts, mass, log_prior)
        if not need_objective:
            return new_theta, None, None
        elbo = -nll - kl
        return new_theta, elbo, -elbo / n

    def normalize(theta):
        counts, mass, log_prior = theta
        return counts.clamp(min=0.0), mass.clamp(min=0.0), log_prior.clamp(lo, hi)

    eye = torch.eye(k, dtype=torch.float64, device=dev)

    def means(theta):
        """Posterior means of the confusion columns, Dir(counts + off + diag * e_m), and under informative
        missingness of the rates of voting, Beta(votes + vote, abstentions + abstain); tensor ops only (no
        host read of the prior's numbers: this runs at every check)."""
        counts, mass, log_prior = theta
        x = log_prior.exp()
        post = counts + (x[1] + x[0] * eye).unsqueeze(-1)
        rate = None
        if informative:
            vote, abstain = counts.sum(dim=0) + x[2], abstention_counts(counts, mass).t() + x[3]
            rate = vote / (vote + abstain)
        return post / post.sum(dim=0, keepdim=True), rate

    def distance(a, b):  # largest move of a posterior-mean probability
        (pa, ra), (pb, rb) = means(a), means(b)
        move = (pa - pb).abs().max()
        if ra is not None:
            move = torch.maximum(move, ((ra - rb) * modelled).abs().max())
        return move

    def start(q0):
        log_prior = torch.tensor([math.log(x) for x in start_prior], dtype=torch.float64, device=dev)
        counts, mass = total_many(comm, confusion_counts(data, q0).permute(1, 2, 0).contiguous(), q0.sum(dim=0))
        return counts, mass, log_prior

    starts = (start(q0.to(dev)) for q0 in start_posteriors(data))
    def watch(theta):
        rbm.set_one_unit(*expected_logs(theta))
        return monitor(rbm)

    theta, history, _, monitored = best_of_starts(em_step, starts, normalize, int(max_iter), tol, distance=distance,
                                                  monitor=None if monitor is None else watch, progress=progress)
    params = tuple(float(x) for x in theta[2].exp())  # the prior's numbers the final posteriors use
    elog_p, elog_pi, elog_abstain = expected_logs(theta)
    prior = dict(zip(("diag", "off", "vote", "abstain"), params))
    fit = OneUnitFit(elog_p, elog_pi, elog_abstain, history, prior, monitored)
    rbm.set_one_unit(fit.logp, fit.logpi, fit.log_abstain)
    return fit
