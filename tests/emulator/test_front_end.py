"""The emulator's front end over real sockets: read deadlines, the connection cap, and the
service's JSON error for what never reaches the app (malformed HTTP, late heads).

Deadlines here are real time (they bound sockets, not emulated sessions), so the limits are
set to fractions of a second; the whole module takes about 5 s.
"""

from __future__ import annotations

import json
import logging
import resource
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.emulator.server import FrontEndLimits
from tests.emulator._support import ACCOUNT, KEY, MS_CV, START
from tests.emulator.test_serving import running_emulator

LIMITS = FrontEndLimits(header_timeout=0.3, body_timeout=0.3, max_connections=20)


@pytest.fixture
def emu() -> Emulator:
    return Emulator({ACCOUNT: KEY}, clock=VirtualClock(start=START), startup_seconds=0)


@pytest.fixture
def served(emu: Emulator) -> Iterator[tuple[str, int]]:
    with emu.serve(limits=LIMITS) as base_url:
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


def _exchange(address: tuple[str, int], data: bytes, wait: float = 3.0) -> bytes:
    """Send raw bytes; read until the server closes (or ``wait`` passes)."""
    with socket.create_connection(address) as sock:
        sock.settimeout(wait)
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            received += b"<still open>"
    return received


def _parse(raw: bytes) -> tuple[int, dict[str, str], object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _health(address: tuple[str, int]) -> float:
    """Seconds a normal request takes (it must succeed)."""
    started = time.monotonic()
    with httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=5) as client:
        assert client.get("/_emulator/health").status_code == 200
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"garbage\r\n\r\n", 400, id="not-http"),
        pytest.param(b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="non-ascii-target"),
        pytest.param(
            b"GET /accounts/a%0Ab/sessions/s%0D%0A HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            id="encoded-newlines",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431, id="huge-head"
        ),
        pytest.param(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, id="unknown-path"),
    ],
)
def test_every_refusal_is_the_service_json_error(
    served: tuple[str, int], emu: Emulator, request_bytes: bytes, status: int
) -> None:
    """Malformed HTTP, bad targets, huge heads: the service's JSON error with MS-CV, logged."""
    answer = _exchange(served, request_bytes + b"")
    got, headers, body = _parse(answer.removesuffix(b"<still open>"))
    assert got == status
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert MS_CV.match(headers["ms-cv"])
    assert isinstance(body, dict)
    assert set(body["error"]) == {"code", "message"}
    assert sum(sum(c.values()) for c in emu.request_counts().values()) == 1


def test_absolute_form_target_is_served(served: tuple[str, int]) -> None:
    """`GET http://host/path HTTP/1.1` is routed by its path, over real HTTP too."""
    answer = _exchange(
        served,
        b"GET http://arr.example/_emulator/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    status, _, body = _parse(answer)
    assert (status, body["status"]) == (200, "ok")  # type: ignore[index]


@pytest.mark.parametrize(
    "upgrade",
    [
        b"Upgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        b"Upgrade: websocket\r\nConnection: Upgrade, close\r\n",  # no key
        b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    ],
    ids=["websocket", "websocket-no-key", "h2c"],
)
def test_upgrade_requests_are_answered_as_plain_http(
    served: tuple[str, int], upgrade: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """An `Upgrade` header is ignored: the request gets its usual JSON answer with MS-CV
    (uvicorn answered a WebSocket upgrade with a plain-text 500, or 400 without a key)."""
    with caplog.at_level(logging.WARNING):
        answer = _exchange(
            served, b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n"
        )
    status, headers, body = _parse(answer.removesuffix(b"<still open>"))
    assert (status, body["status"]) == (200, "ok")  # type: ignore[index]
    assert MS_CV.match(headers["ms-cv"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_half_open_connections_are_closed(served: tuple[str, int], emu: Emulator) -> None:
    """Silent and half-sent heads are closed at the deadline (408 if anything arrived)."""
    silent = [socket.create_connection(served) for _ in range(8)]
    partial = [socket.create_connection(served) for _ in range(8)]
    for sock in partial:
        sock.sendall(b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\n")
    time.sleep(LIMITS.header_timeout + 0.4)
    for sock in silent:
        assert _closed_by_server(sock) or sock.recv(1) == b""
    for sock in partial:
        sock.settimeout(1)
        status, headers, body = _parse(sock.recv(65536))
        assert (status, body["error"]["code"]) == (408, "RequestTimeout")  # type: ignore[index]
        assert MS_CV.match(headers["ms-cv"])
    for sock in silent + partial:
        sock.close()
    assert emu.request_counts()["unknown"] == {"408": 8}
    assert _health(served) < 1


def test_default_deadlines_close_a_silent_connection_within_5_s() -> None:
    """A half-open or idle connection is gone within 5 s by default (the probe that found
    1000 of 1000 still open waited 8 s), the same as an idle keep-alive connection."""
    limits = FrontEndLimits()
    assert limits.header_timeout <= 5.0
    assert limits.keep_alive_timeout <= 5.0


def test_trickled_head_does_not_extend_its_deadline(served: tuple[str, int]) -> None:
    """A head sent a byte at a time is cut off at the head deadline, not kept alive by it."""
    with socket.create_connection(served) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.02)
            if _closed_by_server(sock):
                closed = True
                break
        assert closed
        assert time.monotonic() - started < LIMITS.header_timeout + 0.5


def test_stalled_body_is_a_disconnect_not_an_error(
    served: tuple[str, int], emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A body that stops arriving is abandoned at the body deadline: `disconnected`, no 500."""
    answer = _exchange(
        served,
        b'POST /_emulator/faults HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"kind"',
    )
    assert answer == b""
    deadline = time.monotonic() + 2
    while emu.request_count("admin.faults.set") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emu.request_counts()["admin.faults.set"] == {"disconnected": 1}
    assert emu.faults.pending() == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_idle_connections_beyond_the_cap_are_closed(served: tuple[str, int]) -> None:
    """Past max_connections, the oldest idle connections go; a normal request is served at once."""
    idle = [socket.create_connection(served) for _ in range(60)]
    time.sleep(0.1)
    assert _health(served) < 1
    closed = sum(_closed_by_server(sock) for sock in idle)
    assert closed >= 60 - LIMITS.connection_cap()
    for sock in idle:
        sock.close()


def test_connection_cap_follows_the_descriptor_limit() -> None:
    """With no explicit cap, the cap leaves descriptors to spare under the soft limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = FrontEndLimits().connection_cap()
    assert cap < soft or soft == resource.RLIM_INFINITY


def _limit_descriptors() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.mark.loopback
def test_idle_connections_cannot_starve_a_descriptor_limited_emulator() -> None:
    """Under `ulimit -n 256`, 300 idle connections do not stop a normal request (they did)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 512:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))
    with running_emulator("--startup-seconds", "0", preexec_fn=_limit_descriptors) as (_, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        address = (host, int(port))
        idle = []
        for _ in range(300):
            try:
                idle.append(socket.create_connection(address, timeout=2))
            except OSError:
                break
        try:
            assert _health(address) < 3
        finally:
            for sock in idle:
                sock.close()


def test_client_closing_mid_body_is_a_disconnect_not_an_error(
    served: tuple[str, int], emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that closes its socket mid-body is counted `disconnected`, with no traceback."""
    with socket.create_connection(served) as sock:
        sock.sendall(
            b'POST /_emulator/faults HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"kind"'
        )
        time.sleep(0.05)
    deadline = time.monotonic() + 2
    while emu.request_count("admin.faults.set") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emu.request_counts()["admin.faults.set"] == {"disconnected": 1}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert _health(served) < 1
