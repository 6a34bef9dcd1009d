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

A create whose session the *service* names (v1) leaves a window: the session exists once
the service has the request, its ID only once the answer is read. So before such a create
is sent the guard is told it is in flight, with the lease it asks for, whose microseconds
are a random fingerprint (``arr_prefect.dialects.v1.fingerprinted_lease``; the service
echoes ``sessionMaxLeaseTime`` to the microsecond), and told again with the ID when the
answer comes (``watch(..., created=key)``). If the pipe closes while a create is in flight,
the guard lists the account's sessions and stops the one it made, and keeps looking (every
``poll_interval``) for as long as one create request may take (``connect_timeout +
request_timeout``) plus :data:`CREATE_LOOK_MARGIN` seconds, since the service may make the
session, or the answer may arrive to nobody, after the guard first looked. A session is
taken for that create's only when all of these hold, so that a session another run owns is
never stopped:

- it is active and its ``sessionMaxLeaseTime`` equals the lease sent, to the microsecond
  (the fingerprint is never 0, so a lease in whole seconds, what other clients send, never
  matches; another create of this project carries its own random fingerprint: 1 in
  999,999 alike, and only while that session keeps the lease it was created with, since
  the lease keeper's first renewal sends a new total made from the lease asked for,
  without the fingerprint);
- its size is the size asked for, and its ID is none the guard was told of;
- it has not been Ready longer than the create has been in flight (the service counts
  ``sessionElapsedTime`` from Ready, so a session Ready since before the request was sent
  cannot pass, whatever its lease; one still Starting, or Ready only briefly, can, and
  only the fingerprint rules it out);
- no other listed session passes too: two candidates mean one may be another run's, and
  the guard then stops neither (and says so); the lease and the reaper end them.

Whether a session is known to another process's guard cannot be checked, and is not. A
create that failed while the process lived (its outcome unknown, say) is looked for once
when the process exits. The guard says on stderr what it looked for and what it did.

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
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from arr_prefect.models import Session, format_timespan, parse_timespan
from arr_prefect.settings import ArrSettings, load_settings

if TYPE_CHECKING:
    from arr_prefect.client import ArrClient

__all__ = ["STOPPED_BY", "SessionGuard", "session_guard"]

STOPPED_BY = "guard"
"""``stopped_by`` of the ``arr.session.stopped`` events the guard emits."""

# How long the guard may spend stopping sessions once its process is gone.
GUARD_STOP_SECONDS = 120.0
CREATE_LOOK_MARGIN = 30.0
"""Real seconds the guard keeps looking for the session of a create in flight when its
process died, past the longest one create request may take (connect plus request
timeout): the service may make the session, and the answer arrive to nobody, after the
guard's first look."""
ELAPSED_SLACK = 2.0
"""Seconds a session may seem to have been Ready longer than its create was in flight
(rounding, and clocks that tick at slightly different rates) and still be that create's."""

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
        created: str | None = None,
    ) -> None:
        """Stop ``session_id`` (with these settings) if this process dies before release;
        its ``arr.session.stopped`` event is then related to this flow run (and its flow
        and deployment). ``created``: the key of the create (:meth:`creating`) that
        answered with this ID, no longer in flight."""
        self._send(
            {
                "watch": session_id,
                "created": created,
                "settings": _settings_values(settings),
                "flow_run_id": flow_run_id,
                "flow_run_name": flow_run_name,
                "flow_id": flow_id,
                "deployment_id": deployment_id,
            }
        )

    def creating(
        self,
        key: str,
        lease: timedelta,
        size: str,
        settings: ArrSettings,
        flow_run_id: str | None,
        *,
        flow_run_name: str | None = None,
        flow_id: str | None = None,
        deployment_id: str | None = None,
    ) -> None:
        """A create the service names the session of is about to be sent, asking for
        ``lease`` (fingerprinted to the microsecond) and ``size``: if this process dies
        before :meth:`watch` is told its ID (``created=key``), the guard finds the session
        by that lease and stops it. Call it *before* the request is sent."""
        self._send(
            {
                "creating": key,
                "lease": format_timespan(lease),
                "size": size,
                # The wall clock: the guard, on the same host, measures how long the
                # create has been in flight with it.
                "sent_at": time.time(),
                "settings": _settings_values(settings),
                "flow_run_id": flow_run_id,
                "flow_run_name": flow_run_name,
                "flow_id": flow_id,
                "deployment_id": deployment_id,
            }
        )

    def create_failed(self, key: str) -> None:
        """The create ``key`` ended without an ID (an error, its outcome unknown): no
        longer in flight, the guard looks once for a session it may have made when this
        process exits."""
        self._send({"create_failed": key})

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


