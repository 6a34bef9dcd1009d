"""Progress a person can watch in the Prefect UI while a run waits or renders.

Two Prefect progress artifacts per ``render-batch`` run (the run page's Artifacts tab, and
the Artifacts page, keep the latest value):

- ``session-ready-wait``: while the session starts (minutes on the real service), the
  share of the Ready timeout used so far, described as the session's status and the time
  since the create request; 100 % once Ready.
- ``render-job-progress``: what the job reports. The sample job reports its frames; a job
  of your own reports with :func:`report_progress`::

      from arr_prefect.flows import report_progress

      async def my_job(session, scenes):
          for done, scene in enumerate(scenes, start=1):
              await render(session, scene)
              await report_progress(done, len(scenes), f"{scene} rendered")

  Outside a ``render-batch`` job (a test, your own flow) it does nothing.

Progress is informative: an artifact that cannot be written is logged at debug level and
the run goes on; every write is bounded in time and shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from uuid import UUID

import anyio
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.logging import get_logger

from arr_prefect.clock import Clock
from arr_prefect.units import format_duration

__all__ = [
    "JOB_PROGRESS_KEY",
    "READY_WAIT_KEY",
    "ProgressArtifact",
    "job_progress",
    "ready_wait_progress",
    "report_progress",
]

READY_WAIT_KEY = "session-ready-wait"
JOB_PROGRESS_KEY = "render-job-progress"

# How often the Ready wait's artifact is refreshed (session clock seconds).
READY_WAIT_UPDATE_SECONDS = 15.0
# How long a wait for Ready lasts before its artifact is first written (session clock
# seconds): a real start takes minutes, and a session Ready sooner has no wait to show, so
# it costs the Prefect API nothing (two writes per session otherwise).
READY_WAIT_FIRST_SECONDS = 10.0
_WRITE_TIMEOUT_SECONDS = 10.0


class ProgressArtifact:
    """A progress artifact of the current flow run: created on the first update."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.artifact_id: UUID | None = None
        self.last: float | None = None
        self._pending: tuple[float, str] | None = None
        self._writer: asyncio.Task[None] | None = None

    def post(self, percent: float, description: str) -> None:
        """Update in the background (the latest value wins); :meth:`flush` waits for it.

        A job never waits on the Prefect API to report, so reporting costs it nothing.
        """
        self._pending = (percent, description)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._drain(), name=f"progress-{self.key}"
            )

    async def _drain(self) -> None:
        while self._pending is not None:
            percent, description = self._pending
            self._pending = None
            await self.update(percent, description)

    async def flush(self) -> None:
        """Wait until every posted update is written."""
        if self._writer is not None:
            await asyncio.wait({self._writer})

    async def update(self, percent: float, description: str) -> None:
        """Set the progress (0-100) and its description; never raises."""
        percent = round(min(100.0, max(0.0, percent)), 1)
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(_WRITE_TIMEOUT_SECONDS):
                if self.artifact_id is None:
                    self.artifact_id = await acreate_progress_artifact(
                        percent, key=self.key, description=description
                    )
                else:
                    await aupdate_progress_artifact(self.artifact_id, percent, description)
            self.last = percent
        except Exception as exc:  # noqa: BLE001 - progress is informative, never fatal
            get_logger("arr.flows").debug("could not write progress %s: %s", self.key, exc)


_job_artifact: contextvars.ContextVar[ProgressArtifact | None] = contextvars.ContextVar(
    "arr_job_progress", default=None
)


@contextlib.contextmanager
def job_progress(artifact: ProgressArtifact | None = None) -> Iterator[ProgressArtifact]:
    """While the job runs, :func:`report_progress` posts to ``artifact`` (a new
    ``render-job-progress`` one by default); flush it once the session is stopped."""
    artifact = artifact if artifact is not None else ProgressArtifact(JOB_PROGRESS_KEY)
    token = _job_artifact.set(artifact)
    try:
        yield artifact
    finally:
        _job_artifact.reset(token)


async def report_progress(done: float, total: float, note: str | None = None) -> None:
    """Report a job's progress, shown as the run's ``render-job-progress`` artifact.

    It never waits on the Prefect API (the artifact is written in the background), and
    does nothing outside a ``render-batch`` job.

    Args:
        done: Units done so far (frames, scenes...).
        total: Units in all; nothing is reported when it is 0 or less.
        note: Shown after ``"<done> of <total> done: "`` in the artifact's description.
    """
    artifact = _job_artifact.get()
    if artifact is None or total <= 0:
        return
    text = f"{done:g} of {total:g} done" + (f": {note}" if note else "")
    artifact.post(done / total * 100, text)


@contextlib.asynccontextmanager
async def ready_wait_progress(
    session_id: str,
    clock: Clock,
    created_at: float,
    ready_timeout: float | None,
) -> AsyncIterator[ProgressArtifact]:
    """While the body waits for Ready, refresh the ``session-ready-wait`` artifact every
    15 s of session time: the time since the create request, as a share of the timeout.

    The artifact is first written once the wait has lasted 10 s of session time; a
    session Ready sooner gets none (and the caller's 100 % update is then skipped)."""
    artifact = ProgressArtifact(READY_WAIT_KEY)
    limit = f" (gives up after {format_duration(ready_timeout)})" if ready_timeout else ""

    async def describe() -> None:
        elapsed = clock.time() - created_at
        share = elapsed / ready_timeout * 100 if ready_timeout else 0.0
        await artifact.update(
            share,
            f"Session {session_id} is starting: {format_duration(elapsed)} since the"
            f" create request{limit}",
        )

    done = False
    writing = False

    async def refresh() -> None:
        nonlocal writing
        await clock.sleep(READY_WAIT_FIRST_SECONDS)
        while not done:
            writing = True
            try:
                await describe()
            finally:
                writing = False
            if not done:
                await clock.sleep(READY_WAIT_UPDATE_SECONDS)

    task = asyncio.get_running_loop().create_task(refresh(), name=f"ready-progress-{session_id}")
    try:
        yield artifact
    finally:
        done = True
        # A write is let finish (a cancel mid-request could leave a second artifact behind
        # an ID never learnt); a sleep is cut short.
        if not writing:
            task.cancel()
        # Never cancels the task; a cancel of ours still reaches us (the task ends soon).
        await asyncio.wait({task})
