"""Exact EM for soft labels under the virtual-evidence (noisy-observation) Dawid–Skene model.

A soft label ``v_ni`` (a distribution over K classes from classifier ``i`` on
row ``n``) is read as uncertain evidence about the label the classifier would
have emitted: the classifier emitted some class ``l`` with its confusion
``P_i(l | m)`` given the true class ``m``, and ``v_nil`` is the weight of the
evidence for ``l``. The likelihood of a row is

    p(v_n) = sum_m pi_m prod_{i present} sum_l v_nil P_i(l | m),

a mixture over the true class with, per classifier, the confusion column ``m``
averaged under the soft label. One-hot soft labels give exactly the hard-label
Dawid–Skene likelihood, so this fit equals :func:`deem.solvers.train_exact` on
the argmax labels. A classifier whose column is all zero on a row is missing
there and contributes a factor 1 -- or, under informative missingness
(:mod:`deem.missingness`), the factor ``P_i(abstain | m)``, with ``P_i(l | m)``
then the rate of voting times the label given a vote. That model folds into the
same pass exactly: with ``f`` the rate of voting, a present column scores
``sum_l v_nil P_i(l | m, votes) f_im / (1 - f_im)`` and every row starts from
``log pi_m + sum_i log(1 - f_im)``; a row with no column at all is then data too,
added in closed form (its posterior is the same for every such row).

EM has two latent variables per row: the true class ``m`` and, per classifier,
the emitted class ``l``. With ``a_ni(m) = sum_l v_nil P_i(l | m)`` the E-step is
``q_nm ∝ pi_m prod_i a_ni(m)`` and ``r_nil(m) = v_nil P_i(l | m) / a_ni(m)``; the
expected counts are ``N_i[l, m] = P_i(l | m) sum_n v_nil q_nm / a_ni(m)`` and the
M-step is :func:`deem.solvers.map_m_step` (MAP under the hierarchical Dirichlet
prior). Each E-step is one pass of the fused ``soft_evidence_pass`` op (its
plain-PyTorch twin where no kernel exists: float64 bmm over row chunks), in
float64 on the tensor's own device, with memory ``O(K · K · D)`` beyond the input.
"""
from __future__ import annotations

import torch

from .. import ops
from .exact import (EXACT_DIAGONAL_STRENGTH, informative_prior_terms, log_params, map_m_step,
                      map_m_step_informative, normalize_probabilities, prior_terms)
from .squarem import TOL, best_of_starts
from ..distributed import total, total_many

__all__ = ["fit_soft_evidence", "posterior_soft_evidence"]

# Elements of one (chunk, K, D) float64 working tensor: 4M elements = 32 MiB.
_CHUNK_ELEMENTS = 1 << 22


