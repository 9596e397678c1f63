"""The solvers, one per file, picked by name from a registry (``DEEM(solver=...)``).

===========  ======================================================================  ==================
name         what it fits                                                             file
===========  ======================================================================  ==================
``exact``    MAP EM of the one-hidden-unit (Dawid-Skene) model; soft labels: the      ``exact.py``,
             virtual-evidence EM                                                      ``soft_evidence.py``
``bayes``    variational Bayes of the same model, its prior by empirical Bayes        ``bayes.py``
``gwg``      persistent contrastive divergence, Gibbs-with-Gradients chains           ``pcd.py``
``dlp``      persistent contrastive divergence, discrete Langevin chains              ``pcd.py``
===========  ======================================================================  ==================

Shared pieces: ``squarem.py`` (the EM accelerator), ``samplers.py`` (the persistent chains),
``init.py`` (the samplers' starts), ``one_unit.py`` (the meaning of a missing label and where the
one-unit fit stops, decided for ``exact`` and ``bayes``). Every solver has the interface of
``base.Solver``: ``check(data, settings)`` and ``fit(data, all_rows, settings) -> SolverResult``.
"""
from __future__ import annotations

from .base import PreprocessingSettings, Settings, Solver, SolverResult
from .exact import (EXACT_DIAGONAL_STRENGTH, OneUnitFit, informative_prior_terms, log_params, map_m_step,
                    map_m_step_informative, normalize_probabilities, prior_terms, soft_vote_posterior,
                    start_posteriors, train_exact)
from .init import INIT_METHODS, initialize
from .one_unit import OneUnitSolver
from .pcd import SCHEDULERS, PCDSolver, TrainConfig, learning_rate_at, train_pcd

SOLVERS = {solver.name: solver for solver in
           (OneUnitSolver("bayes"), OneUnitSolver("exact"), PCDSolver("gwg"), PCDSolver("dlp"))}
NAMES = ("auto", *SOLVERS)


def get_solver(name: str) -> Solver:
    """The registered solver called ``name`` (``ValueError`` naming the choices otherwise)."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver must be one of {('auto', *SOLVERS)}; got {name!r}")
    return SOLVERS[name]


def resolve(name: str, hidden_dim: int, use_preprocessing: bool, soft: bool, init_method: str):
    """``(solver name, init_method, refit)`` for the fit: what ``'auto'`` stands for on these labels.

    One hidden unit, no preprocessing: ``bayes`` on hard labels (its prior learned from the data),
    ``exact`` on soft ones (the virtual-evidence EM); otherwise ``gwg``. With preprocessing layers and
    one hidden unit the RBM starts at the exact Dawid-Skene fit of the identity-initialized layers and is
    refitted exactly to what the trained layers output (``refit``).
    """
    if name != "auto":
        return name, init_method, False
    if hidden_dim == 1 and not use_preprocessing:
        return ("exact" if soft else "bayes"), init_method, False
    if use_preprocessing and hidden_dim == 1:
        return "gwg", "ds", True
    return "gwg", init_method, False


__all__ = ["SOLVERS", "NAMES", "get_solver", "resolve", "Settings", "PreprocessingSettings", "Solver",
           "SolverResult", "OneUnitSolver", "PCDSolver", "train_exact", "train_pcd", "TrainConfig", "SCHEDULERS",
           "learning_rate_at", "INIT_METHODS", "initialize", "OneUnitFit", "map_m_step", "map_m_step_informative",
           "informative_prior_terms", "prior_terms", "log_params", "normalize_probabilities", "soft_vote_posterior",
           "start_posteriors", "EXACT_DIAGONAL_STRENGTH"]
