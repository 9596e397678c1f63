"""Hyperparameters from the data: the predictor behind ``DEEM(auto_hyperparameters=True)``.

The predictor is plain JSON (``deem/data/hyperparameters.json``, written by
``benchmarks/train_hyperparameter_predictor.py``); loading it parses JSON and
nothing else: no pickle, no code. It holds a small set of whole candidate
configurations and, for each synthetic training ensemble, its meta-features
(:mod:`deem.meta_features`) and every candidate's accuracy minus the default
configuration's accuracy on it. To predict, it takes the ``k`` training ensembles
of the same kind (hard or soft labels) nearest in standardized meta-feature space
and picks the candidate with the best mean gain over them, but returns the default
configuration unless that gain exceeds ``margin`` on average and is positive on at
least ``min_win_fraction`` (default half) of the neighbours, and unless the data lie within the training
distribution (nearest-neighbour distance below ``max_distance``). So it departs
from the default only where similar data clearly favoured something else.

    >>> from deem.autotune import load_predictor
    >>> from deem.meta_features import meta_features
    >>> params = load_predictor().predict(meta_features(data))   # data: a LabelData
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .meta_features import FEATURE_NAMES, meta_features

FORMAT = "deem-hyperparameter-predictor"
SCHEMA_VERSION = 1
FILENAME = "hyperparameters.json"

# Every key a prediction sets, with its allowed values (a tuple) or type check.
KEYS = (
    "solver", "epochs", "batch_size", "learning_rate", "momentum", "init_method", "scheduler",
    "use_preprocessing", "preprocessing_layers", "preprocessing_activation", "prior_strength",
)
CHOICES = {
    "solver": ("bayes", "exact", "gwg"),
    "init_method": ("mv", "mv_rand", "mv_lo", "rand", "ds"),
    "scheduler": ("constant", "cosine", "exponential"),
    "preprocessing_activation": ("sparsemax", "entmax", "softmax", "relu", "gelu", "silu"),
}


def _check_value(key: str, value: Any) -> Any:
    """``value`` converted to its Python type; ValueError if it is not valid for ``key``."""
    bad = ValueError(f"hyperparameter predictor: invalid value {value!r} for {key!r}")
    if key in CHOICES:
        if value not in CHOICES[key]:
            raise bad
        return value
    if key == "use_preprocessing":
        if not isinstance(value, bool):
            raise bad
        return value
    if key in ("epochs", "batch_size", "preprocessing_layers"):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "preprocessing_layers" else 1):
            raise bad
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad
    value = float(value)
    if (key == "learning_rate" and value <= 0) or (key == "momentum" and not 0 <= value < 1) or (
            key == "prior_strength" and value < 0):
        raise bad
    return value


def check_config(config: Any, where: str = "config") -> Dict[str, Any]:
    """A full, valid configuration (every key of ``KEYS``) or ValueError."""
    if not isinstance(config, dict):
        raise ValueError(f"hyperparameter predictor: {where} must be an object; got {type(config).__name__}")
    missing = [k for k in KEYS if k not in config]
    if missing:
        raise ValueError(f"hyperparameter predictor: {where} lacks the key(s) {missing}")
    out = {k: _check_value(k, config[k]) for k in KEYS}
    if out["use_preprocessing"] and out["preprocessing_layers"] < 1:
        raise ValueError(f"hyperparameter predictor: {where} uses preprocessing with 0 layers")
    return out


class Predictor:
    """A loaded hyperparameter predictor; ``predict(features) -> {parameter: value}``."""

    def __init__(self, bundle: Dict[str, Any], source: str = "<bundle>"):
        self.source = source
        self.metadata = bundle.get("metadata", {})
        self.configs: List[Dict[str, Any]] = [
            check_config(c, f"configs[{i}]") for i, c in enumerate(bundle["configs"])]
        self.config_names: List[str] = list(bundle["config_names"])
        self.config_kinds: List[List[str]] = [list(k) for k in bundle["config_kinds"]]
        self.default_config: Dict[str, int] = {kind: int(bundle["default_config"][kind]) for kind in ("hard", "soft")}
        m = bundle["model"]
        self.k = int(m["k"])
        self.margin = float(m["margin"])
        self.min_win_fraction = float(m.get("min_win_fraction", 0.5))
        self.mean = [float(v) for v in m["feature_mean"]]
        self.scale = [float(v) for v in m["feature_scale"]]
        self.weights = [float(v) for v in m["feature_weights"]]
        self.train_x = [[float(v) for v in row] for row in m["train_features"]]
        self.train_gain = [[None if v is None else float(v) for v in row] for row in m["train_gain"]]
        self.max_distance = {kind: float(m["max_distance"][kind]) for kind in ("hard", "soft")}
        self._train_z = [self._standardize(row) for row in self.train_x]
        self._soft_col = FEATURE_NAMES.index("soft")

    # -------------------------------------------------------------- predict
    def _standardize(self, x: Sequence[float]) -> List[float]:
        return [(v - m) / s * w for v, m, s, w in zip(x, self.mean, self.scale, self.weights)]

    def _vector(self, features: Dict[str, float]) -> List[float]:
        if not isinstance(features, dict):
            raise TypeError(f"features must be a dict from deem.meta_features.meta_features; got {type(features).__name__}")
        missing = [f for f in FEATURE_NAMES if f not in features]
        if missing:
            raise ValueError(f"features lack {missing}; compute them with deem.meta_features.meta_features")
        x = [float(features[f]) for f in FEATURE_NAMES]
        if not all(math.isfinite(v) for v in x):
            raise ValueError(f"features must be finite; got {features}")
        return x

    def choose(self, features: Dict[str, float], fixed: Optional[Dict[str, Any]] = None) -> Tuple[Optional[int], str]:
        """Index into ``configs`` of the chosen configuration and a one-line reason.

        ``fixed``: values the user set. Only candidates consistent with them are
        considered, and the baseline to beat is the default configuration if it
        is consistent, else the consistent candidate closest to it (e.g. with
        ``solver='gwg'`` fixed: the sampler with default settings). Returns
        ``(None, reason)`` when no candidate is consistent.
        """
        x = self._vector(features)
        kind = "soft" if x[self._soft_col] >= 0.5 else "hard"
        fixed = dict(fixed or {})
        allowed = [c for c, kinds in enumerate(self.config_kinds)
                   if kind in kinds and _consistent(self.configs[c], fixed)]
        if not allowed:
            return None, "no candidate configuration agrees with the values you set: nothing predicted"
        default = self.default_config[kind]
        base = default if default in allowed else min(
            allowed, key=lambda c: (_n_differences(self.configs[c], self.configs[default]), c))
        what = "the default" if base == default else f"'{self.config_names[base]}'"
        z = self._standardize(x)
        pool = [i for i, row in enumerate(self.train_x) if (row[self._soft_col] >= 0.5) == (kind == "soft")]
        if not pool:
            return base, f"no {kind}-label training data: {what}"
        dist = sorted((math.sqrt(sum((a - b) ** 2 for a, b in zip(z, self._train_z[i]))), i) for i in pool)
        if dist[0][0] > self.max_distance[kind]:
            return base, (f"meta-features far from every training ensemble (distance {dist[0][0]:.2f} > "
                          f"{self.max_distance[kind]:.2f}): {what}")
        near = [i for _, i in dist[:self.k]]
        best, best_gain = base, 0.0
        for c in allowed:
            if c == base:
                continue
            pairs = [(self.train_gain[i][c], self.train_gain[i][base]) for i in near]
            if any(g is None or b is None for g, b in pairs):
                continue
            gains = [g - b for g, b in pairs]  # both are gains over the default: the difference is over base
            mean_gain = sum(gains) / len(gains)
            wins = sum(g > 0 for g in gains)
            if mean_gain > self.margin and wins >= self.min_win_fraction * len(gains) and mean_gain > best_gain:
                best, best_gain = c, mean_gain
        if best == base:
            return base, f"no candidate beats {what} by > {self.margin:.3f} on the {len(near)} nearest ensembles"
        return best, (f"'{self.config_names[best]}' beat {what} by {best_gain:+.3f} accuracy on average "
                      f"on the {len(near)} nearest training ensembles")

    def predict(self, features: Dict[str, float], fixed: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """DEEM constructor values for every key of ``KEYS`` (a fresh dict); ``{}`` if nothing agrees with ``fixed``."""
        index, _ = self.choose(features, fixed)
        return {} if index is None else dict(self.configs[index])

    def predict_data(self, data) -> Dict[str, Any]:
        """``predict(meta_features(data))`` for a ``LabelData``."""
        return self.predict(meta_features(data))


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _consistent(config: Dict[str, Any], fixed: Dict[str, Any]) -> bool:
    return all(_same_value(config[key], value) for key, value in fixed.items() if key in config)


def _n_differences(a: Dict[str, Any], b: Dict[str, Any]) -> int:
    return sum(not _same_value(a[key], b[key]) for key in KEYS)


def _validate(bundle: Any, source: str) -> Dict[str, Any]:
    def fail(msg: str):
        raise ValueError(f"malformed hyperparameter predictor {source}: {msg}")

    if not isinstance(bundle, dict):
        fail(f"the top level must be a JSON object, got {type(bundle).__name__}")
    if bundle.get("format") != FORMAT:
        fail(f"'format' must be {FORMAT!r}; got {bundle.get('format')!r}")
    if bundle.get("schema_version") != SCHEMA_VERSION:
        fail(f"schema_version {bundle.get('schema_version')!r} is not supported (this deem reads {SCHEMA_VERSION}); "
             "regenerate it with benchmarks/train_hyperparameter_predictor.py")
    for key in ("feature_names", "configs", "config_names", "config_kinds", "default_config", "model"):
        if key not in bundle:
            fail(f"missing key {key!r}")
    if list(bundle["feature_names"]) != list(FEATURE_NAMES):
        fail(f"it was trained on the features {bundle['feature_names']}, but this deem computes "
             f"{list(FEATURE_NAMES)}; regenerate it")
    n_cfg = len(bundle["configs"]) if isinstance(bundle["configs"], list) else -1
    if n_cfg < 1 or len(bundle["config_names"]) != n_cfg or len(bundle["config_kinds"]) != n_cfg:
        fail("'configs', 'config_names' and 'config_kinds' must be lists of the same, nonzero length")
    dc = bundle["default_config"]
    if not isinstance(dc, dict) or any(not isinstance(dc.get(k), int) or not 0 <= dc[k] < n_cfg
                                       for k in ("hard", "soft")):
        fail("'default_config' must map 'hard' and 'soft' to config indices")
    for i, (cfg, kinds) in enumerate(zip(bundle["configs"], bundle["config_kinds"])):
        if not isinstance(kinds, list) or not set(kinds) <= {"hard", "soft"}:
            fail(f"config_kinds[{i}] must be a list of 'hard'/'soft'")
    if "soft" not in bundle["config_kinds"][dc["soft"]] or "hard" not in bundle["config_kinds"][dc["hard"]]:
        fail("the default configurations must be marked for their kind")
    m = bundle["model"]
    if not isinstance(m, dict) or m.get("type") != "knn-gain":
        fail("'model' must be an object with type 'knn-gain'")
    for key in ("k", "margin", "feature_mean", "feature_scale", "feature_weights", "train_features",
                "train_gain", "max_distance"):
        if key not in m:
            fail(f"model lacks {key!r}")
    nf = len(FEATURE_NAMES)
    if not isinstance(m["k"], int) or m["k"] < 1:
        fail("model.k must be a positive integer")
    for key in ("feature_mean", "feature_scale", "feature_weights"):
        if not isinstance(m[key], list) or len(m[key]) != nf:
            fail(f"model.{key} must be a list of {nf} numbers")
    if any(not isinstance(s, (int, float)) or s <= 0 for s in m["feature_scale"]):
        fail("model.feature_scale must be positive")
    tx, tg = m["train_features"], m["train_gain"]
    if not isinstance(tx, list) or not isinstance(tg, list) or len(tx) != len(tg) or not tx:
        fail("model.train_features and model.train_gain must be non-empty lists of the same length")
    if any(not isinstance(r, list) or len(r) != nf for r in tx):
        fail(f"every row of model.train_features must hold {nf} numbers")
    if any(not isinstance(r, list) or len(r) != n_cfg for r in tg):
        fail(f"every row of model.train_gain must hold {n_cfg} entries (number or null)")
    if not isinstance(m["max_distance"], dict) or any(k not in m["max_distance"] for k in ("hard", "soft")):
        fail("model.max_distance must map 'hard' and 'soft' to numbers")
    return bundle


def bundled_path() -> Path:
    """Where the predictor shipped with the package lies."""
    return Path(__file__).resolve().parent / "data" / FILENAME


def load_predictor(model_dir: Optional[Union[str, Path]] = None) -> Predictor:
    """The predictor in ``model_dir`` (a folder holding ``hyperparameters.json``, or a ``.json``
    file), else the one bundled with the package.

    Reads JSON only. FileNotFoundError if ``model_dir`` names nothing there;
    ValueError if the file is not a valid predictor.
    """
    if model_dir is None:
        path = bundled_path()
        if not path.is_file():
            raise ValueError(f"the bundled hyperparameter predictor {path} is missing from this installation; "
                             "reinstall deem or pass model_dir=")
    else:
        path = Path(model_dir).expanduser()
        if path.is_dir():
            path = path / FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"no hyperparameter predictor at {path} (model_dir must be a folder holding {FILENAME} "
                "or the path of such a .json file)")
    try:
        text = path.read_text(encoding="utf-8")
        bundle = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed hyperparameter predictor {path}: not a JSON file ({exc})") from None
    try:
        return Predictor(_validate(bundle, str(path)), source=str(path))
    except ValueError:
        raise
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed hyperparameter predictor {path}: {type(exc).__name__}: {exc}") from None


def predict_hyperparameters(data, model_dir=None) -> Dict[str, Any]:
    """Convenience: ``load_predictor(model_dir).predict(meta_features(data))``."""
    return load_predictor(model_dir).predict(meta_features(data))


def predictor_constraints(fixed: dict, hidden_dim: int) -> dict:
    """The user's structural choices as the predictor reads them: it was trained on GWG runs, so a
    sampler choice (or several hidden units) asks for its best sampler settings, which are DLP's best guess too."""
    from . import solvers

    fixed = dict(fixed)
    chosen = fixed.get("solver")
    if hidden_dim != 1 or (chosen not in (None, "auto") and not solvers.get_solver(chosen).one_unit
                           and chosen != "gwg"):
        fixed["solver"] = "gwg"
    return fixed


def solver_for_hidden_units(name: str, hidden_dim: int) -> str:
    """A predicted one-unit solver becomes the sampler when the model has several hidden units."""
    from . import solvers

    if hidden_dim != 1 and name != "auto" and solvers.get_solver(name).one_unit:
        return "gwg"
    return name