def _check_values(values, allow_empty: bool = False) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        try:
            values = torch.as_tensor(values)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"soft labels must be a numeric (N, K, D) tensor ({exc})") from None
    values = values.detach()
    if values.ndim != 3:
        raise ValueError(
            f"soft labels must be 3-D (n_samples, n_classes, n_classifiers); got {values.ndim}-D "
            f"with shape {tuple(values.shape)}"
        )
    n, k, d = values.shape
    if (n == 0 and not allow_empty) or d == 0:  # a distributed fit's rank may hold no row with evidence
        raise ValueError(f"soft labels are empty: shape {tuple(values.shape)}")
    if k < 2:
        raise ValueError(f"soft labels need at least 2 classes on axis 1; got shape {tuple(values.shape)}")
    if values.dtype == torch.bool or values.is_complex() or not (values.is_floating_point() or values.dtype in (
            torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"soft labels must be real numbers; got dtype {values.dtype}")
    if not values.is_floating_point():
        values = values.double()
    if not bool(torch.isfinite(values).all()):
        raise ValueError("soft labels contain NaN or infinite values")
    if bool((values < 0).any()):
        raise ValueError("soft labels contain negative values")
    return values


def _check_params(values: torch.Tensor, logp, logpi) -> tuple[torch.Tensor, torch.Tensor]:
    _, k, d = values.shape
    logp = torch.as_tensor(logp).to(values.device, torch.float64)
    logpi = torch.as_tensor(logpi).to(values.device, torch.float64)
    if logp.shape != (k, k, d):
        raise ValueError(f"logp must have shape (K_l, K_m, D) = {(k, k, d)} for these soft labels; "
                         f"got {tuple(logp.shape)}")
    if logpi.shape != (k,):
        raise ValueError(f"logpi must have shape (K,) = {(k,)}; got {tuple(logpi.shape)}")
    return logp, logpi


def _chunk_rows(k: int, d: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(k * d, 1))


def _e_pass(values: torch.Tensor, logp: torch.Tensor, logpi: torch.Tensor, want_counts: bool = True,
            want_posterior: bool = False):
    """One pass over the rows at parameters ``(logp, logpi)``: the fused ``soft_evidence_pass`` op.

    Returns ``(counts (K_l, K_m, D) or None, class mass (K,), summed NLL (0-d), n_rows with
    evidence (0-d), posterior (N, K) or None)``; the sums stay on the device (no host sync).
    """
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    counts, mass, nll, rows, post = ops.soft_evidence_pass(
        values, logp.to(torch.float64), logpi.to(torch.float64), want_counts, want_posterior)
    return (counts if want_counts else None), mass, nll, rows, (post if want_posterior else None)


def _average_posterior(values: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` average of the present classifiers' probabilities; zero rows where none is present."""
    n, k, d = values.shape
    out = torch.empty(n, k, dtype=torch.float64, device=values.device)
    step = _chunk_rows(k, d)
    for start in range(0, n, step):
        s = values[start:start + step].to(torch.float64).sum(dim=2)
        out[start:start + step] = s / s.sum(dim=1, keepdim=True).clamp(min=1e-12)
    return out


def _fractional_counts(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``(K_l, K_m, D)`` counts ``sum_n v_nil q_nm``: soft labels as fractional votes."""
    n, k, d = values.shape
    out = torch.zeros(k, k, d, dtype=torch.float64, device=values.device)
    step = _chunk_rows(k, d)
    for start in range(0, n, step):
        out += torch.einsum("nld,nm->lmd", values[start:start + step].to(torch.float64), q[start:start + step])
    return out


def fit_soft_evidence(values: torch.Tensor, prior_strength: float = 2.0, max_iter: int = 1000,
                      tol: float = TOL) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Fit the virtual-evidence Dawid–Skene model to soft labels ``(N, K, D)`` by EM, in float64.

    ``prior_strength`` pseudo-counts per confusion column, spread like the pooled
    confusion of all classifiers (the prior of :func:`deem.solvers.map_m_step`).
    EM starts from the average of the classifiers' probabilities and from its
    argmax (one-hot); the run with the higher penalized log-likelihood wins.
    EM runs under SQUAREM (:mod:`deem.solvers.squarem`); it stops when one EM step
    moves no probability by more than ``tol`` (checked every SQUAREM cycle) or
    after ``max_iter`` EM steps.

    Returns ``(logp, logpi, history)``: ``logp[l, m, i] = log P_i(l | m)``
    ``(K, K, D)``, ``logpi[m] = log pi_m`` ``(K,)``, both float64 on the input's
    device, in hidden-state order (not aligned to the input's class coding), and
    the mean negative log-likelihood per row with evidence at each check and
    at the end, of the winning run. Rows where every classifier is missing
    are ignored.
    """
    return _fit(values, prior_strength, max_iter, tol)[:3]


def fold_abstentions(logp_ext: torch.Tensor, logpi: torch.Tensor):
    """Informative parameters (``log P (K + 1, K, D)``, abstention last) -> the pass's ``(logp, logpi)``."""
    log_abstain = logp_ext[-1]  # (K_m, D)
    return (logp_ext[:-1] - log_abstain.unsqueeze(0)).contiguous(), logpi + log_abstain.sum(dim=1)


def _fit(values: torch.Tensor, prior_strength: float, max_iter: int, tol: float, informative: bool = False,
         n_empty: int = 0, comm=None, monitor=None, progress=None):
    """``fit_soft_evidence``; with ``informative`` the parameters are ``log P (K + 1, K, D)`` (abstention last)
    and ``n_empty`` more rows, where every classifier abstained, count as data. ``comm``: ``values`` is this
    rank's share of the rows and every sum over rows is all-reduced (:mod:`deem.distributed`); ``n_empty``
    is then the total over the ranks."""
    values = _check_values(values, allow_empty=comm is not None)
    prior_strength = float(prior_strength)
    if not prior_strength >= 0:
        raise ValueError(f"prior_strength must be >= 0; got {prior_strength}")
    if int(max_iter) < 0:
        raise ValueError(f"max_iter must be >= 0 (0: the M-step at the start, no EM iteration); got {max_iter}")
    n, k, d = values.shape
    seen = torch.zeros(d, dtype=torch.bool, device=values.device)
    for start in range(0, n, _chunk_rows(k, d)):
        seen |= (values[start:start + _chunk_rows(k, d)] > 0).any(dim=0).any(dim=0)
    seen = total(comm, seen.double()) > 0
    if not bool(seen.any()):
        raise ValueError("soft labels hold no evidence: every classifier is missing on every row")
    if not bool(seen.all()):
        return _fit_without_silent(values, seen, prior_strength, max_iter, tol, informative, n_empty, comm)[:3] + ([],)
    m_step = map_m_step_informative if informative else map_m_step
    penalty = informative_prior_terms if informative else prior_terms

    def e_pass(logp, logpi):
        if not informative:
            return total_many(comm, *_e_pass(values, logp, logpi)[:4])
        logp_pass, logpi_pass = fold_abstentions(logp, logpi)
        counts, mass, nll, rows = total_many(comm, *_e_pass(values, logp_pass, logpi_pass)[:4])
        if n_empty:  # every such row: score logpi_pass, the same posterior
            lse = torch.logsumexp(logpi_pass, dim=0)
            mass, nll, rows = mass + n_empty * (logpi_pass - lse).exp(), nll - n_empty * lse, rows + n_empty
        return counts, mass, nll, rows

    def em_step(theta, need_objective):
        logp, logpi = log_params(theta)
        counts, mass, nll, rows = e_pass(logp, logpi)
        new_logp, new_logpi, pooled = m_step(counts, mass, prior_strength, EXACT_DIAGONAL_STRENGTH)
        # penalized log-likelihood: what EM climbs
        score = -nll + penalty(logp, pooled, prior_strength, EXACT_DIAGONAL_STRENGTH)
        return (new_logp.exp(), new_logpi.exp()), score, nll / rows.clamp(min=1)

    def start(q0):
        counts, mass = total_many(comm, _fractional_counts(values, q0), q0.sum(dim=0))
        logp, logpi, _ = m_step(counts, mass, prior_strength, EXACT_DIAGONAL_STRENGTH)
        return logp.exp(), logpi.exp()

    avg = _average_posterior(values)
    has = avg.sum(dim=1, keepdim=True) > 0
    hard = torch.nn.functional.one_hot(avg.argmax(dim=1), k).to(torch.float64) * has
    watch = None if monitor is None else (lambda theta: monitor(*log_params(theta)))
    theta, history, _, monitored = best_of_starts(em_step, (start(q0) for q0 in (avg, hard)), normalize_probabilities,
                                                  int(max_iter), tol, monitor=watch, progress=progress)
    logp, logpi = log_params(theta)
    return logp, logpi, history, monitored


def _fit_without_silent(values: torch.Tensor, seen: torch.Tensor, prior_strength: float, max_iter: int,
                        tol: float, informative: bool = False, n_empty: int = 0, comm=None):
    """Fit on the classifiers that answer somewhere; a silent one gets its prior-only confusion.

    A classifier with no evidence anywhere adds nothing to the likelihood or the
    pooled confusion; EM would leave it at the MAP estimate for zero counts. Fitting
    without it keeps the other parameters (and the accelerator's path) exactly as if
    it were absent.
    """
    logp_seen, logpi, history, _ = _fit(values[:, :, seen], prior_strength, max_iter, tol, informative, n_empty, comm)
    folded = fold_abstentions(logp_seen, logpi) if informative else (logp_seen, logpi)
    counts, mass, _, rows = total_many(comm, *_e_pass(values[:, :, seen], *folded)[:4])
    if informative and n_empty:
        mass = mass + n_empty * torch.softmax(folded[1], dim=0)
    zero = torch.zeros(values.shape[1], values.shape[1], values.shape[2], dtype=torch.float64,
                       device=values.device)
    zero[:, :, seen] = counts
    m_step = map_m_step_informative if informative else map_m_step
    logp, _, _ = m_step(zero, mass, prior_strength, EXACT_DIAGONAL_STRENGTH)
    logp[:, :, seen] = logp_seen
    return logp, logpi, history


def posterior_soft_evidence(values: torch.Tensor, logp: torch.Tensor, logpi: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` float64 posterior ``q(m | v_n) ∝ pi_m prod_{i present} sum_l v_nil P_i(l | m)``.

    In hidden-state order; a row where every classifier is missing gets ``pi``.
    """
    values = _check_values(values)
    logp, logpi = _check_params(values, logp, logpi)
    with torch.no_grad():
        return _e_pass(values, logp, logpi, want_counts=False, want_posterior=True)[4]


def train_soft_evidence(rbm, data, prior_strength: float, informative: bool = False, n_empty: int = 0,
                        max_iter: int = 1000, comm=None, monitor=None, progress=None):
    """``solver='exact'`` on soft labels: fit by :func:`fit_soft_evidence`, store it in ``rbm``.

    ``W[..., 0] = log P``, ``b_v = 0``, ``b_h[0] = log pi`` (``RBM.set_one_unit``; under
    informative missingness with the abstentions folded in, which is exactly the
    parameters the pass takes): the same parameters ``train_exact`` leaves for hard
    labels, so ``confusion_`` and ``skill_`` read the same way; predictions on soft
    labels go through :func:`posterior_soft_evidence` (on one-hot rows the two posteriors agree).
    ``n_empty``: rows, left out of ``data``, where every classifier abstained (informative only).
    ``max_iter=0``: the parameters anchored at the majority vote (the M-step at the start, no EM iteration).
    """
    if rbm.n_hidden != 1:
        raise ValueError("solver='exact' needs hidden_dim=1 (the likelihood is exact for one hidden unit)")
    def store(logp, logpi):
        if informative:
            rbm.set_one_unit(logp[:-1], logpi, logp[-1].t())
        else:
            rbm.set_one_unit(logp, logpi)

    watch = None if monitor is None else (lambda logp, logpi: (store(logp, logpi), monitor(rbm))[1])
    logp, logpi, history, monitored = _fit(data.values, prior_strength, max_iter, TOL, informative, n_empty, comm,
                                           watch, progress)
    store(logp, logpi)
    return history, monitored
