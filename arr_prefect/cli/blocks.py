"""``--block NAME``: settings from a saved credentials block. Imports Prefect (slow, and it
needs the Prefect API), so ``arr`` loads this module only when ``--block`` is given."""

from __future__ import annotations

from typing import Any

__all__ = ["settings_from_block"]

BLOCK_TYPE_SLUG = "remote-rendering-credentials"
_FIELDS = (
    "account_id",
    "account_key",
    "account_domain",
    "region",
    "service_url",
    "sts_url",
    "api_version",
)


def settings_from_block(name: str) -> dict[str, Any]:
    """The settings fields a saved block sets (``NAME`` or ``type-slug/NAME``)."""
    # Through the block's own class: Prefect's generic Block.load finds a block class
    # only if something imported it first, and our loader turns an unknown or invalid
    # block into a ConfigurationError (exit 2) instead of a traceback.
    from arr_prefect.credentials import credentials_from_block

    block = credentials_from_block(name.removeprefix(f"{BLOCK_TYPE_SLUG}/"))
    return {f: getattr(block, f) for f in _FIELDS if getattr(block, f, None) is not None}
