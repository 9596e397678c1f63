"""The ``deem`` logger: what ``verbose=True`` shows (fit reports, EM / VB progress), at INFO level."""
from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("deem")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a notebook's or a test's capture included)."""

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


def log(message: str) -> None:
    """A ``verbose=True`` message, through the ``deem`` logger at INFO. A ``deem`` logger with no handler of its
    own gets one (once) that writes to stderr and stops propagation, so that ``verbose`` shows its messages as it
    always did; an application that gives the logger its handlers (or sets ``propagate``) routes them itself."""
    if not LOGGER.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    if LOGGER.level == logging.NOTSET:
        LOGGER.setLevel(logging.INFO)
    LOGGER.info(message)
