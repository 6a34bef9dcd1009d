"""Performance benchmark: the emulator, the client and the flows, as ratios against floors.

Run it (a few minutes; it starts and stops its own emulator, hello-world and Prefect
server processes)::

    .venv/bin/python scripts/bench.py                 # everything
    .venv/bin/python scripts/bench.py --only emulator,client --rounds 3

Every figure that can be is a ratio of two things measured side by side (A and B
interleaved, several rounds, median and spread over the rounds), so that load from other
jobs on a shared machine moves both sides. It prints a Markdown table with each goal of
issue 9 and exits 1 when a goal is missed. Not part of the test suite (it measures time).

What is measured:

- emulator: p50 of a loopback GET on one keep-alive connection; GET throughput over 50
  connections against a Starlette hello world served the same way (the same uvicorn
  set-up, ``run_server`` on ``bind_socket``); that throughput with 10,000 sessions in
  the ledger against one. The load comes from a minimal keep-alive HTTP/1.1 client on
  raw asyncio streams, so the load generator costs as little as possible.
- client: requests per lifecycle (token, create, poll, extend, stop) as the emulator
  counted them, against a hand-written httpx lifecycle; lifecycle wall time of the client
  (one reused, and a new one per lifecycle) against that raw httpx floor; the CPU time to
  build a client.
- list: ``list_sessions()`` with 1,000 active sessions against a hand-written httpx GET +
  ``.json()`` of the same pages (following ``@nextLink``) on the same emulator, both API
  versions, call by call interleaved: the median of the pairs' ratios, and its spread;
  the CPU of both processes over each round; and reading one answer without HTTP
  (``parse_page``) against ``json.loads`` and against pydantic-core's own floor (a typed
  dict per item, no model).
- scale: 1000 concurrent lifecycles (new client each, half per API version) in one child
  process against one emulator (start-up 0): wall time, peak RSS, failures; again with
  the child's open-file limit at 1024; and the same with a ``list_sessions()`` in every
  lifecycle (each list then returns up to 1,000 sessions); each with the per-lifecycle
  cost (wall, and client + emulator CPU) against batches of 10 run in the same child
  before and after it; with both, what the list itself costs per session it returns, at
  1,000 and at 10 (a list of N sessions costs N times a session's parse, so the
  per-lifecycle cost with a list grows with N by construction).
- flows: ``render_batch`` (no-op job) against a flow of five no-op tasks, warm, as 24
  pairs in random order with random 0-1 s pauses (median of the pairs' ratios); 200
  ``rendering_session``s in one flow run, per session, against the same flow without them
  (``--with-session-quota``: also with a limit that exists, beside the same slot calls made
  by hand; ``--postgres``: the server on PostgreSQL, as the fleet test starts it;
  ``--flow-calls N``: the Prefect API requests of N more runs of each flow, counted and
  timed, for where render_batch's extra time goes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ACCOUNT = "11111111-1111-1111-1111-111111111111"
KEY = "arr-emulator-account-key"
ALL = ("emulator", "client", "list", "scale", "flows", "sync")


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    area: str
    what: str
    value: str
    goal: str
    ok: bool
    spread: str = ""


ROWS: list[Row] = []


def record(area: str, what: str, value: str, goal: str, ok: bool, spread: str = "") -> None:
    # The machine is shared: every figure carries the load it was measured under.
    spread = f"{spread}; load {os.getloadavg()[0]:.1f}".lstrip("; ")
    ROWS.append(Row(area, what, value, goal, ok, spread))
    print(f"  {what}: {value} (goal {goal}) {'ok' if ok else 'MISSED'} {spread}", flush=True)


def summary(samples: Sequence[float], unit: str = "x", digits: int = 2) -> tuple[float, str]:
    """Median, and the spread over the rounds as ``min-max``."""
    med = statistics.median(samples)
    return med, f"{min(samples):.{digits}f}-{max(samples):.{digits}f} {unit} over {len(samples)}"


def table() -> str:
    lines = [
        "| area | what | measured | goal | met | spread (min-max, rounds) |",
        "|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        met = "yes" if row.ok else "**no**"
        lines.append(
            f"| {row.area} | {row.what} | {row.value} | {row.goal} | {met} | {row.spread} |"
        )
    return "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}),"
        f" Python {platform.python_version()}, {platform.system()} {platform.release()};"
        f" load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
        " (shared with other jobs)"
    )


# --------------------------------------------------------------------------- processes


def _python() -> str:
    return sys.executable


@dataclass
class Served:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def served_process(args: list[str], env: dict[str, str] | None = None) -> Iterator[Served]:
    """Start a process that prints ``... listening on http://...``; yield URL and pid."""
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"{args[:3]} did not start: {line!r}")
        yield Served(line.rsplit(" ", 1)[1].strip(), process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def emulator_process(*extra: str) -> Iterator[str]:
    with emulator_served(*extra) as served:
        yield served.url


EMULATOR_ARGS: list[str] = []
"""Extra emulator options for every section (``--emulator-args``), e.g. ``--page-size 1000``."""


def emulator_served(*extra: str) -> contextlib.AbstractContextManager[Served]:
    return served_process(
        [
            _python(),
            "-m",
            "arr_prefect.emulator",
            "--port",
            "0",
            "--startup-seconds",
            "0",
            "--log-level",
            "warning",
            *EMULATOR_ARGS,
            *extra,
        ]
    )


def hello_process() -> contextlib.AbstractContextManager[Served]:
    return served_process([_python(), str(Path(__file__).resolve()), "--serve-hello"])


def serve_hello() -> int:
    """A Starlette hello world served exactly as the emulator is (run_server, bind_socket)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from arr_prefect.emulator.server import base_url_of, bind_socket, run_server

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    app = Starlette(routes=[Route("/{path:path}", hello)])
    sock = bind_socket("127.0.0.1", 0)
    print(f"hello listening on {base_url_of(sock)}", flush=True)
    run_server(app, sock, log_level="warning")
    return 0


# --------------------------------------------------------------------------- raw HTTP load


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1]
    host, _, port = rest.partition(":")
    return host, int(port.split("/")[0])


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """Send one request on a keep-alive connection; read the answer; return its status."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def throughput(
    served: Served, raw: bytes, requests: int, connections: int = 50
) -> tuple[float, float]:
    """``requests`` GETs over ``connections`` keep-alive connections (opened first).

    Returns (requests per wall second, requests per CPU second of the server). The
    server is one thread, so what it can answer is 1 / its CPU per request; that figure
    is what the ratios use, since other jobs on a shared machine move wall time a lot
    more than they move the server's own CPU time.
    """
    host, port = _host_port(served.url)
    bad = 0
    left = requests
    opened = [await asyncio.open_connection(host, port) for _ in range(connections)]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal bad, left
        while left > 0:
            left -= 1
            if await _exchange(reader, writer, raw) != 200:
                bad += 1

    cpu = served.cpu_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in opened))
    elapsed = time.perf_counter() - start
    cpu = served.cpu_seconds() - cpu
    for _, writer in opened:
        writer.close()
    if bad:
        raise RuntimeError(f"{bad} requests were not answered 200")
    return requests / elapsed, requests / max(cpu, 1e-3)


