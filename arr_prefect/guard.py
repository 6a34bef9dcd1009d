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
emits ``arr.session.stopped`` with ``stopped_by: guard``. ``rendering_session`` registers
a session as soon as its ID is known and releases it once teardown has stopped it, so
after a normal end the guard has nothing to do; a session whose stop failed stays
registered and is tried once more when the process exits.

This module imports no Prefect (the guard starts in well under a second); the guard
imports ``prefect.events`` only after the sessions are stopped, to say so.
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
from typing import Any

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

    def watch(self, session_id: str, settings: ArrSettings, flow_run_id: str | None) -> None:
        """Stop ``session_id`` (with these settings) if this process dies before release."""
        values = settings.model_dump(mode="json")
        if settings.account_key is not None:
            # Through a private pipe to our own child: never argv, env or a file.
            values["account_key"] = settings.account_key.get_secret_value()
        self._send({"watch": session_id, "settings": values, "flow_run_id": flow_run_id})

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


async def _stop_one(session_id: str, values: dict[str, Any]) -> bool:
    """Stop the session if still active; True when this call stopped it."""
    from arr_prefect.client import ArrClient
    from arr_prefect.errors import SessionNotFoundError

    async with ArrClient(load_settings(_env_file=None, **values)) as arr:
        try:
            if not (await arr.get_session(session_id)).status.is_active:
                return False
        except SessionNotFoundError:
            return False
        return await arr.stop_session(session_id)


async def _stop_all(watched: dict[str, dict[str, Any]]) -> list[str]:
    async def one(session_id: str, message: dict[str, Any]) -> str | None:
        try:
            if await _stop_one(session_id, message["settings"]):
                return session_id
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


def _announce(stopped: list[str], watched: dict[str, dict[str, Any]]) -> None:
    """Emit ``arr.session.stopped`` (stopped_by guard) for each session a flow run owned."""
    stopped = [s for s in stopped if watched[s].get("flow_run_id")]
    if not stopped:
        return
    try:
        from prefect.events import emit_event
        from prefect.events.worker import EventsWorker

        for session_id in stopped:
            flow_run_id = watched[session_id]["flow_run_id"]
            emit_event(
                "arr.session.stopped",
                resource={
                    "prefect.resource.id": f"arr.session.{session_id}",
                    "arr.session.id": session_id,
                },
                related=[
                    {
                        "prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                        "prefect.resource.role": "flow-run",
                    }
                ],
                payload={"stopped_by": STOPPED_BY},
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
    for session_id in stopped:
        _say(f"stopped session {session_id} of dead process {owner}")
    _announce(stopped, watched)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
