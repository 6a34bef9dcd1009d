"""A sample rendering job, shipped for the demo and the tests.

It stands in for a real renderer: it "connects" to the session's host and handshake port
and renders ``frames`` frames of ``seconds_per_frame`` each, logging progress. It can fail
on purpose (``fail_at_frame``) to show teardown on job failure. It reports each frame with
:func:`arr_prefect.flows.report_progress` (the run's ``render-job-progress`` artifact).

As a callable job: ``arr_prefect.flows.sample_job:render_frames``. As a deployment job,
the flow :func:`sample_render_job`, deployed by prefect.yaml as ``sample-render-job``::

    render_batch(job_deployment="sample-render-job/sample-render-job",
                 job_parameters={"frames": 12, "seconds_per_frame": 5.0})

As a command job::

    python -m arr_prefect.flows.sample_job --frames 12 --seconds-per-frame 5

which reads ``ARR_SESSION_ID`` / ``ARR_SESSION_HOSTNAME`` / ``ARR_SESSION_HANDSHAKE_PORT``
from its environment and exits 0 on success, 3 when told to fail.

Time comes from the process's default clock, so the demo (a scaled clock) and the tests
(a virtual clock) do not wait in real time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from prefect import flow
from pydantic import BaseModel

from arr_prefect.clock import SystemClock, default_clock
from arr_prefect.flows.progress import report_progress
from arr_prefect.models import Session, SessionSize
from arr_prefect.tasks.sessions import run_logger

__all__ = ["RenderResult", "SampleJobError", "render_frames", "sample_render_job"]


class SampleJobError(RuntimeError):
    """The sample job failed on purpose."""


class RenderResult(BaseModel):
    """What the sample job rendered."""

    session_id: str
    frames: int
    seconds: float


async def render_frames(
    session: Session,
    frames: int = 12,
    seconds_per_frame: float = 5.0,
    fail_at_frame: int | None = None,
) -> RenderResult:
    """Render ``frames`` frames on the session; raise :class:`SampleJobError` at
    ``fail_at_frame`` if given."""
    if frames < 0 or seconds_per_frame < 0:
        raise ValueError("frames and seconds_per_frame must not be negative")
    logger = run_logger()
    clock = default_clock()
    started = clock.time()
    logger.info(
        "Sample job: connecting to %s:%s, rendering %d frames",
        session.hostname,
        session.handshake_port,
        frames,
    )
    for frame in range(1, frames + 1):
        if fail_at_frame is not None and frame == fail_at_frame:
            raise SampleJobError(f"sample job failed on purpose at frame {frame}")
        await clock.sleep(seconds_per_frame)
        await report_progress(frame, frames, f"frame {frame} of {frames} rendered")
        if frame == frames or frame % max(1, frames // 4) == 0:
            logger.info("Sample job: frame %d/%d rendered", frame, frames)
    return RenderResult(session_id=session.id, frames=frames, seconds=clock.time() - started)


@flow(name="sample-render-job", log_prints=True)
async def sample_render_job(
    session_id: str,
    hostname: str | None = None,
    handshake_port: int | None = None,
    arr_inspector_port: int | None = None,
    size: str | None = None,
    frames: int = 12,
    seconds_per_frame: float = 5.0,
    fail_at_frame: int | None = None,
) -> RenderResult:
    """The sample job as a flow, for ``render_batch(job_deployment=...)``: render-batch
    passes the Ready session's details (``session_id``, ``hostname``, ``handshake_port``,
    ``arr_inspector_port``, ``size``) and the job parameters (``frames``,
    ``seconds_per_frame``, ``fail_at_frame``); the run must end Completed.

    Args:
        session_id: The Ready session to render on (render-batch fills it in).
        hostname: The session's host (render-batch fills it in).
        handshake_port: The session's handshake port (render-batch fills it in).
        arr_inspector_port: The session's ArrInspector port (render-batch fills it in).
        size: The session's size (render-batch fills it in).
        frames: How many frames to render.
        seconds_per_frame: How long each frame takes.
        fail_at_frame: Fail on purpose at this frame (to watch teardown).
    """
    session = Session(
        id=session_id,
        status="Ready",
        hostname=hostname,
        handshake_port=handshake_port,
        arr_inspector_port=arr_inspector_port,
        size=SessionSize.parse(size) if size else None,
    )
    return await render_frames(session, frames, seconds_per_frame, fail_at_frame)


def main(argv: list[str] | None = None) -> int:
    """Command-line form: read the session from ``ARR_SESSION_*`` and render."""
    parser = argparse.ArgumentParser(
        prog="python -m arr_prefect.flows.sample_job", description=__doc__
    )
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--seconds-per-frame", type=float, default=5.0)
    parser.add_argument("--fail-at-frame", type=int, default=None)
    args = parser.parse_args(argv)
    session_id = os.environ.get("ARR_SESSION_ID")
    if not session_id:
        print("ARR_SESSION_ID is not set: run me as a render_batch command job", file=sys.stderr)
        return 2
    port = os.environ.get("ARR_SESSION_HANDSHAKE_PORT")
    session = Session(
        id=session_id,
        status="Ready",
        hostname=os.environ.get("ARR_SESSION_HOSTNAME"),
        handshake_port=int(port) if port else None,
    )
    print(f"rendering {args.frames} frames on {session.hostname}:{session.handshake_port}")
    try:
        result = asyncio.run(
            render_frames(session, args.frames, args.seconds_per_frame, args.fail_at_frame)
        )
    except SampleJobError as exc:
        print(str(exc), file=sys.stderr)
        return 3
    print(f"rendered {result.frames} frames in {result.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    # As a separate process it runs in real time.
    from arr_prefect.clock import use_clock

    with use_clock(SystemClock()):
        sys.exit(main())
