"""``arr``: the operators' command line, on the core client (:mod:`arr_prefect.cli.commands`)."""

from __future__ import annotations

from arr_prefect.cli.commands import app, build_app, main

__all__ = ["app", "build_app", "main"]
