"""``--block NAME``: the account of a saved ``RemoteRenderingCredentials`` block.

Loading a block imports Prefect (slow) and asks the Prefect API, so ``arr`` imports this
module only when ``--block`` is given; every other command runs without Prefect.
"""

from __future__ import annotations

from typing import Any

from arr_prefect.cli.config import SETTING_NAMES
from arr_prefect.errors import ArrError, ConfigurationError

__all__ = ["BLOCK_TYPE_SLUG", "settings_from_block"]

BLOCK_TYPE_SLUG = "remote-rendering-credentials"


def settings_from_block(name: str) -> dict[str, Any]:
    """Every account field of the saved block ``NAME`` (or ``type-slug/NAME``), unset ones
    as None: a block's account is all the block's, never half from ``ARR_*``."""
    # Through the block's own class: Prefect's generic Block.load finds a block class
    # only if something imported it first, and this loader turns an unknown or invalid
    # block into a ConfigurationError (exit 2) instead of a traceback.
    from arr_prefect.credentials import credentials_from_block

    try:
        block = credentials_from_block(name.removeprefix(f"{BLOCK_TYPE_SLUG}/"))
    except ConfigurationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to reach the Prefect API ends here
        raise ArrError(
            f"cannot load credentials block {name!r} from the Prefect API"
            f" ({type(exc).__name__}: {exc}); check PREFECT_API_URL and that the server is up"
        ) from None
    return {field: getattr(block, field) for field in SETTING_NAMES}
