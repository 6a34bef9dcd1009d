"""The pluggable rendering job: what runs while the session is Ready.

Three kinds, each given the session's connection details:

- a **Python callable** (``"package.module:function"`` or the function itself), called as
  ``fn(session, **parameters)``; it may be async;
- a **Prefect deployment** (``"flow-name/deployment-name"``), run with the session's
  details (``session_id``, ``hostname``, ``handshake_port``, ``arr_inspector_port``,
  ``size``) merged into its parameters; its final state decides success;
- a **command**, run with ``ARR_SESSION_ID``, ``ARR_SESSION_HOSTNAME``,
  ``ARR_SESSION_HANDSHAKE_PORT``, ``ARR_SESSION_ARR_INSPECTOR_PORT`` and
  ``ARR_SESSION_SIZE`` in its environment (and none of our ``ARR_*`` settings, the key
  least of all); its exit code
  decides success, and a timeout ends it.

:func:`validate_job` checks a job before any session is created, so a typo costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal
from uuid import UUID

import anyio
from prefect import get_client
from prefect.client.schemas.objects import State, StateType
from prefect.deployments.flow_runs import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling
from pydantic import BaseModel, ConfigDict

from arr_prefect.clock import Clock, default_clock
from arr_prefect.errors import InvalidInputError
from arr_prefect.models import Session
from arr_prefect.tasks.sessions import run_logger

__all__ = [
    "DEFAULT_JOB",
    "InvalidJobError",
    "JobFailedError",
    "JobSpec",
    "JobTimeoutError",
    "resolve_callable",
    "run_job",
    "session_environment",
    "session_parameters",
    "validate_job",
]

DEFAULT_JOB = "arr_prefect.flows.sample_job:render_frames"
"""The sample job that ships for the demo."""


def job_environment(session: Session, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a command job runs with: ours, minus every ``ARR_*`` setting, plus
    the session's ``ARR_SESSION_*`` details.

    A job needs the session, never the account: the key and the rest of our settings are
    withheld, matched case-insensitively as pydantic-settings reads them.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.upper().startswith("ARR_")}
    env.update(session_environment(session))
    return env


_KILL_GRACE_SECONDS = 10.0


class InvalidJobError(InvalidInputError):
    """The job description cannot run (unknown callable, missing command, bad name...)."""


class JobFailedError(RuntimeError):
    """The job ran and failed (non-zero exit code, failed deployment run, ...)."""

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self),), {"exit_code": self.exit_code})


class JobTimeoutError(JobFailedError, TimeoutError):
    """The job did not finish within its timeout."""


class JobSpec(BaseModel):
    """One job: exactly one of ``callable``, ``command`` or ``deployment``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["callable", "command", "deployment"]
    """Which of the three the job is."""
    target: str | list[str]
    """``"package.module:function"``, the command's argument list, or
    ``"flow-name/deployment-name"``."""
    parameters: dict[str, Any] = {}
    """Keyword arguments for a callable, parameters for a deployment (a command takes none)."""
    timeout_seconds: float | None = None
    """The job's own timeout (None: none; the flow's timeout still applies)."""

    @property
    def label(self) -> str:
        """How logs and the summary name the job: its kind and target."""
        target = " ".join(self.target) if isinstance(self.target, list) else self.target
        return f"{self.kind} {target}"


def session_environment(session: Session) -> dict[str, str]:
    """The ``ARR_SESSION_*`` variables a command job gets (never the account key).

    Args:
        session: The Ready session the job runs on.

    Returns:
        ``ARR_SESSION_ID``, and those of ``ARR_SESSION_HOSTNAME``,
        ``ARR_SESSION_HANDSHAKE_PORT``, ``ARR_SESSION_ARR_INSPECTOR_PORT`` and
        ``ARR_SESSION_SIZE`` that the session has.
    """
    env = {"ARR_SESSION_ID": session.id}
    if session.hostname:
        env["ARR_SESSION_HOSTNAME"] = session.hostname
    if session.handshake_port is not None:
        env["ARR_SESSION_HANDSHAKE_PORT"] = str(session.handshake_port)
    if session.arr_inspector_port is not None:
        env["ARR_SESSION_ARR_INSPECTOR_PORT"] = str(session.arr_inspector_port)
    if session.size is not None:
        env["ARR_SESSION_SIZE"] = session.size.value
    return env


def session_parameters(session: Session) -> dict[str, Any]:
    """The parameters a deployment job's flow run gets (never the account key).

    Args:
        session: The Ready session the job runs on.

    Returns:
        ``session_id``, ``hostname``, ``handshake_port``, ``arr_inspector_port`` and
        ``size`` (None where the session has no such value).
    """
    return {
        "session_id": session.id,
        "hostname": session.hostname,
        "handshake_port": session.handshake_port,
        "arr_inspector_port": session.arr_inspector_port,
        "size": session.size.value if session.size else None,
    }


