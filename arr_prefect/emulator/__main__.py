"""``python -m arr_prefect.emulator``: the same as the ``arr-emulator`` command."""

from __future__ import annotations

import sys

from arr_prefect.emulator.cli import main

sys.exit(main())
