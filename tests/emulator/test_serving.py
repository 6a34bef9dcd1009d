"""The emulator over real loopback HTTP: in a thread (emu.serve) and as the CLI process."""

from __future__ import annotations

import asyncio
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import arr_prefect.emulator as package
from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import Emulator
from arr_prefect.emulator.cli import build_parser
from arr_prefect.emulator.server import bind_socket
from tests.emulator._support import ACCOUNT, KEY, START, V1_CREATE_BODY

V1 = f"/v1/accounts/{ACCOUNT}/sessions"


def v1_lifecycle(client: httpx.Client) -> str:
    """Token, create, properties (Ready at once: start-up 0), extend, list, stop; the id."""
    token = client.get(
        f"/accounts/{ACCOUNT}/token", headers={"Authorization": f"Bearer {ACCOUNT}:{KEY}"}
    )
    assert token.status_code == 200
    client.headers["Authorization"] = f"Bearer {token.json()['AccessToken']}"
    created = client.post(f"{V1}/create", json=V1_CREATE_BODY)
    assert created.status_code == 202
    sid: str = created.json()["sessionId"]
    assert created.headers["Location"] == f"accounts/{ACCOUNT}/sessions/{sid}"
    assert client.get(f"{V1}/{sid}/properties").json()["sessionStatus"] == "Ready"
    extended = client.patch(f"{V1}/{sid}", json={"maxLeaseTime": "5:0:0"})
    assert (extended.status_code, extended.content) == (200, b"")
    assert [s["sessionId"] for s in client.get(V1).json()["sessions"]] == [sid]
    assert client.delete(f"{V1}/{sid}").status_code == 204
    assert client.get(f"{V1}/{sid}/properties").json()["sessionStatus"] == "Stopped"
    return sid


def test_serve_in_a_thread_over_real_http() -> None:
    """emu.serve() speaks HTTP on a free loopback port; a drop breaks the real connection."""
    clock = VirtualClock(start=START)
    emu = Emulator({ACCOUNT: KEY}, clock=clock, startup_seconds=0)
    with emu.serve() as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base_url, timeout=5) as client:
            sid = v1_lifecycle(client)
            emu.faults.add(kind="drop", route="v1.list")
            with pytest.raises(httpx.TransportError):
                client.get(V1)
            assert client.get(V1).status_code == 200
    assert [e["id"] for e in emu.ledger()["sessions"]] == [sid]
    assert emu.running() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/_emulator/health", timeout=1)


def _command() -> list[str]:
    script = Path(sys.executable).with_name("arr-emulator")
    return [str(script)] if script.exists() else ["arr-emulator"]


@contextmanager
def running_emulator(
    *args: str, preexec_fn: Callable[[], None] | None = None, expect_host: str = "127.0.0.1"
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``arr-emulator --port 0 *args``; yield it and the URL of its first line."""
    process = subprocess.Popen(
        [*_command(), "--port", "0", "--log-level", "warning", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "arr-emulator printed nothing within 20 s"
        line = process.stdout.readline()
        assert line.startswith(f"arr-emulator listening on http://{expect_host}:"), line
        yield process, line.rsplit(" ", 1)[1].strip()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


@pytest.fixture
def emulator_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    with running_emulator("--startup-seconds", "0") as started:
        yield started


@pytest.mark.loopback
def test_cli_process_lifecycle_and_drop(
    emulator_process: tuple[subprocess.Popen[str], str],
) -> None:
    """arr-emulator --port 0 announces its URL, serves v1 and faults, and exits 0 on SIGTERM."""
    process, base_url = emulator_process
    with httpx.Client(base_url=base_url, timeout=5) as client:
        v1_lifecycle(client)
        added = client.post("/_emulator/faults", json={"kind": "drop", "route": "v1.list"})
        assert added.status_code == 200
        with pytest.raises(httpx.TransportError):
            client.get(V1)
        ledger = client.get("/_emulator/ledger").json()
        assert (len(ledger["sessions"]), ledger["running"]) == (1, 0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert process.stdout is not None
    assert process.stdout.read() == ""


def test_cli_options_parse() -> None:
    """The CLI accepts every documented option."""
    args = build_parser().parse_args(
        [
            "--host=127.0.0.1", "--port=0", f"--account-id={ACCOUNT}", "--account-key=k",
            "--startup-seconds=5", "--time-scale=60", "--region=eastus", "--capacity-standard=2",
            "--capacity-premium=1", "--token-lifetime=600", "--page-size=5", "--seed=3",
            "--p-throttle=0.1", "--p-server-error=0.1", "--p-slow=0.1", "--slow-seconds=2",
            "--p-drop=0.1", "--p-lost-create=0.1", "--p-session-error=0.1", "--retry-after=4",
        ]
    )  # fmt: skip
    assert (args.port, args.time_scale, args.capacity_standard, args.retry_after) == (0, 60, 2, 4)


def _curl_session() -> str:
    """The curl session of the package docstring (the README copies it)."""
    doc = package.__doc__ or ""
    lines = doc.split("``arr-emulator --port 8080 --startup-seconds 5``::", 1)[1].split("\n")
    block: list[str] = []
    for line in lines[2:]:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block)


@pytest.mark.loopback
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_docstring_curl_session_runs() -> None:
    """The documented curl lifecycle of both API versions runs as written."""
    script = _curl_session()
    assert script.count("sleep 6") == 2
    with running_emulator("--startup-seconds", "0.2") as (process, url):
        script = script.replace("ARR=http://127.0.0.1:8080", f"ARR={url}")
        script = script.replace("sleep 6", "sleep 0.3")  # start-up is 0.2 s here, not 5
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '"sessionStatus":"Ready"' in out
    assert "HTTP/1.1 200 OK" in out
    assert out.count("HTTP/1.1 204 No Content") == 2
    assert "HTTP/1.1 201 Created" in out
    assert '"teraflops":8.1' in out
    assert '"status":"Stopped"' in out
    assert out.rstrip().endswith('"running":0}')


async def test_accepted_connections_have_tcp_nodelay() -> None:
    """Connections accepted on bind_socket's socket (as uvicorn accepts them) send at once.

    Without TCP_NODELAY every answer written in two pieces waited ~40 ms for a delayed ACK.
    """
    accepted: asyncio.Queue[int] = asyncio.Queue()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.put_nowait(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    sock = bind_socket("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        host, port = sock.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        assert await asyncio.wait_for(accepted.get(), 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.loopback
def test_access_log_only_with_the_flag() -> None:
    """Requests are logged one by one only with --access-log (logging costs more than answering)."""
    for args, logged in (((), False), (("--access-log",), True)):
        with running_emulator("--log-level", "info", *args) as (process, base_url):
            assert httpx.get(f"{base_url}/_emulator/health", timeout=5).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
            assert process.stderr is not None
            stderr = process.stderr.read()
        assert ("GET /_emulator/health" in stderr) is logged, stderr
