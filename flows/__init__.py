"""Prefect flows for Azure Remote Rendering: provision, run a job, always tear down.

- :func:`render_batch`: the ``render-batch`` flow (create → wait → job → stop).
- :func:`rendering_session`: the same guarantee as a context manager, for composing into
  your own flows: ``with`` in a ``def`` flow or task, ``async with`` in async code
  (:func:`arendering_session` is the async one by name).
- :class:`LeaseKeeper`: the rolling lease on its own.
- :func:`stop_owned_sessions`: the flow hook that stops a run's sessions from any process.
- :func:`reap_orphaned_sessions`: the last line: stops sessions whose owning flow run is
  over or gone (triggered by crashed or cancelled owners, and hourly).
- :func:`report_progress`: a job's progress, shown as the run's progress artifact.
- :class:`SessionSlot`: the account's session quota, a leased slot of a Prefect global
  concurrency limit (``rendering_session`` takes one for each session).
- :func:`run_render_batch`: run the ``render-batch`` deployment from another flow, get
  its :class:`RenderSummary`, and cancel it with the caller (from sync or async code;
  :func:`arun_render_batch` is the async form by name).
"""

from __future__ import annotations

from arr_prefect.flows.deployment_runs import (
    RENDER_BATCH_DEPLOYMENT,
    RenderBatchRunError,
    RenderBatchTimeoutError,
    arun_render_batch,
    run_render_batch,
)
from arr_prefect.flows.jobs import (
    InvalidJobError,
    JobFailedError,
    JobSpec,
    JobTimeoutError,
    session_environment,
    session_parameters,
)
from arr_prefect.flows.progress import report_progress
from arr_prefect.flows.quota import SessionSlot, SlotWaitTimeoutError
from arr_prefect.flows.reaper import ReapDecision, ReapReport, reap_orphaned_sessions
from arr_prefect.flows.render_batch import RenderSummary, render_batch
from arr_prefect.flows.session import (
    CREDENTIALS_TAG_PREFIX,
    OWNER_TAG_PREFIX,
    LeaseKeeper,
    SessionReport,
    WorkerLostError,
    credentials_blocks_of,
    owned_session_ids,
    record_session_owner,
    stop_owned_sessions,
)
from arr_prefect.flows.sync_session import arendering_session, rendering_session

__all__ = [
    "CREDENTIALS_TAG_PREFIX",
    "OWNER_TAG_PREFIX",
    "RENDER_BATCH_DEPLOYMENT",
    "InvalidJobError",
    "JobFailedError",
    "JobSpec",
    "JobTimeoutError",
    "LeaseKeeper",
    "ReapDecision",
    "ReapReport",
    "RenderBatchRunError",
    "RenderBatchTimeoutError",
    "RenderSummary",
    "SessionReport",
    "SessionSlot",
    "SlotWaitTimeoutError",
    "WorkerLostError",
    "arendering_session",
    "arun_render_batch",
    "credentials_blocks_of",
    "owned_session_ids",
    "reap_orphaned_sessions",
    "record_session_owner",
    "render_batch",
    "rendering_session",
    "report_progress",
    "run_render_batch",
    "session_environment",
    "session_parameters",
    "stop_owned_sessions",
]
