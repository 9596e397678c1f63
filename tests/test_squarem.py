"""deem.solvers.squarem: the EM accelerator reaches plain EM's fixed point in fewer EM steps, and never loses ground."""
import numpy as np
import pytest
import torch

from deem.datasets import dawid_skene
from deem.solvers.soft_evidence import _e_pass, fit_soft_evidence
from deem.solvers import EXACT_DIAGONAL_STRENGTH, log_params, map_m_step, normalize_probabilities, prior_terms
from deem.solvers.squarem import squarem


def soft_crowd(seed=3):
    """Weak, overlapping classifiers on 6 classes: plain EM converges slowly here."""
    X, _ = dawid_skene(n_samples=600, n_classifiers=7, n_classes=6, accuracy=(0.25, 0.5), missing_rate=0.2,
                       random_state=seed)
    rng = np.random.default_rng(seed)
    n, d = X.shape
    V = np.zeros((n, 6, d))
    rows, cols = np.nonzero(X >= 0)
    V[rows, X[rows, cols], cols] = 1.0
    V[rows, :, cols] += rng.dirichlet(np.ones(6), size=len(rows))  # blur: proper soft labels
    V /= np.maximum(V.sum(axis=1, keepdims=True), 1e-12)
    return torch.tensor(V)


def em_map(values, strength=2.0):
    def em_step(theta, need_objective):
        logp, logpi = log_params(theta)
        counts, mass, nll, rows, _ = _e_pass(values, logp, logpi)
        new_logp, new_logpi, pooled = map_m_step(counts, mass, strength, EXACT_DIAGONAL_STRENGTH)
        score = -nll + prior_terms(logp, pooled, strength, EXACT_DIAGONAL_STRENGTH)
        return (new_logp.exp(), new_logpi.exp()), score, nll / rows
    return em_step


def start(values):
    q = values.sum(dim=2)
    q = q / q.sum(dim=1, keepdim=True)
    counts = torch.einsum("nld,nm->lmd", values, q)
    logp, logpi, _ = map_m_step(counts, q.sum(dim=0), 2.0, EXACT_DIAGONAL_STRENGTH)
    return logp.exp(), logpi.exp()


def plain_em(em_step, theta, steps):
    scores = []
    for _ in range(steps):
        theta, score, _ = em_step(theta, True)
        scores.append(float(score))
    return theta, scores


def test_squarem_reaches_plain_em_fixed_point_with_fewer_steps():
    values = soft_crowd()
    em_step = em_map(values)
    theta0 = start(values)
    accelerated, history, objective, evaluations = squarem(em_step, theta0, normalize_probabilities,
                                                           max_iter=5000, tol=1e-10)
    reference, scores = plain_em(em_step, theta0, 6000)
    # plain EM is still moving after many steps here; the accelerator is done in far fewer
    assert evaluations < 1500
    assert np.all(np.diff(scores) >= -1e-8 * abs(scores[0]))
    for a, b in zip(accelerated, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert objective >= scores[-1] - 1e-6
    assert len(history) >= 2 and np.isfinite(history).all()


def test_squarem_on_a_linear_map_converges_in_few_cycles():
    # F(theta) = target + rate * (theta - target): plain EM needs ~log(tol)/log(rate) = 3000 steps
    target = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    rate = 0.995

    def em_step(theta, need_objective):
        (p,) = theta
        score = -((p - target) ** 2).sum()
        return (target + rate * (p - target),), score, -score

    theta, _, _, evaluations = squarem(em_step, (torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64),),
                                       lambda t: (t[0].clamp(min=0) / t[0].clamp(min=0).sum(),), 10_000, 1e-12)
    torch.testing.assert_close(theta[0], target, rtol=0, atol=1e-9)
    assert evaluations < 100


