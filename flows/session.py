"""``rendering_session`` and the teardown layers, under the import path they always had.

The code lives in one module per guarantee (``flows/rendering.py`` composes them); this
module re-exports the names it has always exported, so ``from arr_prefect.flows.session
import ...`` keeps working. The tunables below are re-exported to be read; to change one,
set it on the module that reads it (``arr_prefect.flows.always_stopped.STOP_TIMEOUT_SECONDS``,
``create_shielded.CREATE_SHIELD_SECONDS``, ``worker_watchdog.WORKER_CHECK_SECONDS``,
``owner_tags.OWNER_TAG_RETRY_SECONDS`` and ``owner_tags.OWNER_TAG_LAST_WAIT``).
"""

from __future__ import annotations

from arr_prefect.flows.always_stopped import STOP_TIMEOUT_SECONDS as STOP_TIMEOUT_SECONDS
from arr_prefect.flows.cancel_shield import finish_despite_cancel as finish_despite_cancel
from arr_prefect.flows.create_shielded import CREATE_SHIELD_SECONDS as CREATE_SHIELD_SECONDS
from arr_prefect.flows.events import emit_session_event
from arr_prefect.flows.hooks import stop_owned_sessions
from arr_prefect.flows.lease import LeaseKeeper
from arr_prefect.flows.owner_tags import (
    CREDENTIALS_TAG_PREFIX,
    OWNER_TAG_PREFIX,
    credentials_blocks_of,
    owned_session_ids,
    record_session_owner,
)
from arr_prefect.flows.owner_tags import (
    OWNER_TAG_LAST_WAIT as OWNER_TAG_LAST_WAIT,
)
from arr_prefect.flows.owner_tags import (
    OWNER_TAG_RETRY_SECONDS as OWNER_TAG_RETRY_SECONDS,
)
from arr_prefect.flows.rendering import arendering_session as arendering_session
from arr_prefect.flows.report import SessionReport
from arr_prefect.flows.sync_session import rendering_session
from arr_prefect.flows.worker_watchdog import WORKER_CHECK_SECONDS as WORKER_CHECK_SECONDS
from arr_prefect.flows.worker_watchdog import WorkerLostError

__all__ = [
    "CREDENTIALS_TAG_PREFIX",
    "OWNER_TAG_PREFIX",
    "LeaseKeeper",
    "SessionReport",
    "WorkerLostError",
    "credentials_blocks_of",
    "emit_session_event",
    "owned_session_ids",
    "record_session_owner",
    "rendering_session",
    "stop_owned_sessions",
]
