"""SQUAREM: a squared-extrapolation accelerator around an EM map (Varadhan & Roland, 2008).

Plain EM for mixture models crawls where the classes overlap (many classes,
weak classifiers): each step shrinks the distance to the fixed point by a
constant factor close to 1. SQUAREM takes two EM steps ``theta1 = F(theta0)``,
``theta2 = F(theta1)``, extrapolates along them with the step length of its
"SqS3" scheme, ``alpha = -max(1, |r| / |v|)`` with ``r = theta1 - theta0`` and
``v = theta2 - 2 theta1 + theta0``, and ends with one stabilizing EM step from
the extrapolated point. If the objective there is lower than at ``theta1`` (beyond
rounding, ``ROUNDING_RTOL`` relative) the extrapolation is dropped and ``theta2`` is kept, so the objective the EM map
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
# The solvers' stopping tolerance: a run has converged when one EM step moves no probability by TOL.
TOL = 1e-8
# The run has also converged when the objective moved by less than OBJECTIVE_RTOL * tol, relative,
# between two checks (1e-12 at TOL): its changes are then at the rounding of a sum of N terms, while a
# parameter of a rarely seen voter can keep drifting by more than ``tol`` at no gain (measured: a 5 M-label
# crowd spent 24 of 38 passes there). A smaller ``tol`` asks for both more tightly. Not looser: stopping
# adult2's fit at 1e-10 left a task's posterior 0.39 from the fixed point's (RESULTS.md, session 13).
OBJECTIVE_RTOL = 1e-4
# An extrapolation that ties theta1's objective to this relative rounding is kept (see ``squarem``).
ROUNDING_RTOL = 1e-12
# A run from a later start that comes this close (largest move of any probability) to an earlier
# start's fixed point is in its basin: the EM map contracts there, and distinct fixed points of these
# likelihoods lie far further apart (a swapped or merged class moves probabilities by tenths).
JOIN_RADIUS = 1e-3
# em_step(theta, need_objective) -> (F(theta), objective at theta (0-d tensor, higher is
# better), mean negative log-likelihood at theta (0-d tensor)); the last two may be None
# when need_objective is False (they can cost a pass of their own).
EMStep = Callable[[Params, bool], Tuple[Params, Optional[torch.Tensor], Optional[torch.Tensor]]]


def _probability_change(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(x - y).abs().max() for x, y in zip(a, b)]).max()


def squarem(em_step: EMStep, theta: Params, normalize: Callable[[Params], Params], max_iter: int,
            tol: float, check_every: int = 1,
            distance: Optional[Callable[[Params, Params], torch.Tensor]] = None,
            join: Optional[Params] = None,
            on_check: Optional[Callable[[Params], None]] = None,
            report: Optional[Callable[[int, float], None]] = None) -> Tuple[Params, List[float], float, int]:
    """Iterate ``em_step`` with SQUAREM from ``theta`` until one EM step moves no probability by ``tol``
    (or the objective stops changing by ``OBJECTIVE_RTOL * tol``, relative).

    ``normalize`` maps an extrapolated point back to valid parameters.
    ``distance(a, b)`` measures one EM step for the stopping test (default: the
    largest absolute change of any parameter, right for probabilities).
    ``max_iter`` bounds the number of EM-map evaluations (each SQUAREM cycle
    costs three); ``max_iter=0`` leaves ``theta`` where it is and only evaluates the
    objective there (one evaluation). ``join``: another run's fixed point; at a check within
    ``JOIN_RADIUS`` of it the run stops, in that fixed point's basin, and its objective is
    ``-inf`` (the other run stands for it; see ``best_of_starts``). ``on_check(theta)`` is called at
    every check (and on the returned ``theta``) -- a monitor, e.g. accuracy against gold labels;
    ``report(evaluations, value)`` too, with the history's value there (progress for ``verbose``). Returns ``(theta, history,
    objective, evaluations)``: ``history`` is the mean negative log-likelihood at the start of
    every checked cycle, ``objective`` the objective at the last check (on convergence one EM
    step, smaller than ``tol``, before the returned ``theta``: no pass is spent on it).
    """
    distance = distance or _probability_change
    if max_iter == 0:
        _, f_start, nll_start = em_step(theta, True)
        if on_check is not None:
            on_check(theta)
        return theta, [float(nll_start)], float(f_start), 1
    history: List[float] = []
    evaluations = 0
    step_max = 1.0
    cycle = 0
    last = float("inf")  # the objective at the previous check
    while True:
        check = cycle % check_every == 0
        theta1, f0, nll0 = em_step(theta, check)
        evaluations += 1
        if check:
            history.append(float(nll0))
            if on_check is not None:
                on_check(theta)
            if report is not None:
                report(evaluations, history[-1])
            objective = float(f0)
            if float(distance(theta1, theta)) < tol or abs(objective - last) < OBJECTIVE_RTOL * tol * abs(objective):
                return theta1, history, objective, evaluations
            last = objective
            if join is not None and float(distance(theta1, join)) < JOIN_RADIUS:
                return theta1, history, float("-inf"), evaluations
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
            # Keep the extrapolation unless it lost ground against theta1 beyond rounding: near the fixed
            # point the two objectives are equal to rounding, and a test on their last bits would send runs
            # whose sums differ only in order (ranks, layouts) down different paths.
            f1v = float(f1)
            if bool(torch.isfinite(f_ext)) and float(f_ext) >= f1v - ROUNDING_RTOL * abs(f1v):
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


def best_of_starts(em_step: EMStep, starts: Sequence[Params], normalize: Callable[[Params], Params], max_iter: int,
                   tol: float, distance: Optional[Callable[[Params, Params], torch.Tensor]] = None,
                   monitor: Optional[Callable[[Params], object]] = None,
                   progress: Optional[Callable[[int, int, float], None]] = None):
    """``squarem`` from each start in turn; the run of the highest objective: ``(theta, history, objective,
    monitored)``, ``monitored`` the values ``monitor(theta)`` took at each check of that run (``[]`` without one).
    ``progress(start, evaluations, value)`` is called at every check of every run.

    A later run that reaches the basin of the first run's fixed point stops there (``join``): it would end
    at that fixed point, so its remaining passes would only reproduce the first run. With ``max_iter=0``
    every start is only evaluated.
    """
    best = None
    first = None
    for index, theta0 in enumerate(starts):
        seen: list = []
        report = None if progress is None else (lambda ev, value, index=index: progress(index, ev, value))
        hook = None if monitor is None else (lambda t, seen=seen: seen.append(monitor(t)))
        theta, history, objective, _ = squarem(em_step, theta0, normalize, max_iter, tol, distance=distance,
                                               join=first, on_check=hook, report=report)
        if first is None and max_iter > 0:
            first = theta
        if best is None or objective > best[2]:
            best = (theta, history, objective, seen)
    return best
