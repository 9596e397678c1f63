"""One BLAS thread while a fit runs: the fits' BLAS calls are tiny, and the threads they wake compete with ours.

The fits call BLAS only through scipy and numpy on a handful of numbers (the presence test, the class
alignment; until session 11 also the prior solves of ``solver='bayes'``, now inside the ``vb_update`` op).
OpenBLAS then keeps its threads spinning for a while after each call, on the very cores the compiled kernels'
threads need: in a 5 M-label fit on a 2-core machine two thirds of the E-step
passes took 75-117 ms, one thread's speed, against 42-45 ms for the same pass alone, and 47-60 ms for every
pass with the BLAS pool held to one thread (benchmarks/RESULTS.md, session 10). ``threadpoolctl`` (a scikit-learn
dependency) caps the BLAS pools for the duration of the fit and restores them after.
"""
from __future__ import annotations

import contextlib


def single_threaded_blas():
    """A context holding every BLAS pool to one thread (a no-op without ``threadpoolctl``)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
