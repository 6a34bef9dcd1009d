"""``python -m remote_rendering.emulator``: the same as the ``arr-emulator`` command."""

from __future__ import annotations

import sys

from remote_rendering.emulator.cli import main

sys.exit(main())
