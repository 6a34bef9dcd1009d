"""Prefect events about ARR sessions: a documented schema that Automations can rely on.

Every session event has

- **resource** ``arr.session.<session id>``, with the labels ``prefect.resource.name``
  and ``arr.session.id`` (the session's ID), ``arr.session.size`` (``standard`` or
  ``premium``) and ``arr.api-version`` (``v1`` or ``2021-01-01``);
- **related** the flow run that owns the session (role ``flow-run``) and, when known, its
  flow (role ``flow``) and deployment (role ``deployment``), whichever process emits it;
- **payload** ``session_id``, ``size``, ``api_version``, ``elapsed_seconds`` (since the
  create request), ``billed_minutes`` (every minute started since the create request, as
  the service billed), ``estimated_cost`` and ``currency`` (null without a configured
  price), and the fields named below. A field with no value is null, never an empty
  string (an Automation's filter can test for it one way).

Events, when each is emitted, and their extra payload fields:

- ``arr.session.created``: the create request was accepted (2021-01-01: the ID is chosen
  just before it is sent). ``lease_seconds``.
- ``arr.session.ready``: the session is Ready. ``time_to_ready_seconds`` (from the create
  request), ``hostname``.
- ``arr.session.lease-renewed``: the rolling lease was renewed. ``lease_seconds``,
  ``renewals``.
- ``arr.session.stopped``: we stopped it. ``stopped_by`` (``finally``,
  ``hook:<flow-run state>`` when a Prefect hook did, or ``guard`` when the session guard
  did, the flow-run process having died), ``reason`` (why it ended, if not finished
  normally), ``final_status``, ``stop_seconds``.
- ``arr.session.failed``: the service ended it in Error. ``reason`` (the service's
  message).
- ``arr.session.expired``: its lease ran out. ``reason``.
- ``arr.session.quota-wait``: a run waits for a slot of the account's session quota
  (emitted when the wait starts, every 30 s while it lasts, and when it ends).
  ``limit``, ``waited_seconds``, ``phase`` (``waiting``, ``still waiting``, ``acquired``,
  ``gave up``), ``limit_size`` and ``in_use`` (the limit's slots, and those taken, when
  the wait began).

The orphan reaper (``reap-orphaned-sessions``) emits ``arr.reaper.stopped`` (and, in a
dry run, ``arr.reaper.would-stop``) about the same ``arr.session.<id>`` resource, with
``reason`` and ``dry_run``.

``arr.session.quota-wait`` is about a session not created yet: its resource is
``arr.quota.<limit name>`` (labels ``arr.quota.limit``, ``arr.session.size``,
``arr.api-version``) and its payload has no session fields.

Emitting is never fatal: an event that cannot be sent is logged at debug level and the
run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.events import emit_event
from prefect.logging import get_logger

from arr_prefect.units import billed_minutes, estimated_cost, round_seconds

__all__ = [
    "SESSION_EVENTS",
    "RunRef",
    "current_run",
    "emit_quota_wait",
    "emit_session_event",
    "run_of",
    "session_payload",
]

SESSION_EVENTS: dict[str, str] = {
    "arr.session.created": "the create request was accepted",
    "arr.session.ready": "the session is Ready",
    "arr.session.lease-renewed": "the rolling lease was renewed",
    "arr.session.stopped": "we stopped the session",
    "arr.session.failed": "the service ended the session in Error",
    "arr.session.expired": "the session's lease ran out",
    "arr.session.quota-wait": "a run waits for a slot of the account's session quota",
    "arr.reaper.stopped": "the orphan reaper stopped a session whose owner is over or gone",
    "arr.reaper.would-stop": "the orphan reaper, in a dry run, would have stopped a session",
}
"""Every event this project emits, with when."""


@dataclass(frozen=True)
class RunRef:
    """The flow run (and its flow and deployment) an event is related to."""

    flow_run_id: str
    flow_run_name: str | None = None
    flow_id: str | None = None
    deployment_id: str | None = None

    def related(self) -> list[dict[str, str]]:
        resources = [
            {
                "prefect.resource.id": f"prefect.flow-run.{self.flow_run_id}",
                "prefect.resource.role": "flow-run",
                **({"prefect.resource.name": self.flow_run_name} if self.flow_run_name else {}),
            }
        ]
        if self.flow_id:
            resources.append(
                {
                    "prefect.resource.id": f"prefect.flow.{self.flow_id}",
                    "prefect.resource.role": "flow",
                }
            )
        if self.deployment_id:
            resources.append(
                {
                    "prefect.resource.id": f"prefect.deployment.{self.deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            )
        return resources


def run_of(flow_run: FlowRun) -> RunRef:
    """The reference to a flow run object (as hooks receive it)."""
    return RunRef(
        flow_run_id=str(flow_run.id),
        flow_run_name=flow_run.name,
        flow_id=str(flow_run.flow_id) if flow_run.flow_id else None,
        deployment_id=str(flow_run.deployment_id) if flow_run.deployment_id else None,
    )


def current_run() -> RunRef | None:
    """The flow run this code runs in, if any."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    return run_of(context.flow_run)


