"""``arr``: the operators' command line, on the core client (see :mod:`arr_prefect.cli.app`)."""

from __future__ import annotations

from arr_prefect.cli.app import app, build_app, main

__all__ = ["app", "build_app", "main"]
