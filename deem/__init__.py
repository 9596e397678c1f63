"""DEEM: Deep Ensemble Energy Models.

Unsupervised aggregation of the labels of many classifiers or annotators into
one consensus, with a multinomial RBM trained on fused C++/CUDA kernels.
"""
from .estimator import DEEM

__version__ = "0.3.0"
__all__ = ["DEEM", "__version__"]