def _settings_values(settings: ArrSettings) -> dict[str, Any]:
    values = settings.model_dump(mode="json")
    if settings.account_key is not None:
        # Through a private pipe to our own child: never argv, env or a file.
        values["account_key"] = settings.account_key.get_secret_value()
    return values


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
    create_key: str | None = None
    """The create in flight that made it, found by its lease (None: a registered session)."""

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

        reason = f"the flow-run process {owner} died"
        if self.create_key is not None:
            reason += " while its create was in flight"
        return session_payload(
            self.session_id,
            size=self.before.size.value if self.before.size else None,
            api_version=self.api_version,
            elapsed_seconds=self.elapsed_seconds,
            price_per_hour=self.price_per_hour,
            currency=self.currency,
            stopped_by=STOPPED_BY,
            reason=reason,
            final_status=self.after.status.value if self.after is not None else None,
            stop_seconds=round(self.stopped - self.asked, 1),
        )


@dataclass(frozen=True)
class _Creating:
    """A create the process had sent, or was about to send, when it died (or that failed
    while it lived: ``settled``), as the guard was told of it."""

    key: str
    lease: timedelta
    """The lease it asked for, with its fingerprint: what its session is recognised by."""
    size: str
    sent_at: float
    """The wall clock just before the request was sent."""
    settled: bool
    """The create ended without an ID while the process lived: one look, no waiting."""
    message: Mapping[str, Any]
    """The registration: settings and the flow run to relate the stop event to."""

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> _Creating:
        """From the ``creating`` message (``settled`` once ``create_failed`` came)."""
        return cls(
            key=str(message["creating"]),
            lease=parse_timespan(str(message["lease"])),
            size=str(message["size"]),
            sent_at=float(message["sent_at"]),
            settled=bool(message.get("settled")),
            message=message,
        )

    @property
    def fingerprint(self) -> str:
        return format_timespan(self.lease)

    def candidates(
        self, sessions: Iterable[Session], known: Collection[str], in_flight: float
    ) -> list[Session]:
        """The listed sessions this create may have made (the module docstring says why
        each test): active, exactly its lease and its size, an ID the guard was not told
        of, and Ready no longer than the create has been in flight (``in_flight``
        seconds, by the service's count)."""
        return [
            s
            for s in sessions
            if s.status.is_active
            and s.max_lease == self.lease
            and (s.size is None or s.size.value == self.size)
            and s.id not in known
            and (s.elapsed is None or s.elapsed.total_seconds() <= in_flight + ELAPSED_SLACK)
        ]


def look_seconds(settings: ArrSettings) -> float:
    """Real seconds the guard looks for the session of a create in flight when its process
    died: as long as one create request may take, plus :data:`CREATE_LOOK_MARGIN`."""
    return settings.connect_timeout + settings.request_timeout + CREATE_LOOK_MARGIN


async def _stop_with(
    arr: ArrClient, session_id: str, create_key: str | None = None
) -> _Stopped | None:
    """Stop the session if still active; what it was, when this call stopped it."""
    from arr_prefect.errors import ArrError, SessionNotFoundError

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
        price_per_hour=arr.settings.price_per_hour(size) if size else None,
        currency=arr.settings.price_currency,
        create_key=create_key,
    )


async def _stop_one(session_id: str, values: dict[str, Any]) -> _Stopped | None:
    """Stop the session if still active; what it was, when this call stopped it."""
    from arr_prefect.client import ArrClient

    settings = load_settings(_env_file=None, **values)
    async with ArrClient(settings) as arr:
        return await _stop_with(arr, session_id)


async def _look_and_stop(
    arr: ArrClient, entry: _Creating, known: Collection[str], *, in_flight: float, look_for: float
) -> _Stopped | None:
    """Look for the session ``entry`` made and stop it.

    Looks at once, then every ``poll_interval`` until ``look_for`` seconds of ``arr``'s
    clock have passed (a create that failed while the process lived: once, since what it
    made exists by now); ``in_flight``: how long (on that clock) the create had been in
    flight at the first look.
    """
    from arr_prefect.errors import ArrError

    if entry.settled:
        look_for = 0.0
    start = arr.clock.time()
    looks = 0
    while True:
        looks += 1
        sessions: list[Session] | None
        try:
            sessions = await arr.list_sessions()
        except ArrError as exc:
            _say(f"could not list sessions to find lease {entry.fingerprint}: {exc}")
            sessions = None
        if sessions is not None:
            waited = arr.clock.time() - start
            found = entry.candidates(sessions, known, in_flight + waited)
            if len(found) > 1:
                ids = ", ".join(sorted(s.id for s in found))
                _say(
                    f"{len(found)} sessions carry lease {entry.fingerprint} ({ids}): one may be"
                    " another run's, so stopping neither; their leases and the reaper end them"
                )
                return None
            if found:
                session_id = found[0].id
                stopped = await _stop_with(arr, session_id, entry.key)
                what = "stopped it" if stopped is not None else "it was over already"
                _say(
                    f"found session {session_id} by its lease {entry.fingerprint} at look"
                    f" {looks} ({_real(arr, waited):.1f} s after looking began); {what}"
                )
                return stopped
        waited = arr.clock.time() - start
        if waited >= look_for:
            _say(
                f"no session with lease {entry.fingerprint} ({looks} looks in"
                f" {_real(arr, waited):.0f} s):"
                " that create made none, or one the service's lease and the reaper must end"
            )
            return None
        await arr.clock.sleep(min(arr.settings.poll_interval, look_for - waited))


