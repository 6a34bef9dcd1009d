"""``--block NAME``: settings from a saved credentials block. Imports Prefect (slow, and it
needs the Prefect API), so ``arr`` loads this module only when ``--block`` is given."""

from __future__ import annotations

from typing import Any

from arr_prefect.errors import ConfigurationError

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
    from prefect.blocks.core import Block

    reference = name if "/" in name else f"{BLOCK_TYPE_SLUG}/{name}"
    try:
        block = Block.load(reference)
    except ValueError as exc:
        raise ConfigurationError(f"cannot load block {reference!r}: {exc}") from None
    return {f: getattr(block, f) for f in _FIELDS if getattr(block, f, None) is not None}
