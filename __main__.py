import sys

from .cli import main  # the `python -m lsm` entry point is part of the command line

sys.exit(main())
