r"""An emulator of the Azure Remote Rendering service: the STS, the v1 and 2021-01-01
session APIs, fault injection and an accounting view (ARR_API.md says what it reproduces).

In-process, for tests (the client and the emulator share one virtual clock)::

    clock = VirtualClock()
    emu = Emulator(clock=clock, startup_seconds=30)
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emulator") as c:
        ...                                  # clock.advance(...) moves sessions along
    assert emu.running() == []               # nothing leaked
    emu.faults.add(kind="throttle", route="v1.get", times=2, retry_after=3)

Over real HTTP: ``with emu.serve() as base_url: ...`` (a uvicorn thread on a free loopback
port), or the ``arr-emulator`` command (``python -m arr_prefect.emulator``), which
prints ``arr-emulator listening on http://127.0.0.1:8080`` and serves until SIGINT/SIGTERM.

A whole lifecycle of each API version with curl, against
``arr-emulator --port 8080 --startup-seconds 5``::

    ARR=http://127.0.0.1:8080
    ACCOUNT=11111111-1111-1111-1111-111111111111
    KEY=arr-emulator-account-key
    json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

    # Token (STS): the account key buys a 24 h JWT.
    TOKEN=$(curl -s "$ARR/accounts/$ACCOUNT/token" -H "Authorization: Bearer $ACCOUNT:$KEY" \
      | json AccessToken)
    AUTH="Authorization: Bearer $TOKEN"

    # v1: create (202 + Location), poll properties, extend (200, empty), list, stop (204).
    SID=$(curl -s -X POST "$ARR/v1/accounts/$ACCOUNT/sessions/create" -H "$AUTH" \
      -H "Content-Type: application/json" \
      -d '{"maxLeaseTime": "4:0:0", "models": [], "size": "standard"}' | json sessionId)
    curl -s "$ARR/v1/accounts/$ACCOUNT/sessions/$SID/properties" -H "$AUTH"    # Starting
    sleep 6
    curl -s "$ARR/v1/accounts/$ACCOUNT/sessions/$SID/properties" -H "$AUTH"    # Ready
    curl -si -X PATCH "$ARR/v1/accounts/$ACCOUNT/sessions/$SID" -H "$AUTH" \
      -H "Content-Type: application/json" -d '{"maxLeaseTime": "5:0:0"}'       # 200, empty body
    curl -s "$ARR/v1/accounts/$ACCOUNT/sessions" -H "$AUTH"                    # {"sessions": [...]}
    curl -si -X DELETE "$ARR/v1/accounts/$ACCOUNT/sessions/$SID" -H "$AUTH"    # 204

    # 2021-01-01: the client picks the id; every call takes ?api-version=2021-01-01.
    V=api-version=2021-01-01
    curl -si -X PUT "$ARR/accounts/$ACCOUNT/sessions/my-session?$V" -H "$AUTH" \
      -H "Content-Type: application/json" \
      -d '{"maxLeaseTimeMinutes": 15, "size": "Standard"}'                       # 201
    curl -s "$ARR/accounts/$ACCOUNT/sessions/my-session?$V" -H "$AUTH"         # Starting
    sleep 6
    curl -s "$ARR/accounts/$ACCOUNT/sessions/my-session?$V" -H "$AUTH"         # Ready, hostname
    curl -s -X PATCH "$ARR/accounts/$ACCOUNT/sessions/my-session?$V" -H "$AUTH" \
      -H "Content-Type: application/json" -d '{"maxLeaseTimeMinutes": 20}'    # 200, properties
    curl -s "$ARR/accounts/$ACCOUNT/sessions?$V" -H "$AUTH"                    # {"sessions": [...]}
    curl -si -X POST "$ARR/accounts/$ACCOUNT/sessions/my-session/:stop?$V" -H "$AUTH"  # 204
    curl -s "$ARR/accounts/$ACCOUNT/sessions/my-session?$V" -H "$AUTH"         # Stopped

    # What ran and what it cost (no token on loopback): every session, and the running count.
    curl -s "$ARR/_emulator/ledger"

Admin API (no token on loopback; beyond it, or with ``admin_token`` set,
``Authorization: Bearer <admin token>``, health excepted): ``GET /_emulator/ledger``,
``GET /_emulator/requests``,
``GET|POST|DELETE /_emulator/faults``, ``POST /_emulator/tokens/expire``,
``POST /_emulator/clock/advance`` (virtual clock only), ``GET /_emulator/health``.

How the package is laid out (each module imports only those listed before it)::

    state.py      the pure state machine: sessions, leases, tokens, billing (no I/O)
    faults.py     scripted and random fault injection
    wire.py       what every answer looks like: JSON, MS-CV and service headers, errors
    listing.py    the session lists, kept serialized between requests
    request.py    reading a request: limits, lenient JSON, fields; Call and RouteSpec
    routes/       one module per route family: sts, v1, v2021, admin
    app.py        the ASGI app: routes each request, in the service's order of checks
    server.py     serving it with uvicorn, behind a front end's limits
    service.py    the Emulator facade: state, faults, the app, in-process transport
    cli.py        the ``arr-emulator`` command
"""

from __future__ import annotations

from arr_prefect.emulator.app import create_app
from arr_prefect.emulator.faults import FaultController, FaultKind, ScriptedFault
from arr_prefect.emulator.service import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.emulator.state import ApiError, EmulatorState, SessionRecord
from arr_prefect.emulator.wire import EmulatedConnectionDrop

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_ACCOUNT_KEY",
    "ApiError",
    "EmulatedConnectionDrop",
    "Emulator",
    "EmulatorState",
    "FaultController",
    "FaultKind",
    "ScriptedFault",
    "SessionRecord",
    "create_app",
]