def session_payload(
    session_id: str,
    *,
    size: str | None,
    api_version: str | None,
    elapsed_seconds: float | None,
    price_per_hour: float | None = None,
    currency: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The payload every session event carries, plus ``extra``.

    Args:
        session_id: The session's ID.
        size: ``standard`` or ``premium`` (any case; sent lower case), if known.
        api_version: ``v1`` or ``2021-01-01``, if known.
        elapsed_seconds: Seconds since the create request, if known.
        price_per_hour: The size's configured price, for ``estimated_cost``.
        currency: The price's currency, sent only with a cost.
        **extra: The event's own fields; an empty string among them is sent as null.

    Returns:
        The payload, ready for :func:`emit_session_event`.
    """
    minutes = billed_minutes(elapsed_seconds)
    cost = estimated_cost(minutes, price_per_hour)
    return {
        "session_id": session_id,
        "size": size.lower() if size else None,
        "api_version": api_version,
        "elapsed_seconds": round_seconds(elapsed_seconds),
        "billed_minutes": minutes,
        "estimated_cost": cost,
        "currency": currency if cost is not None else None,
        **{name: None if value == "" else value for name, value in extra.items()},
    }


def _resolve(run: RunRef | str | None) -> RunRef | None:
    if isinstance(run, str):
        current = current_run()
        return current if current is not None and current.flow_run_id == run else RunRef(run)
    return run


def emit_session_event(
    event: str,
    session_id: str,
    run: RunRef | str | None,
    payload: dict[str, Any],
) -> None:
    """Emit a session event related to ``run`` (a :class:`RunRef` or a flow-run ID).

    The resource's size and API version labels are taken from the payload.
    """
    resource = {
        "prefect.resource.id": f"arr.session.{session_id}",
        "prefect.resource.name": session_id,
        "arr.session.id": session_id,
    }
    if payload.get("size"):
        resource["arr.session.size"] = str(payload["size"])
    if payload.get("api_version"):
        resource["arr.api-version"] = str(payload["api_version"])
    ref = _resolve(run)
    _emit(event, resource, ref, {"session_id": session_id, **payload})


def emit_quota_wait(
    limit: str,
    waited_seconds: float,
    *,
    size: str | None = None,
    api_version: str | None = None,
    run: RunRef | str | None = None,
    **extra: Any,
) -> None:
    """Emit ``arr.session.quota-wait``: this run waited ``waited_seconds`` (so far) for a
    slot of the concurrency limit ``limit`` before creating its session.

    Call it when the wait starts (``waited_seconds=0``) and when it ends; the current
    flow run is related by default.
    """
    resource = {
        "prefect.resource.id": f"arr.quota.{limit}",
        "prefect.resource.name": limit,
        "arr.quota.limit": limit,
    }
    if size:
        resource["arr.session.size"] = size.lower()
    if api_version:
        resource["arr.api-version"] = api_version
    ref = _resolve(run) if run is not None else current_run()
    payload = {
        "limit": limit,
        "waited_seconds": round_seconds(waited_seconds),
        "size": size,
        "api_version": api_version,
        **extra,
    }
    _emit("arr.session.quota-wait", resource, ref, payload)


def _emit(
    event: str, resource: dict[str, str], ref: RunRef | None, payload: dict[str, Any]
) -> None:
    if event not in SESSION_EVENTS:
        raise ValueError(f"undocumented event {event!r}: add it to SESSION_EVENTS")
    try:
        emit_event(
            event,
            resource=resource,
            related=ref.related() if ref is not None else [],
            payload=payload,
        )
    except Exception as exc:  # noqa: BLE001 - events are informative, never fatal
        get_logger("arr.flows").debug("could not emit %s: %s", event, exc)
