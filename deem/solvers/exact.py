"""``solver='exact'``: the one-hidden-unit (Dawid-Skene) model's penalized likelihood maximized by EM.

Also the pieces the other EM-type solvers share: the MAP M-steps and their priors' terms, the
majority-vote starts, and ``OneUnitFit``, what a one-unit fit leaves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from .. import ops
from .._validation import LabelData, evidence_pass
from ..alignment import confusion_counts, vote_counts
from ..distributed import total_int, total_many
from ..rbm import RBM
from .squarem import TOL, best_of_starts

# Diagonal pseudo-counts per confusion column in the exact solver's prior ("classifiers
# beat chance"); see ``train_exact``.
EXACT_DIAGONAL_STRENGTH = 2.0


def soft_vote_posterior(data: LabelData) -> torch.Tensor:
    """``(N, K)`` share of each class among a row's votes: the soft majority vote."""

    counts = vote_counts(data).double()
    return counts / counts.sum(dim=1, keepdim=True).clamp(min=1e-12)


def map_m_step(counts: torch.Tensor, class_mass: torch.Tensor, prior_strength: float,
               diagonal_strength: float = 0.0):
    """MAP confusions under P_i(.|m) ~ Dir(s * Pbar(.|m) + a * e_m + 1) with the pooled Pbar, and the class prior.

    ``counts`` is ``(K_l, K_m, D)``, or ``(K + 1, K_m, D)`` with abstention as the last visible state
    (informative missingness); ``s`` is ``prior_strength`` and ``a`` is
    ``diagonal_strength``: pseudo-counts on the diagonal, a prior belief that a
    classifier names the true class more often than any other (0: none).
    Returns ``(log P (K_l, K_m, D), log pi (K,), Pbar (K_l, K_m, 1))``.
    """
    pooled = counts.sum(dim=2, keepdim=True)  # (K_l, K_m, 1)
    pooled = pooled / pooled.sum(dim=0, keepdim=True).clamp(min=1e-300)
    conf = counts + prior_strength * pooled
    if diagonal_strength:
        n_states, k = counts.shape[:2]
        eye = torch.eye(n_states, k, dtype=counts.dtype, device=counts.device)
        conf = conf + diagonal_strength * eye.unsqueeze(-1)
    conf = conf / conf.sum(dim=0, keepdim=True).clamp(min=1e-300)
    pi = class_mass / class_mass.sum()
    tiny = 1e-300
    return conf.clamp(min=tiny).log(), pi.clamp(min=tiny).log(), pooled


# Pseudo-counts of a voter's vote/abstain rate per class under informative missingness (Jeffreys' Beta(1/2, 1/2)).
ANSWER_RATE_PRIOR = 0.5


def map_m_step_informative(counts: torch.Tensor, class_mass: torch.Tensor, prior_strength: float,
                           diagonal_strength: float = 0.0):
    """MAP M-step of the informative model: the label given a vote, and the rate of voting, per voter and class.

    The prior is nested: ``P_i(l | m, votes) ~ Dir(s * Pbar(.|m) + a * e_m + 1)`` (``map_m_step``: its
    pseudo-counts weigh against the voter's *votes*, so "a voter names the true class more often than
    any other" still anchors the hidden states where a voter rarely fires) and
    ``f_im = P_i(votes | m) ~ Beta(1/2, 1/2)`` fitted to the expected votes ``sum_l N_i[l, m]`` out of
    the class mass. Returns ``(log P (K + 1, K_m, D) with abstention last, log pi, Pbar)``.
    """
    log_conf, logpi, pooled = map_m_step(counts, class_mass, prior_strength, diagonal_strength)
    votes = counts.sum(dim=0)  # (K_m, D)
    rate = (votes + ANSWER_RATE_PRIOR) / (class_mass.unsqueeze(-1) + 2 * ANSWER_RATE_PRIOR)
    rate = rate.clamp(1e-300, 1.0 - 1e-16)
    return torch.cat([log_conf + rate.log().unsqueeze(0), torch.log1p(-rate).unsqueeze(0)]), logpi, pooled


