"""The one interface every solver has: ``fit(data, all_rows, settings) -> SolverResult``.

A solver reads validated labels (either layout, :mod:`deem.sparse`) and the fit's resolved
settings, and returns the fitted model with whatever it learned besides; the estimator only
copies that onto itself. A solver never touches the estimator, and a kernel never sees either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch


@dataclass
class PreprocessingSettings:
    layers: int
    widths: Any
    activation: str
    use_softmax: bool
    one_hot: bool
    jitter: float
    init: str


@dataclass
class Settings:
    """What a solver may read: the estimator's hyperparameters as this fit resolved them."""

    hidden_dim: int
    prior_strength: float
    missing: str = "auto"
    anchor: str = "auto"
    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    momentum: float = 0.9
    cd_k: int = 10
    sampler_steps: int = 5
    deterministic: bool = True
    scheduler: str = "constant"
    init_method: str = "mv_rand"
    use_weighted: bool = True
    preprocessing: Optional[PreprocessingSettings] = None
    refit: bool = False  # sampler + preprocessing under solver='auto': refit the RBM exactly at the end
    device: Optional[torch.device] = None
    host_generator: Optional[torch.Generator] = None
    device_generator: Optional[torch.Generator] = None
    verbose: bool = False
    comm: Any = None  # deem.distributed.Comm of a distributed fit (None: local)
    monitor: Any = None  # monitor(rbm) -> value, called each epoch / convergence check (gold-label accuracy)


@dataclass
class SolverResult:
    model: Any                      # the fitted RBM
    history: List[float]
    posterior: str = "rbm"          # whose posterior predicts: 'rbm' or 'virtual_evidence'
    preprocessor: Any = None
    fitted_all_rows: bool = False   # every row was data (informative missingness), none dropped
    attributes: Dict[str, Any] = field(default_factory=dict)  # more fitted attributes, by name
    report: Optional[str] = None    # what verbose=True prints
    history_extra: Dict[str, List[float]] = field(default_factory=dict)  # more per-epoch/check series by name
    monitored: Optional[list] = None  # settings.monitor's values at each epoch / check


class Solver:
    """A named way to fit the model. Subclasses set ``name`` and implement ``check`` and ``fit``."""

    name: str = ""
    one_unit: bool = False  # reads hidden_dim=1 only (and labels stored sparse)

    def check(self, data, settings: Settings) -> None:
        """Raise ``ValueError`` for a combination this solver does not fit."""

    def fit(self, data, all_rows, settings: Settings) -> SolverResult:  # pragma: no cover - interface
        raise NotImplementedError