async def latencies(url: str, raw: bytes, count: int) -> list[float]:
    host, port = _host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    result = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            status = await _exchange(reader, writer, raw)
            result.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"answered {status}")
    finally:
        writer.close()
    return result


async def _token(url: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get(
            f"/accounts/{ACCOUNT}/token", headers={"Authorization": f"Bearer {ACCOUNT}:{KEY}"}
        )
        return str(answer.json()["AccessToken"])


async def _fill(url: str, token: str, sessions: int, connections: int = 50) -> str:
    """Create ``sessions`` 2021-01-01 sessions (Ready at once, 24 h lease); return one id."""
    host, port = _host_port(url)
    counter = iter(range(sessions))
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"maxLeaseTimeMinutes": 1440, "size": "Standard"}).encode()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for index in counter:
                path = f"/accounts/{ACCOUNT}/sessions/bench-{index}?api-version=2021-01-01"
                status = await _exchange(reader, writer, _request("PUT", path, auth, body))
                if status != 201:
                    raise RuntimeError(f"create answered {status}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return "bench-0"


def _get_raw(token: str, sid: str) -> bytes:
    return _request(
        "GET",
        f"/accounts/{ACCOUNT}/sessions/{sid}?api-version=2021-01-01",
        {"Authorization": f"Bearer {token}"},
    )


async def bench_emulator(rounds: int, requests: int) -> None:
    print("== emulator", flush=True)
    with emulator_served() as small, emulator_served() as big, hello_process() as hello:
        small_token, big_token = await _token(small.url), await _token(big.url)
        small_sid = await _fill(small.url, small_token, 1, connections=1)
        started = time.perf_counter()
        big_sid = await _fill(big.url, big_token, 10_000)
        print(f"  10,000 sessions created in {time.perf_counter() - started:.1f} s", flush=True)
        small_get, big_get = _get_raw(small_token, small_sid), _get_raw(big_token, big_sid)
        hello_get = _request("GET", "/hello", {})

        p50s = []
        for _ in range(rounds):
            lat = await latencies(small.url, small_get, 400)
            p50s.append(statistics.median(lat) * 1000)
        p50, spread = summary(p50s, "ms")
        record("emulator", "GET p50 on loopback, one connection", f"{p50:.2f} ms", "<= 2 ms",
               p50 <= 2.0, spread)  # fmt: skip

        order = [("hello", hello, hello_get), ("small", small, small_get), ("big", big, big_get)]
        for _, target, raw in order:  # warm
            await throughput(target, raw, requests // 4)
        vs_hello, vs_small = [], []
        walls: dict[str, list[float]] = {"hello": [], "small": [], "big": []}
        for index in range(rounds):
            rate = {}
            for name, target, raw in order[index % 3 :] + order[: index % 3]:
                wall_rate, rate[name] = await throughput(target, raw, requests)
                walls[name].append(wall_rate)
            vs_hello.append(rate["small"] / rate["hello"])
            vs_small.append(rate["big"] / rate["small"])

        def wall(name: str) -> str:
            return f"{statistics.median(walls[name]):.0f}"

        ratio, spread = summary(vs_hello)
        record("emulator",
               "GET throughput (answers per server CPU-second) vs Starlette hello world,"
               f" 50 connections; wall: {wall('small')} vs {wall('hello')} req/s",
               f"{ratio:.2f}x", ">= 0.8x", ratio >= 0.8, spread)  # fmt: skip
        ratio, spread = summary(vs_small)
        record("emulator",
               "GET throughput (per server CPU-second), 10,000 sessions in the ledger vs 1;"
               f" wall: {wall('big')} vs {wall('small')} req/s",
               f"{ratio:.2f}x", "0.9x-1.1x", 0.9 <= ratio <= 1.1, spread)  # fmt: skip
    await bench_emulator_list(rounds)


async def bench_emulator_list(rounds: int, sessions: int = 1000, pairs: int = 60) -> None:
    """Issue 22: the emulator's list answer with ``sessions`` active, against a Starlette
    hello world serving the same bytes; both in their own uvicorn process on loopback,
    one keep-alive connection each, GETs interleaved (random order within each pair).
    The figure is the median of per-pair latency ratios; the load average is reported
    with it (the machine is shared: only ratios mean something)."""
    import random
    import tempfile
    import textwrap

    import httpx

    hello_source = """
    import sys
    from pathlib import Path
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    from arr_prefect.emulator.server import base_url_of, bind_socket, run_server
    bodies = {name: Path(path).read_bytes() for name, path in zip(("v1", "v2021"), sys.argv[1:])}
    async def same_bytes(request):
        return Response(bodies[request.path_params["name"]], media_type="application/json")
    sock = bind_socket("127.0.0.1", 0)
    print(f"hello listening on {base_url_of(sock)}", flush=True)
    run_server(Starlette(routes=[Route("/{name}", same_bytes)]), sock, log_level="warning")
    """
    print(f"== emulator list, {sessions} active sessions", flush=True)
    load_before = os.getloadavg()[0]
    with emulator_served("--page-size", str(sessions)) as emu:
        token = await _token(emu.url)
        await _fill(emu.url, token, sessions)
        auth = {"Authorization": f"Bearer {token}"}
        paths = {
            "v1": f"/v1/accounts/{ACCOUNT}/sessions",
            "v2021": f"/accounts/{ACCOUNT}/sessions?api-version=2021-01-01",
        }
        with tempfile.TemporaryDirectory() as tmp:
            files, sizes = [], {}
            async with httpx.AsyncClient(base_url=emu.url) as http:
                for name, path in paths.items():
                    answer = await http.get(path, headers=auth)
                    listed = len(answer.json()["sessions"])
                    if answer.status_code != 200 or listed != sessions:
                        raise RuntimeError(f"{name} list: {answer.status_code}, {listed} sessions")
                    files.append(Path(tmp, name))
                    files[-1].write_bytes(answer.content)
                    sizes[name] = len(answer.content)
            hello_args = [_python(), "-c", textwrap.dedent(hello_source), *map(str, files)]
            with served_process(hello_args) as hello:
                for name, path in paths.items():
                    sides = {
                        "emulator": (emu.url, _request("GET", path, auth)),
                        "hello": (hello.url, _request("GET", f"/{name}", {})),
                    }
                    opened = {}
                    for side, (url, _) in sides.items():
                        opened[side] = await asyncio.open_connection(*_host_port(url))
                    try:
                        for side, (_, raw) in sides.items():  # warm both
                            for _ in range(10):
                                await _exchange(*opened[side], raw)
                        ratios: list[float] = []
                        medians: list[float] = []
                        took: dict[str, list[float]] = {"emulator": [], "hello": []}
                        cpu = {"emulator": emu.cpu_seconds(), "hello": hello.cpu_seconds()}
                        for _ in range(rounds):
                            in_round = []
                            for _ in range(pairs):
                                pair = {}
                                for side in random.sample(list(sides), 2):
                                    start = time.perf_counter()
                                    status = await _exchange(*opened[side], sides[side][1])
                                    pair[side] = time.perf_counter() - start
                                    if status != 200:
                                        raise RuntimeError(f"{side} answered {status}")
                                    took[side].append(pair[side])
                                in_round.append(pair["emulator"] / pair["hello"])
                            ratios += in_round
                            medians.append(statistics.median(in_round))
                        cpu_ratio = (emu.cpu_seconds() - cpu["emulator"]) / max(
                            hello.cpu_seconds() - cpu["hello"], 1e-3
                        )
                    finally:
                        for _, writer in opened.values():
                            writer.close()
                    ratio = statistics.median(ratios)
                    _, spread = summary(medians)
                    ms = {side: statistics.median(t) * 1000 for side, t in took.items()}
                    load = f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
                    record("emulator",
                           f"{name} list of {sessions} active sessions"
                           f" ({sizes[name] // 1024} KiB) vs Starlette"
                           f" serving the same bytes, median of {len(ratios)} pair ratios;"
                           f" {ms['emulator']:.2f} vs {ms['hello']:.2f} ms, server CPU"
                           f" {cpu_ratio:.2f}x; {load}",
                           f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2, spread)  # fmt: skip


# --------------------------------------------------------------------------- client


def _settings(url: str, api_version: str) -> Any:
    from arr_prefect.settings import load_settings

    return load_settings(
        _env_file=None,
        account_id=ACCOUNT,
        account_key=KEY,
        service_url=url,
        sts_url=url,
        api_version=api_version,
        poll_interval=0.05,
    )


class RawLifecycle:
    """The floor: a hand-written httpx lifecycle (one AsyncClient, the token fetched once)."""

    def __init__(self, url: str, api_version: str) -> None:
        import httpx

        self.url = url
        self.v1 = api_version == "v1"
        self.http = httpx.AsyncClient(base_url=url)
        self.auth: dict[str, str] = {}
        self.count = 0

    async def token(self) -> None:
        answer = await self.http.get(
            f"/accounts/{ACCOUNT}/token", headers={"Authorization": f"Bearer {ACCOUNT}:{KEY}"}
        )
        self.auth = {"Authorization": f"Bearer {answer.json()['AccessToken']}"}

    async def run(self) -> None:
        if not self.auth:
            await self.token()
        http, auth = self.http, self.auth
        if self.v1:
            base = f"/v1/accounts/{ACCOUNT}/sessions"
            created = await http.post(
                f"{base}/create",
                json={"maxLeaseTime": "0:10:0", "models": [], "size": "standard"},
                headers=auth,
            )
            sid = created.json()["sessionId"]
            while True:
                props = (await http.get(f"{base}/{sid}/properties", headers=auth)).json()
                if props["sessionStatus"] == "Ready":
                    break
                await asyncio.sleep(0.05)
            (await http.patch(f"{base}/{sid}", json={"maxLeaseTime": "0:20:0"}, headers=auth))
            (await http.delete(f"{base}/{sid}", headers=auth)).raise_for_status()
        else:
            self.count += 1
            sid = f"raw-{id(self)}-{self.count}"
            url = f"/accounts/{ACCOUNT}/sessions/{sid}"
            params = {"api-version": "2021-01-01"}
            body = {"maxLeaseTimeMinutes": 10, "size": "Standard"}
            (await http.put(url, json=body, params=params, headers=auth)).raise_for_status()
            while True:
                props = (await http.get(url, params=params, headers=auth)).json()
                if props["status"] == "Ready":
                    break
                await asyncio.sleep(0.05)
            answer = await http.patch(
                url, json={"maxLeaseTimeMinutes": 20}, params=params, headers=auth
            )
            answer.raise_for_status()
            (await http.post(f"{url}/:stop", params=params, headers=auth)).raise_for_status()


async def client_lifecycle(
    arr: Any, with_list: bool = False, lister: Callable[[], Awaitable[int]] | None = None
) -> int:
    """One lifecycle; the number of sessions its list returned (0 without a list).

    ``lister`` lists instead of ``arr.list_sessions()`` (the raw-httpx floor)."""
    session = await arr.create_session(lease=timedelta(minutes=10))
    await arr.wait_until_ready(session.id)
    await arr.extend_session(session.id, timedelta(minutes=20))
    listed = 0
    if lister is not None:
        listed = await lister()
    elif with_list:
        listed = len(await arr.list_sessions())
    await arr.stop_session(session.id)
    return listed


class RawLister:
    """The floor of a list: httpx GET + ``.json()`` of each page, following ``@nextLink``,
    on one shared ``httpx.AsyncClient`` with one token (no validation, no retries).

    As many lists at once as the client's pool reads (``LISTS_AT_ONCE``): without that
    bound a thousand lists queue for the connections, time out, and the sessions of the
    lifecycles that failed stay listed, so the two would not list the same sessions."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        from arr_prefect._pool import LISTS_AT_ONCE

        self.http = httpx.AsyncClient(base_url=url)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.lists = asyncio.Semaphore(LISTS_AT_ONCE)

    async def __call__(self, api_version: str) -> int:
        """:meth:`count`, at most ``LISTS_AT_ONCE`` at a time."""
        async with self.lists:
            return await self.count(api_version)

    async def count(self, api_version: str) -> int:
        """The number of sessions listed, every page read."""
        body = (await self.first_page(api_version)).json()
        count = len(body["sessions"])
        while body.get("@nextLink"):
            body = (await self.http.get(body["@nextLink"], headers=self.auth)).json()
            count += len(body["sessions"])
        return count

    async def first_page(self, api_version: str) -> Any:
        if api_version == "v1":
            first, params = f"/v1/accounts/{ACCOUNT}/sessions", None
        else:
            first, params = f"/accounts/{ACCOUNT}/sessions", {"api-version": "2021-01-01"}
        return await self.http.get(first, params=params, headers=self.auth)


async def _counts(url: str) -> dict[str, int]:
    import httpx

    async with httpx.AsyncClient(base_url=url) as http:
        counts = (await http.get("/_emulator/requests")).json()["counts"]
    return {
        route: sum(by_status.values())
        for route, by_status in counts.items()
        if not route.startswith("admin.")
    }


async def bench_client(rounds: int, per_round: int) -> None:
    print("== client", flush=True)
    from arr_prefect.client import ArrClient

    for api_version in ("v1", "2021-01-01"):
        with emulator_process() as url:
            settings = _settings(url, api_version)
            raw = RawLifecycle(url, api_version)
            before = await _counts(url)
            await raw.run()
            raw_count = sum((await _counts(url)).values()) - sum(before.values())
            before = await _counts(url)
            async with ArrClient(settings) as arr:
                from arr_prefect.auth import PROCESS_TOKEN_CACHE

                PROCESS_TOKEN_CACHE.clear()
                await client_lifecycle(arr)
            client_count = sum((await _counts(url)).values()) - sum(before.values())
            record("client", f"requests per lifecycle, {api_version} (token included)",
                   f"{client_count} vs {raw_count} by hand", "equal",
                   client_count == raw_count)  # fmt: skip

            reused = ArrClient(settings)

            async def fresh(settings: Any = settings) -> None:
                async with ArrClient(settings) as arr:
                    await client_lifecycle(arr)

            async def again(reused: Any = reused) -> None:
                await client_lifecycle(reused)

            variants: dict[str, Callable[[], Awaitable[None]]] = {
                "raw": raw.run,
                "reused": again,
                "fresh": fresh,
            }
            for run in variants.values():  # warm: connections, token, imports
                await run()
            ratios: dict[str, list[float]] = {"reused": [], "fresh": []}
            for _ in range(rounds):
                # Interleaved lifecycle by lifecycle (in a rotating order), so that load
                # from other jobs, which comes and goes within a round, falls on all three;
                # a round's ratio is the median of the ratios of lifecycles run side by
                # side, so that one lifecycle preempted by another job (a 2-core machine)
                # does not decide it.
                walls: dict[str, list[float]] = {name: [] for name in variants}
                names = list(variants)
                for index in range(per_round):
                    for name in names[index % 3 :] + names[: index % 3]:
                        start = time.perf_counter()
                        await variants[name]()
                        walls[name].append(time.perf_counter() - start)
                for name in ("reused", "fresh"):
                    ratios[name].append(
                        statistics.median(
                            a / b for a, b in zip(walls[name], walls["raw"], strict=True)
                        )
                    )
            await reused.aclose()
            await raw.http.aclose()
            labels = {"reused": "one client reused", "fresh": "a client per lifecycle"}
            for name, label in labels.items():
                ratio, spread = summary(ratios[name])
                record("client", f"lifecycle wall vs raw httpx, {api_version}, {label}",
                       f"{ratio:.2f}x", "<= 1.05x", ratio <= 1.05, spread)  # fmt: skip

    settings = _settings("http://127.0.0.1:9", "v1")
    build_times = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(1000):
            ArrClient(settings)
        build_times.append((time.process_time() - start) / 1000 * 1000)
    ms, spread = summary(build_times, "ms", 3)
    record("client", "CPU to build a client (settings given)", f"{ms:.3f} ms", "< 1 ms",
           ms < 1.0, spread)  # fmt: skip


# --------------------------------------------------------------------------- scale


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _batch(
    settings: dict[str, Any],
    count: int,
    with_list: bool,
    emulator_pid: int | None,
    raw: RawLister | None = None,
) -> dict[str, Any]:
    """``count`` concurrent lifecycles (a new client each, half per API version); with
    ``raw``, each lists through it instead of the client."""
    from arr_prefect.client import ArrClient

    failures: list[str] = []
    listed: list[int] = []

    async def one(index: int) -> None:
        api_version = "v1" if index % 2 else "2021-01-01"
        lister = functools.partial(raw, api_version) if raw is not None else None
        try:
            async with ArrClient(settings[api_version]) as arr:
                listed.append(await client_lifecycle(arr, with_list, lister))
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failures.append(f"{type(exc).__name__}: {exc}")

    emulator_cpu = _cpu_of(emulator_pid) if emulator_pid else 0.0
    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - start
    return {
        "wall": wall,
        "cpu": time.process_time() - cpu,
        "emulator_cpu": (_cpu_of(emulator_pid) - emulator_cpu) if emulator_pid else 0.0,
        "failures": failures,
        "listed": statistics.mean(listed) if listed else 0.0,
    }


async def _scale(
    url: str, lifecycles: int, with_list: bool, emulator_pid: int | None, raw_list: bool = False
) -> dict[str, Any]:
    settings = {v: _settings(url, v) for v in ("v1", "2021-01-01")}
    raw = RawLister(url, await _token(url)) if raw_list else None

    async def batch(count: int) -> dict[str, Any]:
        return await _batch(settings, count, with_list, emulator_pid, raw)

    # The N=10 rate, in batches of 10 before and after the big run (same process, same
    # emulator), so that what the machine's other jobs do falls on both sides.
    await batch(10)  # warm: imports, pool, token
    small = [await batch(10) for _ in range(5)]
    big = await batch(lifecycles)
    small += [await batch(10) for _ in range(5)]
    if raw is not None:
        await raw.http.aclose()
    failures = big["failures"] + [f for batch in small for f in batch["failures"]]

    def per_lifecycle(key: str) -> float:
        return statistics.median(batch[key] / 10 for batch in small) if small else 0.0

    return {
        "wall": big["wall"],
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu": big["cpu"],
        "emulator_cpu": big["emulator_cpu"],
        "small_wall": per_lifecycle("wall"),
        "small_cpu": per_lifecycle("cpu") + per_lifecycle("emulator_cpu"),
        "listed": big["listed"],
        "small_listed": statistics.mean(batch["listed"] for batch in small),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def scale_child(
    url: str,
    lifecycles: int,
    nofile: int | None,
    with_list: bool,
    emulator_pid: int | None,
    raw_list: bool = False,
) -> int:
    if nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    result = asyncio.run(_scale(url, lifecycles, with_list, emulator_pid, raw_list))
    print(json.dumps(result), flush=True)
    return 0


SCALE_VARIANTS: dict[str, tuple[int | None, str | None]] = {
    "plain": (None, None),
    "nofile": (1024, None),
    "list": (None, "client"),
    "rawlist": (None, "raw"),
}
"""A scale variant: (open-files limit, how each lifecycle lists: the client, raw httpx
GET + .json() (the floor), or not at all)."""


def bench_scale(lifecycles: int, variants: Sequence[tuple[int | None, str | None]]) -> None:
    print("== scale", flush=True)
    results: dict[tuple[int | None, str | None], dict[str, Any]] = {}
    for nofile, list_by in variants:
        with_list = list_by is not None
        with emulator_served() as served:
            args = [_python(), str(Path(__file__).resolve()), "--scale-child", served.url,
                    "--lifecycles", str(lifecycles), "--emulator-pid", str(served.pid)]  # fmt: skip
            if nofile is not None:
                args += ["--nofile", str(nofile)]
            if with_list:
                args += ["--with-list"]
            if list_by == "raw":
                args += ["--raw-list"]
            out = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"scale child failed: {out.stderr[-2000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
        results[nofile, list_by] = result
        limit = f"open files <= {result['nofile']}"
        if with_list:
            limit += (
                f", each lifecycle also lists{' by raw httpx (the floor)' * (list_by == 'raw')}"
                f" ({result['listed']:.0f} sessions a list on average;"
                f" {result['small_listed']:.0f} in batches of 10)"
            )
        cpus = f"client {result['cpu']:.1f} s, emulator {result['emulator_cpu']:.1f} s"
        record("scale", f"{lifecycles} concurrent lifecycles, one process, {limit}: wall"
               f" (CPU used: {cpus})",
               f"{result['wall']:.1f} s", "<= 15 s", result["wall"] <= 15)  # fmt: skip
        wall_ratio = result["wall"] / lifecycles / result["small_wall"]
        cpu_ratio = (result["cpu"] + result["emulator_cpu"]) / lifecycles / result["small_cpu"]
        record("scale", f"{lifecycles} concurrent lifecycles, {limit}: wall per lifecycle"
               f" vs batches of 10 ({result['wall'] / lifecycles * 1000:.1f} ms vs"
               f" {result['small_wall'] * 1000:.1f} ms)",
               f"{wall_ratio:.2f}x", "<= 1.2x", wall_ratio <= 1.2)  # fmt: skip
        record("scale", f"{lifecycles} concurrent lifecycles, {limit}: CPU (client +"
               " emulator) per lifecycle vs batches of 10"
               f" ({(result['cpu'] + result['emulator_cpu']) / lifecycles * 1000:.1f} ms vs"
               f" {result['small_cpu'] * 1000:.1f} ms)",
               f"{cpu_ratio:.2f}x", "<= 1.2x", cpu_ratio <= 1.2)  # fmt: skip
        rss = result["max_rss_mb"]
        record("scale", f"{lifecycles} concurrent lifecycles, {limit}: peak RSS",
               f"{rss:.0f} MB", "<= 250 MB", rss <= 250)  # fmt: skip
        failed = f"{result['failures']}" + (
            f" (first: {result['first_failure']})" if result["failures"] else ""
        )
        record("scale", f"{lifecycles} concurrent lifecycles, {limit}: failures", failed, "0",
               result["failures"] == 0)  # fmt: skip
    plain = results.get((None, None))
    if plain is not None:
        shares = {
            list_by: _list_share(lifecycles, plain, results[None, list_by], list_by)
            for list_by in ("client", "raw")
            if (None, list_by) in results
        }
        if len(shares) == 2:
            ratio = shares["client"] / max(shares["raw"], 1e-9)
            record("scale", f"{lifecycles} concurrent lifecycles: the list's own CPU (client +"
                   f" emulator) per lifecycle, list_sessions() vs raw httpx GET + .json()"
                   f" ({shares['client'] * 1000:.1f} ms vs {shares['raw'] * 1000:.1f} ms)",
                   f"{ratio:.2f}x", "report", True)  # fmt: skip


def _list_share(
    lifecycles: int, plain: dict[str, Any], listing: dict[str, Any], list_by: str
) -> float:
    """The list's own CPU per lifecycle at N (returned, in seconds), and per session it
    returned at N and at 10: the difference of the runs with and without a list (separate
    children, so only roughly)."""
    big = (
        listing["cpu"] + listing["emulator_cpu"] - plain["cpu"] - plain["emulator_cpu"]
    ) / lifecycles
    small = listing["small_cpu"] - plain["small_cpu"]
    per_session = {
        "big": big / max(listing["listed"], 1) * 1e6,
        "small": small / max(listing["small_listed"], 1) * 1e6,
    }
    by = "list_sessions()" if list_by == "client" else "raw httpx GET + .json()"
    record("scale", f"{lifecycles} concurrent lifecycles: the list's own CPU (client +"
           f" emulator) per lifecycle, by {by}, {big * 1000:.1f} ms for"
           f" {listing['listed']:.0f} sessions vs {small * 1000:.2f} ms for"
           f" {listing['small_listed']:.0f} in batches of 10; per session listed",
           f"{per_session['big']:.1f} vs {per_session['small']:.1f} us",
           "report", True)  # fmt: skip
    return float(big)


# --------------------------------------------------------------------------- list


async def bench_list(rounds: int, sessions: int, per_round: int) -> None:
    """Our list_sessions() against raw httpx GET + .json() of the same pages, interleaved."""
    print("== list", flush=True)
    from arr_prefect.client import ArrClient

    with emulator_served() as served:
        url = served.url
        token = await _token(url)
        await _fill(url, token, sessions)
        for api_version in ("v1", "2021-01-01"):
            lister = RawLister(url, token)
            arr = ArrClient(_settings(url, api_version))
            raw = functools.partial(lister.count, api_version)

            async def ours(arr: Any = arr) -> int:
                return len(await arr.list_sessions())

            for warm in (raw, ours, raw, ours):  # warm: connections, token
                if await warm() != sessions:
                    raise RuntimeError(f"{api_version}: a list did not return {sessions}")
            ratios, cpu_ratios, ours_ms, raw_ms = [], [], [], []
            for _ in range(rounds):
                pairs = []
                # CPU is summed over the round: the emulator's is read from /proc in clock
                # ticks (10 ms), coarser than one call.
                round_cpu = {"raw": 0.0, "ours": 0.0}
                for index in range(per_round):
                    walls = {}
                    order: list[tuple[str, Callable[[], Awaitable[int]]]] = [
                        ("raw", raw),
                        ("ours", ours),
                    ]
                    for name, call in order if index % 2 else order[::-1]:
                        served_cpu, cpu = served.cpu_seconds(), time.process_time()
                        start = time.perf_counter()
                        await call()
                        walls[name] = time.perf_counter() - start
                        round_cpu[name] += (
                            time.process_time() - cpu + served.cpu_seconds() - served_cpu
                        )
                    pairs.append(walls["ours"] / walls["raw"])
                    ours_ms.append(walls["ours"] * 1000)
                    raw_ms.append(walls["raw"] * 1000)
                ratios.append(statistics.median(pairs))
                cpu_ratios.append(round_cpu["ours"] / max(round_cpu["raw"], 1e-9))
            body = (await lister.first_page(api_version)).content
            await lister.http.aclose()
            await arr.aclose()
            _parse_floor(api_version, body, rounds)
            ratio, spread = summary(ratios)
            record("list", f"list_sessions() of {sessions} vs raw httpx GET + .json(),"
                   f" {api_version}, wall ({statistics.median(ours_ms):.1f} ms vs"
                   f" {statistics.median(raw_ms):.1f} ms)",
                   f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2, spread)  # fmt: skip
            # On a loaded machine a call's wall time is mostly waiting for a core; the CPU
            # both processes spent on it (client + emulator, which take turns on a call)
            # is what the same call costs on an idle one.
            ratio, spread = summary(cpu_ratios)
            record("list", f"list_sessions() of {sessions} vs raw httpx GET + .json(),"
                   f" {api_version}, CPU of client + emulator (a round's total)",
                   f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2, spread)  # fmt: skip


def _parse_floor(api_version: str, body: bytes, rounds: int) -> None:
    """What reading one list answer costs (no HTTP): our parse against ``json.loads``, and
    the floor of any pydantic reading, a typed dict per item (no model, no conversion)."""
    from pydantic_core import SchemaValidator, core_schema

    from arr_prefect.dialects import DIALECTS

    dialect = DIALECTS[api_version]
    floor = SchemaValidator(
        core_schema.typed_dict_schema(
            {
                "sessions": core_schema.typed_dict_field(
                    core_schema.list_schema(
                        core_schema.typed_dict_schema(
                            {
                                name: core_schema.typed_dict_field(
                                    core_schema.any_schema(),
                                    required=False,
                                    validation_alias=field.get("validation_alias"),
                                )
                                for name, field in dialect.wire_fields.items()
                            }
                        )
                    )
                )
            }
        )
    )
    calls: dict[str, Callable[[], object]] = {
        "json.loads": lambda: json.loads(body),
        "parse_page": lambda: dialect.parse_page(body),
        "typed dicts": lambda: floor.validate_json(body),
    }
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds * 4):
        for name, call in calls.items():
            start = time.process_time()
            for _ in range(10):
                call()
            cpu[name].append((time.process_time() - start) / 10 * 1000)
    ms = {name: statistics.median(values) for name, values in cpu.items()}
    count = len(dialect.parse_page(body)[0])
    record("list", f"reading one {api_version} answer of {count} sessions (no HTTP), CPU:"
           f" parse_page {ms['parse_page']:.2f} ms vs json.loads {ms['json.loads']:.2f} ms;"
           f" pydantic's floor (a typed dict per item, no model)"
           f" {ms['typed dicts'] / ms['json.loads']:.2f}x",
           f"{ms['parse_page'] / ms['json.loads']:.2f}x", "report", True)  # fmt: skip


# --------------------------------------------------------------------------- flows


async def bench_flows(
    pairs: int,
    rounds: int,
    sessions: int,
    with_quota: bool,
    postgres: bool = False,
    limit_only: bool = False,
    flow_calls: int = 0,
) -> None:
    where = "PostgreSQL" if postgres else "SQLite"
    print(f"== flows (starting a Prefect server on {where})", flush=True)
    from prefect import flow, get_client, task
    from prefect.cache_policies import NO_CACHE

    from arr_prefect.flows.render_batch import render_batch
    from arr_prefect.flows.session import rendering_session

    # Declared as the project's own tasks are (no cache key to compute, no result kept),
    # so that the ratio compares per-run overhead, not Prefect's default caching.
    @task(cache_policy=NO_CACHE, persist_result=False)
    async def noop() -> None:
        return None

    @flow
    async def five_tasks() -> None:
        for _ in range(5):
            await noop()

    from arr_prefect import tasks

    @flow
    async def many_sessions(count: int) -> None:
        async def one() -> None:
            async with rendering_session("standard", lease=timedelta(minutes=10)):
                pass

        await asyncio.gather(*(one() for _ in range(count)))

    @flow
    async def many_bare(count: int) -> None:
        """The same sessions through the same tasks, without rendering_session around them."""

        async def one() -> None:
            session = await tasks.create_session(lease=timedelta(minutes=10))
            await tasks.wait_until_ready(session.id)
            await tasks.stop_session(session.id)

        await asyncio.gather(*(one() for _ in range(count)))

    @flow
    async def many_bare_slots(count: int) -> None:
        """The floor of the quota: many_bare plus, by hand, the slot calls rendering_session
        makes for each session (take a leased slot before the create, give it back after
        the stop), queued as it queues them (at most SLOT_CALLS_AT_ONCE at once)."""
        from prefect.client.schemas.objects import ConcurrencyLeaseHolder
        from prefect.context import FlowRunContext

        from arr_prefect.flows.quota import SLOT_CALLS_AT_ONCE

        context = FlowRunContext.get()
        assert context is not None
        assert context.flow_run is not None
        holder = ConcurrencyLeaseHolder(type="flow_run", id=context.flow_run.id)
        gate = asyncio.Semaphore(SLOT_CALLS_AT_ONCE)
        limit = os.environ["ARR_SESSION_LIMIT"]

        async with get_client() as prefect:

            async def one() -> None:
                async with gate:
                    taken = await prefect.increment_concurrency_slots_with_lease(
                        names=[limit],
                        slots=1,
                        mode="concurrency",
                        lease_duration=600,
                        holder=holder,
                    )
                session = await tasks.create_session(lease=timedelta(minutes=10))
                await tasks.wait_until_ready(session.id)
                await tasks.stop_session(session.id)
                async with gate:
                    await prefect.release_concurrency_slots_with_lease(
                        lease_id=taken.json()["lease_id"]
                    )

            await asyncio.gather(*(one() for _ in range(count)))

    server = _postgres_prefect_server() if postgres else _sqlite_prefect_server()
    with emulator_process() as url, server:
        for name, value in {
            "ARR_ACCOUNT_ID": ACCOUNT,
            "ARR_ACCOUNT_KEY": KEY,
            "ARR_SERVICE_URL": url,
            "ARR_STS_URL": url,
            "ARR_API_VERSION": "2021-01-01",
            "ARR_POLL_INTERVAL": "0.05",
        }.items():
            os.environ[name] = value

        async def batch() -> None:
            await render_batch(job_callable="builtins:id")

        if pairs > 0:
            await _flow_pairs(pairs, five_tasks, batch, where)
        if flow_calls > 0:
            await _flow_calls(flow_calls, five_tasks, batch)

        if sessions > 0:
            # As users run it (the default ARR_SESSION_LIMIT; no such limit on this server,
            # so the run asks once and holds no slot), and with the quota turned off.
            many_rounds = max(3, (rounds + 1) // 2)
            for quota in () if limit_only else ("arr-sessions-{account_id}", ""):
                os.environ["ARR_SESSION_LIMIT"] = quota
                await _many(sessions, many_rounds, quota, many_bare, many_sessions, where)
            if with_quota or limit_only:
                # A limit that exists, large enough never to make a session wait: a slot
                # taken and given back per session; beside it the same slot calls by hand.
                await _with_limit(
                    sessions, many_rounds, many_bare, many_sessions, many_bare_slots, where
                )


@contextlib.contextmanager
def _sqlite_prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@contextlib.contextmanager
def _postgres_prefect_server() -> Iterator[None]:
    """``prefect server start`` on a throwaway PostgreSQL, as the fleet test starts it
    (tests/e2e/_postgres.py; leases on disk), and this process's client pointed at it."""
    import socket
    import tempfile

    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.e2e._postgres import missing_reason, temporary_postgres

    if (reason := missing_reason()) is not None:
        raise RuntimeError(reason)

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    with tempfile.TemporaryDirectory(prefix="arr-bench-") as home:
        log = Path(home) / "postgres.log"
        with temporary_postgres(free_port(), log) as pg:
            port = free_port()
            env = {
                **os.environ,
                "PREFECT_HOME": home,
                "PREFECT_API_DATABASE_CONNECTION_URL": pg.url,
                "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
                    "prefect.server.concurrency.lease_storage.filesystem"
                ),
                "PREFECT_UI_ENABLED": "false",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
            with (Path(home) / "server.log").open("wb") as sink:
                server = subprocess.Popen(
                    [str(Path(_python()).parent / "prefect"), "server", "start",
                     "--host", "127.0.0.1", "--port", str(port)],
                    env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=home,
                )  # fmt: skip
            api = f"http://127.0.0.1:{port}/api"
            try:
                deadline = time.monotonic() + 180
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                            break
                    if server.poll() is not None or time.monotonic() > deadline:
                        tail = (Path(home) / "server.log").read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"the Prefect server did not start:\n{tail}")
                    time.sleep(0.5)
                with temporary_settings(updates={PREFECT_API_URL: api}):
                    yield
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(5)


PAIR_PAUSE_SECONDS = 1.0
"""Most real seconds of the random pause before each measured call (uniform from 0)."""


@contextlib.contextmanager
def prefect_requests_counted() -> Iterator[list[tuple[str, float]]]:
    """Every request this process sends to the Prefect API while the block runs, as
    ("METHOD /path", seconds) with IDs blanked. Prefect's own client class is wrapped, in
    this benchmark process only (httpx itself is left alone)."""
    import re

    from prefect.client.base import PrefectHttpxAsyncClient

    seen: list[tuple[str, float]] = []
    send = PrefectHttpxAsyncClient.send

    async def timed(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await send(self, request, *args, **kwargs)
        finally:
            path = re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "{id}", request.url.path)
            seen.append((f"{request.method} {path}", time.perf_counter() - start))

    PrefectHttpxAsyncClient.send = timed  # type: ignore[method-assign]  # bench only, undone below
    try:
        yield seen
    finally:
        PrefectHttpxAsyncClient.send = send  # type: ignore[method-assign]  # restored


async def _flow_calls(
    runs: int,
    five_tasks: Callable[[], Awaitable[None]],
    batch: Callable[[], Awaitable[None]],
) -> None:
    """Where render_batch's extra time goes: the Prefect API requests of ``runs`` more runs
    of each flow (interleaved, a quiet second before each), counted and timed."""
    per_flow: dict[str, dict[str, list[float]]] = {"trivial": {}, "batch": {}}
    for _ in range(runs):
        for name, run in (("trivial", five_tasks), ("batch", batch)):
            await asyncio.sleep(1.0)
            with prefect_requests_counted() as seen:
                await run()
            for what, seconds in seen:
                per_flow[name].setdefault(what, []).append(seconds)
    print(f"  Prefect API requests per run (median ms per request; {runs} runs of each):")
    print(f"    {'request':58} {'trivial':>16} {'render_batch':>16}")
    names = sorted(
        set(per_flow["trivial"]) | set(per_flow["batch"]),
        key=lambda w: -sum(per_flow["batch"].get(w, [])) - sum(per_flow["trivial"].get(w, [])),
    )
    for what in names:
        cells = []
        for name in ("trivial", "batch"):
            times = per_flow[name].get(what, [])
            cells.append(
                f"{len(times) / runs:g} x {statistics.median(times) * 1000:5.1f} ms"
                if times
                else "-"
            )
        print(f"    {what:58} {cells[0]:>16} {cells[1]:>16}")
    for name in ("trivial", "batch"):
        total = sum(sum(t) for t in per_flow[name].values()) / runs * 1000
        count = sum(len(t) for t in per_flow[name].values()) / runs
        print(f"    {name}: {count:g} requests, {total:.1f} ms of requests per run")


async def _flow_pairs(
    pairs: int,
    five_tasks: Callable[[], Awaitable[None]],
    batch: Callable[[], Awaitable[None]],
    where: str,
) -> None:
    """render_batch against the trivial flow: ``pairs`` pairs, each in a random order with
    a random pause before each call, so that the server's own stalls (its services, the
    events of the previous run) fall on either side at random. The figure is the median of
    the pairs' ratios."""
    import random

    seed = int(os.environ.get("ARR_BENCH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    for warm in (five_tasks, batch, five_tasks, batch):
        await warm()
    ratios: list[float] = []
    walls: dict[str, list[float]] = {"trivial": [], "batch": []}
    cpu: dict[str, list[float]] = {"trivial": [], "batch": []}
    for _ in range(pairs):
        order = [("trivial", five_tasks), ("batch", batch)]
        rng.shuffle(order)
        wall = {}
        for name, run in order:
            await asyncio.sleep(rng.uniform(0, PAIR_PAUSE_SECONDS))
            start, start_cpu = time.perf_counter(), time.process_time()
            await run()
            wall[name] = time.perf_counter() - start
            walls[name].append(wall[name])
            cpu[name].append(time.process_time() - start_cpu)
        ratios.append(wall["batch"] / wall["trivial"])
    ratio, spread = summary(ratios)
    quartiles = statistics.quantiles(ratios, n=4)
    record("flows", f"render_batch (no-op job) vs a flow of 5 no-op tasks, warm, {where}"
           f" server ({pairs} pairs in random order, random 0-{PAIR_PAUSE_SECONDS:g} s pauses,"
           f" seed {seed}; median walls {statistics.median(walls['batch']) * 1000:.0f} vs"
           f" {statistics.median(walls['trivial']) * 1000:.0f} ms; this process's CPU per run"
           f" {statistics.median(cpu['batch']) * 1000:.0f} vs"
           f" {statistics.median(cpu['trivial']) * 1000:.0f} ms, the server's not counted)",
           f"{ratio:.2f}x", "<= 1.3x", ratio <= 1.3,
           f"{spread}, quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}")  # fmt: skip


QUIET_SECONDS = 3.0
"""Real seconds between two measured flow runs (see _many)."""


async def _many(
    sessions: int,
    rounds: int,
    quota: str,
    many_bare: Callable[[int], Awaitable[None]],
    many_sessions: Callable[[int], Awaitable[None]],
    where: str,
    many_floor: Callable[[int], Awaitable[None]] | None = None,
) -> None:
    runs: list[tuple[str, Callable[[int], Awaitable[None]]]] = [
        ("bare", many_bare),
        ("session", many_sessions),
    ]
    if many_floor is not None:
        runs.append(("floor", many_floor))
    wall: dict[str, list[float]] = {name: [] for name, _ in runs}
    used: dict[str, list[float]] = {name: [] for name, _ in runs}
    for index in range(rounds):
        # Each round in another order (rotated, then reversed), so that none of the flows
        # always runs first.
        turn = runs[index % len(runs) :] + runs[: index % len(runs)]
        for name, run_flow in turn if index % 2 == 0 else turn[::-1]:
            # Let the Prefect server finish with the previous run's events and logs, so
            # that each run starts on an idle server rather than paying for the last one.
            await asyncio.sleep(QUIET_SECONDS)
            start, start_cpu = time.perf_counter(), time.process_time()
            await run_flow(sessions)
            wall[name].append(time.perf_counter() - start)
            used[name].append(time.process_time() - start_cpu)

    def per_session(a: str, b: str, what: dict[str, list[float]]) -> list[float]:
        return [(x - y) / sessions * 1000 for x, y in zip(what[a], what[b], strict=True)]

    own = per_session("session", "bare", wall)
    whole = [w / sessions * 1000 for w in wall["session"]]
    cpu = per_session("session", "bare", used)
    ms, spread = summary(own, "ms", 1)
    setting = {
        "": "ARR_SESSION_LIMIT='' (no quota)",
        "exists": "a session limit that exists (a slot taken and given back per session)",
    }.get(quota, f"ARR_SESSION_LIMIT={quota} (the default; no such limit on this server)")
    record("flows", f"{sessions} concurrent rendering_sessions in one flow run, {where} server,"
           f" {setting}: our own overhead per session (wall, vs the same create/wait/stop"
           f" tasks without rendering_session; whole session {statistics.median(whole):.0f} ms;"
           f" this process's CPU {statistics.median(cpu):.1f} ms more per session)",
           f"{ms:.1f} ms", "<= 50 ms", ms <= 50, spread)  # fmt: skip
    if many_floor is not None:
        floor, floor_spread = summary(per_session("floor", "bare", wall), "ms", 1)
        above, above_spread = summary(per_session("session", "floor", wall), "ms", 1)
        record("flows", f"  the floor beside it: the same slot calls made by hand (take before"
               " the create, give back after the stop), per session, vs the same tasks"
               f" without them ({where} server)",
               f"{floor:.1f} ms", "(Prefect's server)", True, floor_spread)  # fmt: skip
        record("flows", "  rendering_session above that floor, per session (our own work"
               " with the quota on, the server's slot calls taken out)",
               f"{above:.1f} ms", "<= 50 ms", above <= 50, above_spread)  # fmt: skip


async def _with_limit(
    sessions: int,
    rounds: int,
    many_bare: Callable[[int], Awaitable[None]],
    many_sessions: Callable[[int], Awaitable[None]],
    many_floor: Callable[[int], Awaitable[None]],
    where: str,
) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"arr-bench-sessions-{os.getpid()}"
    async with get_client() as prefect:
        await prefect.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=sessions * 2)
        )
    os.environ["ARR_SESSION_LIMIT"] = name
    await _many(sessions, rounds, "exists", many_bare, many_sessions, where, many_floor)


# --------------------------------------------------------------------------- main


def bench_sync(rounds: int, lifecycles: int) -> None:
    """``with rendering_session`` in a def flow vs ``async with`` in an async flow: the sync
    form drives the same async core on the package's loop thread, so its lifecycles should
    cost about the same wall time and exactly the same requests. Timed inside each flow:
    a def flow run itself costs Prefect ~1 s more than an async one (measured: an empty def
    flow 1.2 s, an empty async flow 0.25 s), which is not the session's doing."""
    print("== sync (starting a Prefect server)", flush=True)
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from arr_prefect.flows import rendering_session

    @flow
    def with_sessions(count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            with rendering_session("standard", lease=timedelta(minutes=10)):
                pass
        return time.perf_counter() - start

    @flow
    async def async_with_sessions(count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            async with rendering_session("standard", lease=timedelta(minutes=10)):
                pass
        return time.perf_counter() - start

    with (
        emulator_process() as url,
        prefect_test_harness(server_startup_timeout=180),
        asyncio.Runner() as runner,  # one loop for every async run, as a long-lived worker has
    ):
        for name, value in {
            "ARR_ACCOUNT_ID": ACCOUNT,
            "ARR_ACCOUNT_KEY": KEY,
            "ARR_SERVICE_URL": url,
            "ARR_STS_URL": url,
            "ARR_API_VERSION": "2021-01-01",
            "ARR_POLL_INTERVAL": "0.05",
        }.items():
            os.environ[name] = value
        variants: dict[str, Callable[[], float]] = {
            "with": lambda: with_sessions(lifecycles),
            "async with": lambda: runner.run(async_with_sessions(lifecycles)),
        }
        for run in variants.values():  # warm: imports, connections, token, both loops
            run()
        requests = {}
        for name, run in variants.items():
            before = sum(runner.run(_counts(url)).values())
            run()
            requests[name] = (sum(runner.run(_counts(url)).values()) - before) / lifecycles
        ratios = []
        for index in range(rounds):
            wall = {name: variants[name]() for name in list(variants)[:: -1 if index % 2 else 1]}
            ratios.append(wall["with"] / wall["async with"])
        ratio, spread = summary(ratios)
        record("sync", f"{lifecycles} lifecycles in a flow, with rendering_session (def flow)"
               " vs async with (async flow): wall", f"{ratio:.2f}x", "<= 1.1x", ratio <= 1.1,
               spread)  # fmt: skip
        record("sync", "service requests per lifecycle, with vs async with",
               f"{requests['with']:g} vs {requests['async with']:g}", "equal",
               requests["with"] == requests["async with"])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated of {ALL}")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per ratio")
    parser.add_argument("--requests", type=int, default=4000, help="per throughput trial")
    parser.add_argument("--lifecycles", type=int, default=1000, help="scale: concurrent")
    parser.add_argument("--sessions", type=int, default=200, help="flows: sessions in a run")
    parser.add_argument(
        "--pairs", type=int, default=24, help="flows: render_batch/trivial pairs (0: skip)"
    )
    parser.add_argument(
        "--flow-calls",
        type=int,
        default=0,
        metavar="RUNS",
        help="flows: also count and time the Prefect API requests of RUNS runs of each flow",
    )
    parser.add_argument(
        "--limit-only",
        action="store_true",
        help="flows: of the many-sessions rows, only the one with a limit that exists",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="flows: run the Prefect server on a throwaway PostgreSQL (as the fleet test)",
    )
    parser.add_argument("--per-round", type=int, default=60, help="client: lifecycles a round")
    parser.add_argument(
        "--with-session-quota",
        action="store_true",
        help="flows: also measure rendering_session holding a slot of a limit that exists",
    )
    parser.add_argument("--serve-hello", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scale-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--nofile", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--with-list", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw-list", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--emulator-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--list-sessions", type=int, default=1000, help="list: active sessions")
    parser.add_argument(
        "--emulator-args",
        default="",
        help="extra emulator options, e.g. '--page-size 1000' (default: the emulator as shipped)",
    )
    parser.add_argument(
        "--scale-variants",
        default="plain,nofile,list",
        help="scale: comma-separated of plain, nofile (open files <= 1024), list, rawlist"
        " (each lifecycle lists by raw httpx GET + .json(): the floor of 'list')",
    )
    args = parser.parse_args(argv)
    if args.serve_hello:
        return serve_hello()
    if args.scale_child:
        return scale_child(
            args.scale_child,
            args.lifecycles,
            args.nofile,
            args.with_list,
            args.emulator_pid,
            args.raw_list,
        )
    EMULATOR_ARGS[:] = args.emulator_args.split()
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = only - set(ALL)
    if unknown:
        parser.error(f"unknown --only parts: {sorted(unknown)}")
    variants = [v.strip() for v in args.scale_variants.split(",") if v.strip()]
    if set(variants) - set(SCALE_VARIANTS):
        parser.error(
            f"unknown --scale-variants: {sorted(set(variants) - set(SCALE_VARIANTS))}"
            f" (known: {', '.join(SCALE_VARIANTS)})"
        )
    started = time.perf_counter()
    sections: dict[str, Callable[[], object]] = {
        "emulator": lambda: asyncio.run(bench_emulator(args.rounds, args.requests)),
        "client": lambda: asyncio.run(bench_client(args.rounds, args.per_round)),
        "list": lambda: asyncio.run(bench_list(args.rounds, args.list_sessions, 30)),
        "scale": lambda: bench_scale(
            args.lifecycles,
            [SCALE_VARIANTS[v] for v in variants],
        ),
        "flows": lambda: asyncio.run(
            bench_flows(
                args.pairs,
                args.rounds,
                args.sessions,
                args.with_session_quota,
                args.postgres,
                args.limit_only,
                args.flow_calls,
            )
        ),
        "sync": lambda: bench_sync(args.rounds, 10),
    }
    if "flows" in only or "sync" in only:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    for name, run in sections.items():
        if name not in only:
            continue
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - reported as a missed goal, the rest runs
            record(name, "section failed", f"{type(exc).__name__}: {exc}"[:300], "runs", False)
    print()
    print(table())
    print()
    print(f"Machine: {machine()}. Total {time.perf_counter() - started:.0f} s.")
    missed = [row for row in ROWS if not row.ok]
    if missed:
        print(f"{len(missed)} goal(s) missed.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