def informative_prior_terms(log_ext: torch.Tensor, pooled: torch.Tensor, prior_strength: float,
                            diagonal_strength: float, modelled: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``prior_terms`` of the nested prior of ``map_m_step_informative``, 0-d. ``modelled`` ``(D,)``: 1 for a voter
    whose rate of voting is in the model, 0 for one whose missing labels are ignorable (``None``: all)."""
    log_abstain = log_ext[-1]
    log_vote = torch.log1p(-log_abstain.exp().clamp(max=1.0 - 1e-16))
    log_conf = log_ext[:-1] - log_vote.unsqueeze(0)
    rate_terms = log_vote + log_abstain  # (K_m, D)
    if modelled is not None:
        rate_terms = rate_terms * modelled
    return (prior_terms(log_conf, pooled, prior_strength, diagonal_strength)
            + (ANSWER_RATE_PRIOR - 1.0) * rate_terms.sum())


def prior_terms(logp: torch.Tensor, pooled: torch.Tensor, prior_strength: float, diagonal_strength: float,
                       seen: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The priors' pseudo-count terms of the penalized log-likelihood EM climbs (``map_m_step``'s priors), 0-d.

    ``seen`` ``(D,)`` weights classifiers (0 leaves out one that never answered); ``None``: all count.
    """
    weight = torch.ones(logp.shape[2], dtype=logp.dtype, device=logp.device) if seen is None else seen
    return (prior_strength * (pooled * logp * weight).sum()
            + diagonal_strength * (logp.diagonal(dim1=0, dim2=1) * weight.unsqueeze(-1)).sum())


def normalize_probabilities(theta):
    """Project ``(P (K_l, K_m, D), pi (K,))`` back onto the simplex after an extrapolation step (SQUAREM)."""
    p, pi = (t.clamp(min=0.0) for t in theta)
    return p / p.sum(dim=0, keepdim=True).clamp(min=1e-300), pi / pi.sum().clamp(min=1e-300)


def log_params(theta):
    """``(log P, log pi)`` of probability parameters, floored like ``map_m_step``."""
    return tuple(t.clamp(min=1e-300).log() for t in theta)


@dataclass
class OneUnitFit:
    """What a fit of the one-hidden-unit model leaves (``solver='exact'`` or ``'bayes'``).

    ``logp`` ``(K_l, K_m, D)``: the log-probability of a present label (for ``bayes``,
    its expectation under the posterior); ``logpi`` ``(K,)``; ``log_abstain`` ``(D, K)``:
    log P_i(abstain | m) under informative missingness, ``None`` when ignorable;
    ``history``: the objective at each convergence check; ``prior``: what ``bayes`` learned.
    """

    logp: torch.Tensor
    logpi: torch.Tensor
    log_abstain: Optional[torch.Tensor]
    history: List[float]
    prior: Optional[dict] = None
    monitored: Optional[list] = None  # monitor(rbm) at each check of the winning run


def start_posteriors(data: LabelData):
    """The two EM starts, ``(N, K)``: the soft and the hard majority vote (zero rows where a row has no vote)."""
    soft = soft_vote_posterior(data)
    has = (soft.sum(dim=1, keepdim=True) > 0).double()
    hard = torch.nn.functional.one_hot(soft.argmax(dim=1), data.n_classes).double() * has
    return soft, hard


def train_exact(rbm: RBM, data: LabelData, prior_strength: float, max_iter: int = 3000,
                tol: float = TOL, progress=None,
                diagonal_strength: float = EXACT_DIAGONAL_STRENGTH, informative: bool = False,
                comm=None, monitor=None, abstaining=None) -> OneUnitFit:
    """Maximize the exact (penalized) likelihood of the one-hidden-unit model by EM, in float64.

    With normalized conditionals (``normalized_params``) the model is the
    Dawid-Skene model p(v_obs) = sum_m pi_m prod_{i observed} P_i(v_i | m). On hard
    labels each iteration is one pass of the fused ``hard_evidence_pass`` op, which
    returns the expected counts ``N_i[l, m] = sum_n p(m | v_n) [v_ni = l]``, the class
    masses and the log-likelihood together (on soft labels, the geometric pool of
    ``free_energy_soft_backward``). With ``informative=True`` abstaining is one more
    visible state (:mod:`deem.missingness`): its expected counts are the class mass
    minus the voter's present labels, and its log-probabilities enter the pass as
    the abstention terms. ``abstaining`` ``(D,)`` bool (with ``informative=True``): the voters whose
    abstentions are modelled; the others' missing labels are ignorable (a mixed model; ``None``: all).
    The parameters keep a rate of voting for every voter (what the M-step and SQUAREM move); for an
    ignorable voter it enters neither the pass nor the objective.

    The M-step is the MAP estimate under P_i(.|m) ~ Dir(s * Pbar(.|m) + a * e_m + 1)
    (``map_m_step``), two priors on each confusion column:

    * ``prior_strength`` (s) pseudo-counts spread like the pooled confusion Pbar
      of all classifiers (hierarchical: sparse classifiers lean on the crowd,
      prolific ones on their own evidence);
    * ``diagonal_strength`` (a) pseudo-counts on the diagonal, as in Bayesian
      classifier combination: a priori a classifier names the true class more
      often than any other. This is the assumption that ties the hidden states
      to the classes at all; without it the likelihood is as happy to let a
      hidden state model a cluster of rows that is not a class. Where the data
      pin that down weakly (strong class imbalance, few or weak classifiers)
      the MAP fit otherwise splits the dominant class into two near-balanced
      hidden states and falls far below majority vote. The pseudo-counts weigh
      most in sparsely populated columns (minority classes, little-used
      classifiers) and fade where a column holds many labels.

    EM starts from the soft majority vote and from the hard one; the fit with
    the higher penalized likelihood (log-likelihood plus the priors' terms) wins.
    EM runs under SQUAREM (:mod:`deem.solvers.squarem`): same fixed points, several
    times fewer passes where plain EM crawls; the second start stops once it reaches the
    basin of the first one's fixed point (``best_of_starts``). It stops when one EM step moves
    no probability by ``tol`` (checked every SQUAREM cycle) or after
    ``max_iter`` EM steps; ``max_iter=0`` keeps the M-step at each start (the
    parameters anchored at the majority vote, :mod:`deem.anchor`). The history is the
    mean negative log-likelihood at each check of the winning run; on return the RBM holds the fit (``RBM.set_one_unit``).
    ``comm`` (:mod:`deem.distributed`): ``data`` is this rank's share of the items, and every sum over
    items is all-reduced, so every rank fits the model of the union. ``monitor(rbm)``: called at every
    check with ``rbm`` holding the parameters there; its values (of the winning run) are ``monitored``.
    """
    if rbm.n_hidden != 1:
        raise ValueError("solver='exact' needs hidden_dim=1 (the likelihood is exact for one hidden unit)")
    if data.soft and informative:
        raise ValueError("train_exact's soft path is the geometric pool; informative soft labels are fitted by "
                         "deem.solvers.soft_evidence")
    if data.soft and comm is not None:
        raise ValueError("a distributed fit of soft labels is not supported yet (hard labels only)")
    n, k, d = total_int(comm, data.n_rows), rbm.n_classes, rbm.n_visible
    dev = rbm.W.device
    if data.soft:
        minus_one = torch.full((n,), -1.0, dtype=torch.float64, device=dev)
        zero_bv = torch.zeros(d, k, dtype=torch.float64, device=dev)
        values = data.values.double()

    modelled = None
    if informative and abstaining is not None:
        modelled = abstaining.to(device=dev, dtype=torch.float64)

    def split(logp_ext):
        """(log P of the labels (K, K, D), log P(abstain) (D, K) or None) from the fitted parameters."""
        if not informative:
            return logp_ext, None
        logp, log_abstain = logp_ext[:-1], logp_ext[-1]
        if modelled is not None:  # an ignorable voter: P(label | m, it votes), and no abstention term
            log_vote = torch.log1p(-log_abstain.exp().clamp(max=1.0 - 1e-16))
            logp = logp - (log_vote * (1.0 - modelled)).unsqueeze(0)
            log_abstain = log_abstain * modelled
        return logp.contiguous(), log_abstain.t().contiguous()

    def stats(logp_ext, logpi):
        """Expected counts of the present labels, class mass and the summed NLL at the parameters."""
        if data.soft:
            args = (logp_ext.unsqueeze(-1).contiguous(), zero_bv, logpi.unsqueeze(0).contiguous())
            out = ops.free_energy_soft_backward(minus_one, values, *args)
            return out[-3][..., 0], out[-1][0], ops.free_energy_soft(values, *args).sum()
        logp, log_abstain = split(logp_ext)
        counts, mass, nll, _ = evidence_pass(data, logp, logpi, log_abstain, True, False)
        return total_many(comm, counts, mass, nll)

    m_step = map_m_step_informative if informative else map_m_step
    penalty = (lambda *a: informative_prior_terms(*a, modelled=modelled)) if informative else prior_terms

    def em_step(theta, need_objective):
        logp, logpi = log_params(theta)
        counts, mass, nll = stats(logp, logpi)
        new_logp, new_logpi, pooled = m_step(counts, mass, prior_strength, diagonal_strength)
        new_theta = (new_logp.exp(), new_logpi.exp())
        if not need_objective:
            return new_theta, None, None
        # log-likelihood plus the priors' pseudo-count terms: what EM climbs
        score = -nll + penalty(logp, pooled, prior_strength, diagonal_strength)
        return new_theta, score, nll / n

    def start(q0):
        counts, mass = total_many(comm, confusion_counts(data, q0).permute(1, 2, 0), q0.sum(dim=0))  # (K_l, K_m, D)
        logp, logpi, _ = m_step(counts, mass, prior_strength, diagonal_strength)
        return logp.exp(), logpi.exp()

    starts = (start(q0.to(dev)) for q0 in start_posteriors(data))
    def watch(theta):
        logp_ext, logpi = log_params(theta)
        rbm.set_one_unit(*split(logp_ext)[:1], logpi, split(logp_ext)[1])
        return monitor(rbm)

    theta, history, _, monitored = best_of_starts(em_step, starts, normalize_probabilities, max_iter, tol,
                                                  monitor=None if monitor is None else watch, progress=progress)
    logp_ext, logpi = log_params(theta)
    logp, log_abstain = split(logp_ext)
    fit = OneUnitFit(logp, logpi, log_abstain, history, monitored=monitored)
    rbm.set_one_unit(fit.logp, fit.logpi, fit.log_abstain)
    return fit
