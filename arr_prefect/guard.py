"""The session guard: no session outlives the flow-run process that owns it, even a SIGKILL.

A process killed by a signal it cannot catch (SIGKILL: the OOM killer, a drained node,
``kill -9``) runs no ``finally``. Prefect 3.9's process worker notices at once (it waits on
the process), reports the run Crashed and runs the ``on_crashed`` hooks, but in a *new*
Python process that must import Prefect and the flow first (``WorkspaceHookRunner``): 5 to
15 s on a busy host, and only if a worker is there to notice. Until then the session is
billed, and a short rolling lease may run out first.

The guard is a small helper process the flow-run process starts at its first session. It
reads a pipe whose only writer is the flow-run process; the kernel closes that end when
the process dies, however it dies, so the guard sees end-of-file at once and stops every
session still registered with it (looked up first: only what is still active), then
emits ``arr.session.stopped`` with ``stopped_by: guard`` and the payload every session
event carries (size, API version, elapsed and billed time, estimated cost, from the
session's properties as the service gives them after the stop), related to the flow run,
flow and deployment the flow-run process registered it with. ``rendering_session`` registers
a session as soon as its ID is known and releases it once teardown has stopped it, so
after a normal end the guard has nothing to do; a session whose stop failed stays
registered and is tried once more when the process exits.

This module imports no Prefect (the guard starts in well under a second); the guard
imports it (``arr_prefect.flows.events``) only after the sessions are stopped, to say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

from arr_prefect.models import Session
from arr_prefect.settings import ArrSettings, load_settings

__all__ = ["STOPPED_BY", "SessionGuard", "session_guard"]

STOPPED_BY = "guard"
"""``stopped_by`` of the ``arr.session.stopped`` events the guard emits."""

# How long the guard may spend stopping sessions once its process is gone.
GUARD_STOP_SECONDS = 120.0

logger = logging.getLogger("arr_prefect.guard")


class SessionGuard:
    """The flow-run side of the guard: register sessions to stop if this process dies."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._lock = threading.Lock()
        self._broken = False

    @classmethod
    def start(cls) -> SessionGuard:
        """Start a guard process watching this one."""
        process = subprocess.Popen(
            [sys.executable, "-m", "arr_prefect.guard", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            # Its own session: a signal to the flow run's process group (Prefect's cancel,
            # Ctrl-C) must not end the guard along with the process it guards.
            start_new_session=True,
        )
        return cls(process)

    @property
    def alive(self) -> bool:
        return not self._broken and self.process.poll() is None

    def watch(
        self,
        session_id: str,
        settings: ArrSettings,
        flow_run_id: str | None,
        *,
        flow_run_name: str | None = None,
        flow_id: str | None = None,
        deployment_id: str | None = None,
    ) -> None:
        """Stop ``session_id`` (with these settings) if this process dies before release;
        its ``arr.session.stopped`` event is then related to this flow run (and its flow
        and deployment)."""
        values = settings.model_dump(mode="json")
        if settings.account_key is not None:
            # Through a private pipe to our own child: never argv, env or a file.
            values["account_key"] = settings.account_key.get_secret_value()
        self._send(
            {
                "watch": session_id,
                "settings": values,
                "flow_run_id": flow_run_id,
                "flow_run_name": flow_run_name,
                "flow_id": flow_id,
                "deployment_id": deployment_id,
            }
        )

    def release(self, session_id: str) -> None:
        """Teardown stopped ``session_id``: the guard forgets it."""
        self._send({"release": session_id})

    def close(self) -> None:
        """Close the pipe (the guard then stops whatever is still registered) and reap it."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()

    def _send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message).encode() + b"\n"
        with self._lock:
            if self._broken or self.process.stdin is None:
                return
            try:
                self.process.stdin.write(line)
                self.process.stdin.flush()
            except OSError as exc:
                self._broken = True
                logger.warning(
                    "The session guard (pid %d) is gone (%s): a SIGKILL of this process now"
                    " leaves its session to the crash hook, the lease and the reaper",
                    self.process.pid,
                    exc,
                )


_guard: SessionGuard | None = None
_guard_lock = threading.Lock()


def session_guard() -> SessionGuard | None:
    """This process's guard, started on first use; None if it cannot be started."""
    global _guard
    with _guard_lock:
        if _guard is None or not _guard.alive:
            try:
                _guard = SessionGuard.start()
            except OSError as exc:
                logger.warning("Could not start the session guard: %s", exc)
                return None
        return _guard


# --------------------------------------------------------------------- the guard process


def _say(text: str) -> None:
    # stderr's reader (the worker) may be gone along with the process.
    with contextlib.suppress(OSError, ValueError):
        print(f"arr session guard: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Stopped:
    """A session the guard stopped, and what the service said of it."""

    session_id: str
    before: Session
    """As read just before the stop."""
    after: Session | None
    """As read after the stop (its final properties), if that read succeeded."""
    asked: float
    """The guard's clock when it looked the session up."""
    stopped: float
    """The guard's clock once the service accepted the stop."""
    api_version: str
    price_per_hour: float | None
    currency: str

    @property
    def elapsed_seconds(self) -> float | None:
        """How long the session ran: since its create request where the guard can tell
        (its clock against the service's creation time, as the hooks count), and never
        less than the service's own count of its time Ready (all a v1 session says, and
        all that compares when the guard's clock is an emulator's scaled one)."""
        ready: float | None = None
        if self.after is not None and self.after.elapsed is not None:
            ready = self.after.elapsed.total_seconds()
        elif self.before.elapsed is not None:
            ready = self.before.elapsed.total_seconds() + (self.stopped - self.asked)
        created = self.before.created_at
        since_create = self.stopped - created.timestamp() if created is not None else None
        known = [s for s in (ready, since_create) if s is not None]
        return max(known) if known else None

    def payload(self, owner: str) -> dict[str, Any]:
        """The ``arr.session.stopped`` payload (flows.events' schema: imports Prefect)."""
        from arr_prefect.flows.events import session_payload

        return session_payload(
            self.session_id,
            size=self.before.size.value if self.before.size else None,
            api_version=self.api_version,
            elapsed_seconds=self.elapsed_seconds,
            price_per_hour=self.price_per_hour,
            currency=self.currency,
            stopped_by=STOPPED_BY,
            reason=f"the flow-run process {owner} died",
            final_status=self.after.status.value if self.after is not None else None,
            stop_seconds=round(self.stopped - self.asked, 1),
        )


async def _stop_one(session_id: str, values: dict[str, Any]) -> _Stopped | None:
    """Stop the session if still active; what it was, when this call stopped it."""
    from arr_prefect.client import ArrClient
    from arr_prefect.errors import ArrError, SessionNotFoundError

    settings = load_settings(_env_file=None, **values)
    async with ArrClient(settings) as arr:
        asked = arr.clock.time()
        try:
            before = await arr.get_session(session_id)
        except SessionNotFoundError:
            return None
        if not before.status.is_active:
            return None
        if not await arr.stop_session(session_id):
            return None
        stopped = arr.clock.time()
        try:
            # The final properties, for the event only: the stop is done.
            after: Session | None = await arr.get_session(session_id)
        except ArrError:
            after = None
        size = before.size.value if before.size else None
        return _Stopped(
            session_id=session_id,
            before=before,
            after=after,
            asked=asked,
            stopped=stopped,
            api_version=arr.api_version,
            price_per_hour=settings.price_per_hour(size) if size else None,
            currency=settings.price_currency,
        )


async def _stop_all(watched: dict[str, dict[str, Any]]) -> list[_Stopped]:
    async def one(session_id: str, message: dict[str, Any]) -> _Stopped | None:
        try:
            return await _stop_one(session_id, message["settings"])
        except Exception as exc:  # noqa: BLE001 - one failure must not spare the others
            _say(f"could not stop session {session_id}: {exc}")
        return None

    try:
        async with asyncio.timeout(GUARD_STOP_SECONDS):
            done = await asyncio.gather(*(one(s, m) for s, m in watched.items()))
    except TimeoutError:
        _say(f"gave up stopping sessions after {GUARD_STOP_SECONDS:.0f} s")
        return []
    return [s for s in done if s is not None]


def _announce(stopped: list[_Stopped], watched: dict[str, dict[str, Any]], owner: str) -> None:
    """Emit ``arr.session.stopped`` (stopped_by guard) for each session a flow run owned,
    with the session events' payload and related resources (:mod:`arr_prefect.flows.events`)."""
    owned = [s for s in stopped if watched[s.session_id].get("flow_run_id")]
    if not owned:
        return
    try:
        from prefect.events.worker import EventsWorker

        from arr_prefect.flows.events import RunRef, emit_session_event

        for session in owned:
            message = watched[session.session_id]
            run = RunRef(
                flow_run_id=str(message["flow_run_id"]),
                flow_run_name=message.get("flow_run_name"),
                flow_id=message.get("flow_id"),
                deployment_id=message.get("deployment_id"),
            )
            emit_session_event(
                "arr.session.stopped", session.session_id, run, session.payload(owner)
            )
        EventsWorker.drain_all(timeout=30)
    except Exception as exc:  # noqa: BLE001 - the sessions are stopped; the event is a note
        _say(f"could not emit arr.session.stopped: {exc}")


def main(argv: list[str] | None = None) -> int:
    """Run the guard: read registrations until end-of-file, then stop what is left."""
    args = sys.argv[1:] if argv is None else argv
    owner = args[0] if args else "?"
    # Import now, while the owner lives, so that stopping takes no import time.
    import arr_prefect.client  # noqa: F401

    watched: dict[str, dict[str, Any]] = {}
    for raw in sys.stdin.buffer:  # end-of-file: the flow-run process is gone
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if "watch" in message:
            watched[str(message["watch"])] = message
        elif "release" in message:
            watched.pop(str(message["release"]), None)
    if not watched:
        return 0
    _say(f"process {owner} is gone; stopping its sessions {', '.join(sorted(watched))}")
    stopped = asyncio.run(_stop_all(watched))
    for session in stopped:
        _say(f"stopped session {session.session_id} of dead process {owner}")
    _announce(stopped, watched, owner)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
