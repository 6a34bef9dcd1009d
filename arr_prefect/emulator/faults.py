"""Fault injection: scripted (exact, first-come) and random (seeded, reproducible).

Two phases of a request can fail:

- **request** faults hit before the request is handled: ``throttle`` (429 with
  ``Retry-After``), ``server_error`` (500/502/503), ``slow`` (the answer is delayed on the
  emulator's clock), ``drop`` (the connection breaks mid-response).
- **create** faults hit only a create that really makes a new session: ``lost_create``
  (the session is made, then the connection breaks before the answer: v1 create is not
  idempotent, so a blind retry makes a second session), ``slow_create`` (the session is
  made, and listed, at once; the answer that names it is held ``seconds`` on the
  emulator's clock, as from a busy front end: a client killed, or timing out, meanwhile
  never learns the ID of a session that is running and billed), ``session_error`` (the
  session ends in Error when start-up completes), ``no_capacity`` (it goes to Error at
  once, as when the region has no free VM of that size).

Scripted faults are consumed in the order they were added; a fault with ``route=None``
matches any session API route (``v1.*``, ``v2021.*``) but not the STS or the admin API,
which must be named (``route="sts.token"``; ``route`` may be an fnmatch pattern such as
``"v1.*"``). Random faults apply to every route but the admin API (``/_emulator/``);
with the same seed and the same sequence of requests they fall on the same requests.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

__all__ = [
    "CREATE_FAULTS",
    "REQUEST_FAULTS",
    "AppliedFault",
    "FaultAction",
    "FaultController",
    "FaultKind",
    "RandomFaults",
    "ScriptedFault",
]

FaultKind = Literal[
    "throttle",
    "server_error",
    "slow",
    "drop",
    "lost_create",
    "slow_create",
    "session_error",
    "no_capacity",
]
REQUEST_FAULTS: frozenset[str] = frozenset({"throttle", "server_error", "slow", "drop"})
CREATE_FAULTS: frozenset[str] = frozenset(
    {"lost_create", "slow_create", "session_error", "no_capacity"}
)
CREATE_ROUTES = frozenset({"v1.create", "v2021.create"})
SERVER_ERROR_STATUSES = (500, 502, 503)
DEFAULT_FAILURE_REASON = "an injected start-up failure."
MAX_FAULT_SECONDS = 86400.0
"""The longest injected delay (a day; also refuses infinity, which would hang a request)."""
MAX_FAULT_TEXT = 1024
"""The longest route pattern, session id or reason a scripted fault may carry."""


def _is_session_route(route: str) -> bool:
    return route.startswith(("v1.", "v2021."))


def _check_types(*fields: tuple[str, object, type | tuple[type, ...]]) -> None:
    """Refuse a field of the wrong JSON type now, not as a 500 on a later request."""
    for name, value, expected in fields:
        if isinstance(value, bool) or not isinstance(value, expected):
            raise TypeError(f"{name} has the wrong type: {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_FAULT_TEXT:
            raise ValueError(f"{name} is longer than {MAX_FAULT_TEXT} characters")


@dataclass(frozen=True)
class FaultAction:
    """A fault chosen for one request: what to do, with which parameters."""

    kind: FaultKind
    retry_after: int = 1
    status: int = 503
    seconds: float = 5.0
    reason: str = DEFAULT_FAILURE_REASON
    source: Literal["scripted", "random"] = "scripted"


@dataclass
class ScriptedFault:
    """A fault to inject into the next ``times`` matching requests (after ``skip`` more)."""

    kind: FaultKind
    route: str | None = None
    session_id: str | None = None
    times: int = 1
    skip: int = 0
    retry_after: int = 1
    status: int = 503
    seconds: float = 5.0
    reason: str = DEFAULT_FAILURE_REASON

    def matches(self, route: str, session_id: str | None) -> bool:
        if self.route is None:
            if not _is_session_route(route):
                return False
        elif not fnmatch.fnmatchcase(route, self.route):
            return False
        if self.kind in CREATE_FAULTS and route not in CREATE_ROUTES:
            return False
        return self.session_id is None or self.session_id == session_id

    def action(self) -> FaultAction:
        return FaultAction(
            kind=self.kind,
            retry_after=self.retry_after,
            status=self.status,
            seconds=self.seconds,
            reason=self.reason,
        )


@dataclass
class RandomFaults:
    """Per-request probabilities of each fault kind (request kinds must sum to <= 1)."""

    p_throttle: float = 0.0
    p_server_error: float = 0.0
    p_slow: float = 0.0
    p_drop: float = 0.0
    p_lost_create: float = 0.0
    p_session_error: float = 0.0
    retry_after: int = 1
    slow_seconds: float = 5.0
    seed: int | None = None

    def validate(self) -> None:
        probabilities = {
            name: value for name, value in asdict(self).items() if name.startswith("p_")
        }
        for name, value in probabilities.items():
            _check_types((name, value, (int, float)))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.p_throttle + self.p_server_error + self.p_slow + self.p_drop > 1.0:
            raise ValueError("p_throttle + p_server_error + p_slow + p_drop must not exceed 1")
        if self.p_lost_create + self.p_session_error > 1.0:
            raise ValueError("p_lost_create + p_session_error must not exceed 1")
        _check_types(
            ("retry_after", self.retry_after, int),
            ("slow_seconds", self.slow_seconds, (int, float)),
            ("seed", self.seed, (int, type(None))),
        )
        if self.retry_after < 0 or not 0 <= self.slow_seconds <= MAX_FAULT_SECONDS:
            raise ValueError(
                "retry_after must not be negative and slow_seconds between 0 and"
                f" {MAX_FAULT_SECONDS}"
            )

    @property
    def enabled(self) -> bool:
        # Asked on every request: read the fields, not dataclasses.asdict (a deep copy).
        return (
            self.p_throttle > 0
            or self.p_server_error > 0
            or self.p_slow > 0
            or self.p_drop > 0
            or self.p_lost_create > 0
            or self.p_session_error > 0
        )


@dataclass(frozen=True)
class AppliedFault:
    """A record of one injected fault, for tests and the admin API."""

    route: str
    session_id: str | None
    action: FaultAction


class FaultController:
    """Holds scripted and random faults and decides, per request, which one applies.

    Thread-safe: the uvicorn thread and a test thread may use it at once.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._scripted: list[ScriptedFault] = []
        self._random = RandomFaults(seed=seed)
        self._rng = random.Random(seed)
        self.applied: list[AppliedFault] = []
        """Every fault injected so far, in order."""

    def add(
        self,
        kind: FaultKind | str,
        route: str | None = None,
        *,
        times: int = 1,
        session_id: str | None = None,
        skip: int = 0,
        retry_after: int = 1,
        status: int = 503,
        seconds: float = 5.0,
        reason: str = DEFAULT_FAILURE_REASON,
    ) -> ScriptedFault:
        """Inject ``kind`` into the next ``times`` requests matching ``route``/``session_id``.

        ``skip`` lets that many matching requests through first. ``retry_after``
        (throttle, whole seconds), ``status`` (server_error: 500, 502 or 503),
        ``seconds`` (slow, slow_create: emulated seconds) and ``reason`` (session_error)
        parameterise the fault.
        """
        _check_types(
            ("route", route, (str, type(None))),
            ("session_id", session_id, (str, type(None))),
            ("times", times, int),
            ("skip", skip, int),
            ("retry_after", retry_after, int),
            ("status", status, int),
            ("seconds", seconds, (int, float)),
            ("reason", reason, str),
        )
        if kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {kind!r}: expected one of {get_args(FaultKind)}")
        if times < 1 or skip < 0:
            raise ValueError("times must be at least 1 and skip not negative")
        if kind == "server_error" and not 500 <= status <= 599:
            raise ValueError(f"a server_error status must be 5xx, got {status!r}")
        if retry_after < 0 or not 0 <= seconds <= MAX_FAULT_SECONDS:
            raise ValueError(
                f"retry_after must not be negative and seconds between 0 and {MAX_FAULT_SECONDS}"
            )
        fault = ScriptedFault(
            kind=cast(FaultKind, kind),
            route=route,
            session_id=session_id,
            times=times,
            skip=skip,
            retry_after=retry_after,
            status=status,
            seconds=seconds,
            reason=reason,
        )
        with self._lock:
            self._scripted.append(fault)
        return fault

    def set_random(
        self,
        *,
        p_throttle: float = 0.0,
        p_server_error: float = 0.0,
        p_slow: float = 0.0,
        p_drop: float = 0.0,
        p_lost_create: float = 0.0,
        p_session_error: float = 0.0,
        retry_after: int = 1,
        slow_seconds: float = 5.0,
        seed: int | None = None,
    ) -> RandomFaults:
        """Replace the random fault probabilities; ``seed`` (if given) restarts the RNG."""
        config = RandomFaults(
            p_throttle=p_throttle,
            p_server_error=p_server_error,
            p_slow=p_slow,
            p_drop=p_drop,
            p_lost_create=p_lost_create,
            p_session_error=p_session_error,
            retry_after=retry_after,
            slow_seconds=slow_seconds,
            seed=seed if seed is not None else self._random.seed,
        )
        config.validate()
        with self._lock:
            self._random = config
            if seed is not None:
                self._rng = random.Random(seed)
        return config

    def clear(self) -> None:
        """Remove every scripted fault and turn random faults off."""
        with self._lock:
            self._scripted.clear()
            self._random = RandomFaults(seed=self._random.seed)

    def pending(self) -> list[ScriptedFault]:
        """Scripted faults not yet used up, in the order they will be considered."""
        with self._lock:
            return list(self._scripted)

    def config(self) -> dict[str, Any]:
        """The current configuration as JSON (the admin API's ``GET /_emulator/faults``)."""
        with self._lock:
            return {
                "scripted": [asdict(f) for f in self._scripted],
                "random": asdict(self._random),
                "applied": len(self.applied),
            }

    def take_request_fault(self, route: str, session_id: str | None) -> FaultAction | None:
        """The request-phase fault (throttle, server_error, slow, drop) for this request."""
        return self._take(route, session_id, REQUEST_FAULTS)

    def take_create_fault(self, route: str, session_id: str | None) -> FaultAction | None:
        """The create-phase fault for a create that is about to make a new session."""
        if route not in CREATE_ROUTES:
            return None
        return self._take(route, session_id, CREATE_FAULTS)

    def _take(
        self, route: str, session_id: str | None, kinds: frozenset[str]
    ) -> FaultAction | None:
        if route.startswith("admin."):
            return None
        with self._lock:
            action = self._take_scripted(route, session_id, kinds)
            if action is None:
                action = self._draw_random(kinds)
            if action is not None:
                self.applied.append(AppliedFault(route, session_id, action))
            return action

    def _take_scripted(
        self, route: str, session_id: str | None, kinds: frozenset[str]
    ) -> FaultAction | None:
        for fault in self._scripted:
            if fault.kind not in kinds or not fault.matches(route, session_id):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._scripted.remove(fault)
            return fault.action()
        return None

    def _draw_random(self, kinds: frozenset[str]) -> FaultAction | None:
        config = self._random
        if not config.enabled:
            return None
        # One draw per phase per request, so the sequence of faults depends only on the
        # seed and the sequence of requests.
        if kinds is REQUEST_FAULTS:
            table: list[tuple[FaultKind, float]] = [
                ("throttle", config.p_throttle),
                ("server_error", config.p_server_error),
                ("slow", config.p_slow),
                ("drop", config.p_drop),
            ]
        else:
            table = [
                ("lost_create", config.p_lost_create),
                ("session_error", config.p_session_error),
            ]
        draw = self._rng.random()
        threshold = 0.0
        for kind, probability in table:
            threshold += probability
            if draw < threshold:
                return FaultAction(
                    kind=kind,
                    retry_after=config.retry_after,
                    status=self._rng.choice(SERVER_ERROR_STATUSES),
                    seconds=config.slow_seconds,
                    source="random",
                )
        return None
