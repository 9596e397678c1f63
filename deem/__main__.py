"""``python -m deem ...`` (and ``torchrun -m deem ...``): the command line of :mod:`deem.cli`."""
import sys

from .cli import main

sys.exit(main())
