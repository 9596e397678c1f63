"""DEEM: Deep Ensemble Energy Models.

Unsupervised aggregation of the labels of many classifiers or annotators into
one consensus, with a multinomial RBM trained on fused C++/CUDA kernels.
"""
from .estimator import DEEM
from ._threads import find_blas_pools as _find_blas_pools

_find_blas_pools()  # once, here: a fit would otherwise spend ~10 ms on it (deem/_threads.py)

__version__ = "0.3.0"
__all__ = ["DEEM", "__version__"]