def _real(arr: ArrClient, seconds: float) -> float:
    """``seconds`` of the client's clock in real seconds (an emulator's may run faster)."""
    return seconds / arr.settings.time_scale


async def _stop_created(entry: _Creating, known: Collection[str]) -> _Stopped | None:
    """Find and stop the session a create in flight (or failed) made, if it made one."""
    from arr_prefect.client import ArrClient

    settings = load_settings(_env_file=None, **entry.message["settings"])
    scale = settings.time_scale  # the process clock's, in emulated seconds per real one
    async with ArrClient(settings) as arr:
        return await _look_and_stop(
            arr,
            entry,
            known,
            in_flight=(time.time() - entry.sent_at) * scale,
            look_for=look_seconds(settings) * scale,
        )


async def _stop_all(
    watched: dict[str, dict[str, Any]],
    creating: Iterable[_Creating] = (),
    known: Collection[str] = (),
) -> list[_Stopped]:
    """Stop every registered session, and the sessions of the creates in flight."""

    async def one(session_id: str, message: dict[str, Any]) -> _Stopped | None:
        try:
            async with asyncio.timeout(GUARD_STOP_SECONDS):
                return await _stop_one(session_id, message["settings"])
        except TimeoutError:
            _say(f"gave up stopping session {session_id} after {GUARD_STOP_SECONDS:.0f} s")
        except Exception as exc:  # noqa: BLE001 - one failure must not spare the others
            _say(f"could not stop session {session_id}: {exc}")
        return None

    async def made(entry: _Creating) -> _Stopped | None:
        settings = load_settings(_env_file=None, **entry.message["settings"])
        bound = (0.0 if entry.settled else look_seconds(settings)) + GUARD_STOP_SECONDS
        try:
            async with asyncio.timeout(bound):
                return await _stop_created(entry, known)
        except TimeoutError:
            _say(f"gave up looking for lease {entry.fingerprint} after {bound:.0f} s")
        except Exception as exc:  # noqa: BLE001 - one failure must not spare the others
            _say(f"could not look for lease {entry.fingerprint}: {exc}")
        return None

    done = await asyncio.gather(
        *(one(s, m) for s, m in watched.items()), *(made(e) for e in creating)
    )
    return [s for s in done if s is not None]


def _announce(
    stopped: list[_Stopped], watched: Mapping[str, Mapping[str, Any]], owner: str
) -> None:
    """Emit ``arr.session.stopped`` (stopped_by guard) for each session a flow run owned,
    with the session events' payload and related resources (:mod:`arr_prefect.flows.events`);
    ``watched``: each session's registration, by ID."""
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


def _read_registrations(
    lines: Iterable[bytes],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], set[str]]:
    """Read the pipe to its end: the sessions still registered, the creates not answered
    (in flight, or failed: ``settled``), and every session ID the process named."""
    watched: dict[str, dict[str, Any]] = {}
    creating: dict[str, dict[str, Any]] = {}
    known: set[str] = set()
    for raw in lines:  # end-of-file: the flow-run process is gone
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if "watch" in message:
            session_id = str(message["watch"])
            watched[session_id] = message
            known.add(session_id)
            if message.get("created") is not None:
                creating.pop(str(message["created"]), None)
        elif "release" in message:
            watched.pop(str(message["release"]), None)
        elif "creating" in message:
            creating[str(message["creating"])] = message
        elif "create_failed" in message:
            failed = creating.get(str(message["create_failed"]))
            if failed is not None:
                failed["settled"] = True
    return watched, creating, known


def main(argv: list[str] | None = None) -> int:
    """Run the guard: read registrations until end-of-file, then stop what is left."""
    args = sys.argv[1:] if argv is None else argv
    owner = args[0] if args else "?"
    # Import now, while the owner lives, so that stopping takes no import time.
    import arr_prefect.client  # noqa: F401

    watched, creating, known = _read_registrations(sys.stdin.buffer)
    if not watched and not creating:
        return 0
    if watched:
        _say(f"process {owner} is gone; stopping its sessions {', '.join(sorted(watched))}")
    entries: list[_Creating] = []
    for message in creating.values():
        try:
            entry = _Creating.of(message)
        except (KeyError, TypeError, ValueError) as exc:
            _say(f"ignoring an unreadable create registration: {exc!r}")
            continue
        entries.append(entry)
        if entry.settled:
            _say(
                f"process {owner} is gone; a create of it failed: looking once for a session"
                f" with its lease {entry.fingerprint}"
            )
        else:
            seconds = look_seconds(load_settings(_env_file=None, **entry.message["settings"]))
            _say(
                f"process {owner} died while a create was in flight: looking for the session"
                f" with its lease {entry.fingerprint} ({entry.size}) for up to {seconds:.0f} s"
            )
    stopped = asyncio.run(_stop_all(watched, entries, known))
    for session in stopped:
        _say(f"stopped session {session.session_id} of dead process {owner}")
    registrations: dict[str, Mapping[str, Any]] = dict(watched)
    for session in stopped:
        if session.create_key is not None:
            registrations[session.session_id] = creating[session.create_key]
    _announce(stopped, registrations, owner)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
