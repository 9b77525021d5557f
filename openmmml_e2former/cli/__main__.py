"""``python -m openmmml_e2former.cli``: the ``e2former`` command (used by the Makefile and torchrun)."""

import sys

from . import main

sys.exit(main())
