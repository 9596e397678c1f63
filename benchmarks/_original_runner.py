"""Time the ORIGINAL ``deem==0.2.0`` package on one label matrix, as a black box.

Run with the interpreter of a separate environment that has ``deem==0.2.0``
installed, never with the one that has this repository installed (both packages
are imported as ``deem``)::

    /work/venvs/deem020/bin/python -I benchmarks/_original_runner.py X.npy CONFIG [--out result.json]

``X.npy``: labels ``(n_samples, n_classifiers)``, integers ``0..K-1``, ``-1`` missing.
``CONFIG``: a JSON object, inline or the path of a ``.json`` file. Keys (all optional):

- ``params``: keyword arguments of ``DEEM(...)`` (e.g. ``{"n_classes": 5, "epochs": 2,
  "random_state": 0, "device": "cpu"}``).
- ``threads``: ``torch.set_num_threads`` (default 1; ``null`` leaves torch's default).
- ``warmup``: first fit a throw-away model on the first 1,024 rows for one epoch (default
  false; worth it on a GPU, where the first fit also pays for CUDA start-up).
- ``fit_kwargs``: extra keyword arguments of ``fit`` (default ``{"verbose": false}``).
- ``predict``: time ``predict`` (default true); ``predict_repeats`` (default 1, best is reported).
- ``align_to``: ``null`` (raw hidden-state labels), ``"self"`` (``predict(X, align_to=X)``,
  Hungarian alignment to the majority vote of X) or the path of another ``.npy``.
- ``predictions_out`` / ``probs_out``: ``.npy`` paths where predictions / probabilities are saved.
- ``labels``: path of a ``.npy`` of true labels (``-1`` = none); accuracy of the
  (aligned) predictions on the labelled rows is reported.

The result, a JSON object, is written to ``--out`` or printed as the last line of stdout;
everything the package prints goes to stderr. On failure the object has ``"ok": false``
and ``"error"``, and the exit status is 1.
"""
from __future__ import annotations

import os
import sys

# The repository's own package is also called ``deem``: make sure it cannot shadow
# the original. ``-I`` already drops cwd, the script folder and PYTHONPATH; this is
# for callers that forget it.
_here = os.path.dirname(os.path.abspath(__file__))
_repo = os.path.dirname(_here)


def _shadows(entry: str) -> bool:
    """True for a sys.path entry from which this repository's ``deem`` would import."""
    path = os.path.abspath(entry or os.getcwd())
    return path in (_here, _repo) or (
        os.path.isdir(os.path.join(path, "csrc")) and os.path.isfile(os.path.join(path, "deem", "estimator.py")))


sys.path[:] = [p for p in sys.path if not _shadows(p)]

import contextlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402


def _load_config(arg: str) -> dict:
    if arg.lstrip().startswith("{"):
        return json.loads(arg)
    with open(arg) as f:
        return json.load(f)


def _sync(torch, device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def run(x_path: str, cfg: dict) -> dict:
    import numpy as np
    import torch

    threads = cfg.get("threads", 1)
    if threads is not None:
        torch.set_num_threads(int(threads))

    import deem as original
    from deem import DEEM

    origin = os.path.abspath(original.__file__)
    if origin.startswith(_repo + os.sep):
        raise RuntimeError(f"imported this repository's deem ({origin}), not the original package")

    X = np.load(x_path)
    params = dict(cfg.get("params", {}))
    fit_kwargs = {"verbose": False, **cfg.get("fit_kwargs", {})}
    model = DEEM(**params)

    result = {
        "ok": True,
        "package": "deem",
        "deem_version": getattr(original, "__version__", None),
        "deem_file": origin,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": int(X.shape[0]),
        "n_classifiers": int(X.shape[1]),
        "rows_all_missing": int((X < 0).all(axis=1).sum()),
    }

    with contextlib.redirect_stdout(sys.stderr):
        device = str(params.get("device", "auto"))
        if cfg.get("warmup"):
            DEEM(**{**params, "epochs": 1}).fit(X[:1024], **fit_kwargs)
        _sync(torch, device)
        t0 = time.perf_counter()
        model.fit(X, **fit_kwargs)
        _sync(torch, device)
        result["fit_seconds"] = time.perf_counter() - t0

        history = getattr(model, "history_", None) or {}
        losses = history.get("loss", []) if isinstance(history, dict) else []
        result["epochs"] = len(losses) if losses else getattr(model, "epochs", None)
        result["final_loss"] = float(losses[-1]) if losses else None
        result["device"] = str(getattr(model, "device_", device))
        result["n_classes"] = int(getattr(model, "n_classes_", -1))
        result["params"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                            for k, v in model.get_params().items()}

        if cfg.get("predict", True):
            align = cfg.get("align_to")
            align_arr = X if align == "self" else (np.load(align) if align else None)
            times = []
            preds = None
            for _ in range(max(1, int(cfg.get("predict_repeats", 1)))):
                model.reset_class_mapping()
                _sync(torch, device)
                t0 = time.perf_counter()
                preds = model.predict(X, align_to=align_arr)
                _sync(torch, device)
                times.append(time.perf_counter() - t0)
            preds = np.asarray(preds)
            result["predict_seconds"] = min(times)
            result["predict_seconds_all"] = times
            result["aligned"] = align_arr is not None
            if cfg.get("predictions_out"):
                np.save(cfg["predictions_out"], preds)
                result["predictions_path"] = cfg["predictions_out"]
            if cfg.get("probs_out"):
                probs = np.asarray(model.predict(X, return_probs=True))
                np.save(cfg["probs_out"], probs)
                result["probs_path"] = cfg["probs_out"]
            if cfg.get("labels"):
                y = np.load(cfg["labels"])
                mask = y >= 0
                result["accuracy"] = float((preds[mask] == y[mask]).mean()) if mask.any() else None
                result["n_labelled"] = int(mask.sum())
    return result


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("x", help=".npy label matrix (n_samples, n_classifiers), -1 = missing")
    ap.add_argument("config", help="JSON object, inline or a path to a .json file")
    ap.add_argument("--out", help="write the JSON result here instead of stdout")
    args = ap.parse_args(argv)
    try:
        result = run(args.x, _load_config(args.config))
        status = 0
    except Exception as exc:  # report, never hang the caller
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
        status = 1
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
