"""SQUAREM: a squared-extrapolation accelerator around an EM map (Varadhan & Roland, 2008).

Plain EM for mixture models crawls where the classes overlap (many classes,
weak classifiers): each step shrinks the distance to the fixed point by a
constant factor close to 1. SQUAREM takes two EM steps ``theta1 = F(theta0)``,
``theta2 = F(theta1)``, extrapolates along them with the step length of its
"SqS3" scheme, ``alpha = -max(1, |r| / |v|)`` with ``r = theta1 - theta0`` and
``v = theta2 - 2 theta1 + theta0``, and ends with one stabilizing EM step from
the extrapolated point. If the objective there is lower than at ``theta1`` the
extrapolation is dropped and ``theta2`` is kept, so the objective the EM map
climbs never goes down more than plain EM would let it. Fixed points are the
EM map's own: the acceleration changes how fast EM gets there, not where.

As in the reference implementation the step length is capped: the cap starts
at 1 (plain EM twice), grows 4x each time a step reaches it and shrinks 4x
after a rejected one, so early, far-from-linear iterations take safe steps.
Parameters are probabilities (a tuple of tensors); ``normalize`` projects an
extrapolated point back onto the simplex. The loop keeps its tensors on their
device and reads scalars back to the host once per cycle (the step length and
the accept test) plus the convergence check every ``check_every`` cycles.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

Params = Tuple[torch.Tensor, ...]
# Growth (and shrink) factor of the step-length cap per cycle.
STEP_GROWTH = 4.0
# em_step(theta, need_objective) -> (F(theta), objective at theta (0-d tensor, higher is
# better), mean negative log-likelihood at theta (0-d tensor)); the last two may be None
# when need_objective is False (they can cost a pass of their own).
EMStep = Callable[[Params, bool], Tuple[Params, Optional[torch.Tensor], Optional[torch.Tensor]]]


def _probability_change(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(x - y).abs().max() for x, y in zip(a, b)]).max()


def squarem(em_step: EMStep, theta: Params, normalize: Callable[[Params], Params], max_iter: int,
            tol: float, check_every: int = 5,
            distance: Optional[Callable[[Params, Params], torch.Tensor]] = None) -> Tuple[Params, List[float], float, int]:
    """Iterate ``em_step`` with SQUAREM from ``theta`` until one EM step moves no probability by ``tol``.

    ``normalize`` maps an extrapolated point back to valid parameters.
    ``distance(a, b)`` measures one EM step for the stopping test (default: the
    largest absolute change of any parameter, right for probabilities).
    ``max_iter`` bounds the number of EM-map evaluations (each SQUAREM cycle
    costs three); ``max_iter=0`` leaves ``theta`` where it is and only evaluates the
    objective there (one evaluation). Returns ``(theta, history, objective, evaluations)``: ``history``
    is the mean negative log-likelihood at the start of every checked cycle and at
    the end, ``objective`` the objective at the returned ``theta``.
    """
    distance = distance or _probability_change
    if max_iter == 0:
        _, f_start, nll_start = em_step(theta, True)
        return theta, [float(nll_start)], float(f_start), 1
    history: List[float] = []
    evaluations = 0
    step_max = 1.0
    cycle = 0
    while True:
        check = cycle % check_every == 0
        theta1, _, nll0 = em_step(theta, check)
        evaluations += 1
        if check:
            history.append(float(nll0))
            if float(distance(theta1, theta)) < tol:
                theta = theta1
                break
        if evaluations + 2 > max_iter:
            theta = theta1
            break
        theta2, f1, _ = em_step(theta1, True)
        r = [t1 - t0 for t0, t1 in zip(theta, theta1)]
        v = [t2 - 2 * t1 + t0 for t0, t1, t2 in zip(theta, theta1, theta2)]
        r_norm = torch.sqrt(sum((x * x).sum() for x in r))
        v_norm = torch.sqrt(sum((x * x).sum() for x in v))
        ratio = float(r_norm / v_norm.clamp(min=1e-300))
        step = min(max(ratio, 1.0), step_max)
        if step == step_max:
            step_max *= STEP_GROWTH
        evaluations += 1
        if step > 1.0:
            alpha = -step
            extrapolated = normalize(tuple(t0 - 2 * alpha * a + alpha * alpha * b for t0, a, b in zip(theta, r, v)))
            stabilized, f_ext, _ = em_step(extrapolated, True)
            evaluations += 1
            # Keep the extrapolation only where it did not lose ground against theta1.
            if bool(torch.isfinite(f_ext)) and float(f_ext) >= float(f1):
                theta = stabilized
            else:
                theta = theta2
                step_max = max(1.0, step_max / STEP_GROWTH)
        else:  # alpha = -1 lands on theta2 itself
            theta = theta2
        cycle += 1
    _, f_end, nll_end = em_step(theta, True)
    history.append(float(nll_end))
    return theta, history, float(f_end), evaluations