def resolve_callable(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (or return a callable as is)."""
    if callable(target):
        return target
    module_name, sep, attribute = str(target).partition(":")
    if not sep or not module_name or not attribute:
        raise InvalidJobError(f"job callable {target!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidJobError(
            f"job callable {target!r}: cannot import {module_name!r}: {exc}"
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidJobError(f"job callable {target!r}: {module_name!r} has no {attribute!r}")
    if not callable(obj):
        raise InvalidJobError(f"job callable {target!r} is not callable")
    return obj  # type: ignore[no-any-return]


async def validate_job(job: JobSpec) -> None:
    """Refuse a job that cannot run, before any session exists."""
    if job.timeout_seconds is not None and not job.timeout_seconds > 0:
        raise InvalidJobError(f"job timeout must be positive, got {job.timeout_seconds!r}")
    if job.kind == "callable":
        if not isinstance(job.target, str):
            raise InvalidJobError("a callable job's target is 'package.module:function'")
        resolve_callable(job.target)
    elif job.kind == "command":
        if (
            not isinstance(job.target, list)
            or not job.target
            or not all(isinstance(a, str) and a for a in job.target)
        ):
            raise InvalidJobError(
                f"a command job is a non-empty list of arguments, got {job.target!r}"
            )
        if shutil.which(job.target[0]) is None:
            raise InvalidJobError(f"job command {job.target[0]!r} was not found on PATH")
    else:
        if (
            not isinstance(job.target, str)
            or job.target.count("/") != 1
            or "" in job.target.split("/")
        ):
            raise InvalidJobError(
                f"a deployment job is named 'flow-name/deployment-name', got {job.target!r}"
            )

        try:
            async with get_client() as prefect:
                await prefect.read_deployment_by_name(job.target)
        except ObjectNotFound:
            raise InvalidJobError(f"deployment {job.target!r} does not exist") from None


async def run_job(job: JobSpec, session: Session, clock: Clock | None = None) -> Any:
    """Run the job against the Ready session; raise :class:`JobFailedError` if it fails.

    The timeout is measured on ``clock`` (the process default: real time, or the
    emulator's scaled time under ``ARR_TIME_SCALE``), like every other wait of a run.
    """
    try:
        async with _clock_timeout(job.timeout_seconds, clock or default_clock()):
            if job.kind == "callable":
                assert isinstance(job.target, str)
                return await _run_callable(resolve_callable(job.target), session, job.parameters)
            if job.kind == "command":
                assert isinstance(job.target, list)
                return await _run_command(job.target, session)
            assert isinstance(job.target, str)
            return await _run_deployment(job.target, session, job.parameters)
    except TimeoutError as exc:
        if isinstance(exc, JobFailedError):
            raise
        raise JobTimeoutError(
            f"job {job.label} did not finish within {job.timeout_seconds:.0f}s"
        ) from None


@contextlib.asynccontextmanager
async def _clock_timeout(seconds: float | None, clock: Clock) -> AsyncIterator[None]:
    """``asyncio.timeout(seconds)``, with the seconds counted on ``clock``: a timer task
    sleeps on the clock, then expires the timeout at once. The body sees the cancel, and
    ``TimeoutError`` leaves the block, exactly as with a real-time ``asyncio.timeout``."""
    async with asyncio.timeout(None) as timeout:
        if seconds is None:
            yield
            return
        loop = asyncio.get_running_loop()

        async def expire() -> None:
            await clock.sleep(seconds)
            timeout.reschedule(loop.time())

        timer = asyncio.ensure_future(expire())
        try:
            yield
        finally:
            timer.cancel()


async def _run_callable(
    fn: Callable[..., Any], session: Session, parameters: dict[str, Any]
) -> Any:
    result = fn(session, **parameters)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _run_command(command: list[str], session: Session) -> int:
    logger = run_logger()
    env = job_environment(session)
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown ends its children too
        )
    )
    try:
        process = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        # The command may already run (and have started children) before the spawn returns:
        # a cancel there would only SIGKILL the command itself as asyncio drops it, leaving
        # its children running. Let the spawn finish, then end the whole group.
        with contextlib.suppress(Exception):
            await _terminate(await spawn)
        raise
    logger.info("Job command started (pid %d): %s", process.pid, " ".join(command))
    try:
        assert process.stdout is not None
        async for raw in process.stdout:
            logger.info("job | %s", raw.decode(errors="replace").rstrip())
        code = await process.wait()
    except BaseException:
        await _terminate(process)
        raise
    if code != 0:
        raise JobFailedError(
            f"job command exited with code {code}: {' '.join(command)}", exit_code=code
        )
    return code


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the job's process group, then SIGKILL it after a grace period."""
    if process.returncode is not None:
        return

    with anyio.CancelScope(shield=True):
        for sig, wait in ((signal.SIGTERM, _KILL_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(process.wait(), wait)
                return
            except TimeoutError:
                continue


async def _run_deployment(name: str, session: Session, parameters: dict[str, Any]) -> Any:

    merged = {**parameters, **session_parameters(session)}
    run = await arun_deployment(name=name, parameters=merged, timeout=0)
    logger = run_logger()
    logger.info("Job deployment %s started as flow run %s", name, run.id)
    try:
        async with get_client() as prefect:
            while True:
                run = await prefect.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    break
                await asyncio.sleep(2)
    except BaseException:
        # Teardown is about to stop the session: do not leave the job running against it.
        with anyio.CancelScope(shield=True):
            try:
                await _cancel_job_run(run.id)
            except Exception as exc:  # noqa: BLE001 - best effort; the session stops anyway
                logger.warning("Could not cancel job flow run %s: %s", run.id, exc)
        raise
    if run.state is None or run.state.type != StateType.COMPLETED:
        state = run.state.name if run.state else "unknown"
        raise JobFailedError(f"job deployment {name} ended {state} (flow run {run.id})")
    return str(run.id)


async def _cancel_job_run(run_id: UUID) -> None:
    """Cancel the job's flow run the way the UI does.

    A run a worker has picked up is set Cancelling, and its worker ends the process and
    marks it Cancelled. A run still Scheduled (no worker has it, perhaps none is running)
    has nobody to finish a Cancelling, so it is set Cancelled outright.
    """
    async with get_client() as prefect:
        run = await prefect.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return
        if run.state is None or run.state.type == StateType.SCHEDULED:
            state: State[Any] = Cancelled(message="The session it was to render on was stopped")
        else:
            state = Cancelling()
        await prefect.set_flow_run_state(run_id, state, force=True)
    run_logger().warning("Job flow run %s: %s", run_id, state.name)
