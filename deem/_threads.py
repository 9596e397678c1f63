"""One BLAS thread while a fit runs: the fits' BLAS calls are tiny, and the threads they wake compete with ours.

The fits call BLAS only through scipy and numpy on a handful of numbers (the presence test, the class
alignment; until session 11 also the prior solves of ``solver='bayes'``, now inside the ``vb_update`` op).
OpenBLAS then keeps its threads spinning for a while after each call, on the very cores the compiled kernels'
threads need: in a 5 M-label fit on a 2-core machine two thirds of the E-step
passes took 75-117 ms, one thread's speed, against 42-45 ms for the same pass alone, and 47-60 ms for every
pass with the BLAS pool held to one thread (benchmarks/RESULTS.md, session 10). ``threadpoolctl`` (a scikit-learn
dependency) caps the BLAS pools for the duration of the fit and restores them after.

Finding the pools means resolving the path of every shared library the process has loaded (about 10 ms
with torch, scipy and pandas in: a twentieth of a fit on a small crowd), so it is done once, when
``deem`` is imported -- numpy's and scipy's OpenBLAS are loaded by then -- and the controller is reused.
A BLAS library loaded later is not capped: the cap only saves time, it changes no result.
"""
from __future__ import annotations

import contextlib

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - scikit-learn brings it
    ThreadpoolController = None

_CONTROLLER = None


def find_blas_pools():
    """The process's ``ThreadpoolController`` (None without ``threadpoolctl``), made at the first call."""
    global _CONTROLLER
    if _CONTROLLER is None and ThreadpoolController is not None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def single_threaded_blas():
    """A context holding every BLAS pool to one thread (a no-op without ``threadpoolctl``)."""
    controller = find_blas_pools()
    if controller is None:  # pragma: no cover
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")
