"""Save and load fitted models: tensors and plain values only, written atomically.

Loading uses ``torch.load(weights_only=True)``, which refuses anything but
tensors and plain containers, so a model file can never run code.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict

import torch

FORMAT = "deem-model"
VERSION = 1


def save_state(state: Dict[str, Any], path) -> None:
    """Write ``state`` to ``path`` via a temporary file in the same folder, then rename.

    A crash mid-save leaves the previous file (if any) intact.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=".deem-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state(path) -> Dict[str, Any]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt file
        raise ValueError(f"{path!r} is not a loadable DEEM model file: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a DEEM model file")
    if payload.get("version", 0) > VERSION:
        raise ValueError(f"{path!r} was written by a newer DEEM (format {payload['version']}); upgrade to load it")
    return payload