def test_squarem_rejects_an_extrapolation_that_loses_ground():
    # The objective is 0 on plain EM's path and -1 anywhere else: every extrapolation is refused,
    # so the result lies on plain EM's path (with a step cap that keeps shrinking back to 1).
    target = torch.tensor([0.2, 0.8], dtype=torch.float64)
    theta0 = torch.tensor([0.9, 0.1], dtype=torch.float64)
    def step(p):  # nonlinear, so an extrapolation never lands on the path by accident
        return target + 0.5 * (p - target) + 0.3 * (p - target) ** 2

    plain = [theta0]
    for _ in range(60):
        plain.append(step(plain[-1]))

    def on_path(p):
        return any(bool(torch.allclose(p, q, rtol=0, atol=1e-15)) for q in plain)

    refused = []

    def em_step(theta, need_objective):
        (p,) = theta
        ok = on_path(p)
        if not ok:
            refused.append(p)
        return (step(p),), torch.tensor(0.0 if ok else -1.0, dtype=torch.float64), torch.tensor(0.0)

    theta, _, _, evaluations = squarem(em_step, (theta0,), lambda t: t, max_iter=10, tol=0.0, check_every=1)
    assert refused, "no extrapolation was tried"
    assert on_path(theta[0])


def test_fit_with_a_silent_classifier_equals_the_fit_without_it():
    values = soft_crowd(seed=5)
    padded = torch.cat([values, torch.zeros(values.shape[0], 6, 1, dtype=values.dtype)], dim=2)
    logp, logpi, _ = fit_soft_evidence(values)
    logp2, logpi2, _ = fit_soft_evidence(padded)
    torch.testing.assert_close(logp2[..., :-1], logp, rtol=0, atol=0)
    torch.testing.assert_close(logpi2, logpi, rtol=0, atol=0)
    # the silent classifier gets the prior alone: its columns are distributions, diagonal-heavy
    silent = logp2[..., -1].exp()
    torch.testing.assert_close(silent.sum(dim=0), torch.ones(6, dtype=torch.float64))
    assert bool((silent.diagonal() > silent.max(dim=0).values - 1e-12).all())


def test_fit_with_no_evidence_at_all_is_a_value_error():
    with pytest.raises(ValueError, match="no evidence"):
        fit_soft_evidence(torch.zeros(5, 3, 2, dtype=torch.float64))


def _two_basins():
    """A toy EM map on one probability with two attracting fixed points, 0.2 and 0.8 (repelling 0.5); the
    objective is higher at 0.8."""
    def em_step(theta, need_objective):
        (p,) = theta
        moved = p + 0.5 * (p - 0.2) * (0.5 - p) * (p - 0.8) * 4.0
        score = -((p - 0.8) ** 2).sum() + 0.01 * (p > 0.5).double().sum() if need_objective else None
        return (moved.clamp(0.0, 1.0),), score, score
    return em_step


def test_best_of_starts_stops_a_start_that_joins_the_first_fixed_point():
    from deem.solvers.squarem import best_of_starts

    em_step = _two_basins()
    starts = [(torch.tensor([0.7], dtype=torch.float64),), (torch.tensor([0.9], dtype=torch.float64),)]
    alone = [squarem(em_step, s, lambda t: t, max_iter=500, tol=1e-12) for s in starts]
    calls = []

    def counted(theta, need):
        calls.append(1)
        return em_step(theta, need)

    theta, history, objective, _ = best_of_starts(counted, starts, lambda t: t, max_iter=500, tol=1e-12)
    assert float(theta[0]) == pytest.approx(0.8, abs=1e-9) and objective == alone[0][2]
    # the second start ran only until it came within JOIN_RADIUS of 0.8, not to convergence
    assert len(calls) < alone[0][3] + alone[1][3]


def test_best_of_starts_keeps_the_better_of_two_basins():
    from deem.solvers.squarem import best_of_starts

    em_step = _two_basins()
    low, high = (torch.tensor([0.3], dtype=torch.float64),), (torch.tensor([0.6], dtype=torch.float64),)
    for starts in ([low, high], [high, low]):
        theta, _, objective, _ = best_of_starts(em_step, starts, lambda t: t, max_iter=500, tol=1e-12)
        assert float(theta[0]) == pytest.approx(0.8, abs=1e-9) and np.isfinite(objective)
