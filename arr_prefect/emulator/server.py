"""Serving the emulator over real HTTP with uvicorn: in a background thread or in the foreground.

The listening socket is bound (and listening) before uvicorn starts, so the real port is
known at once when port 0 was asked, and a client that connects before uvicorn's loop
runs simply waits in the backlog.

uvicorn speaks HTTP/1.1 through a subclass of its h11 protocol that adds what the
service's front end did (:class:`FrontEndLimits`): read deadlines for request heads and
bodies, a cap on open connections, and the service's JSON error (with ``MS-CV``, in the
request log) for what never reaches the app: malformed HTTP (400) and late heads (408).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from types import FrameType
from typing import ClassVar

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from arr_prefect.emulator.app import EmulatorApp
from arr_prefect.emulator.wire import EmulatedConnectionDrop, add_service_headers, error_response

__all__ = [
    "MAX_HEAD_BYTES",
    "FrontEndLimits",
    "base_url_of",
    "bind_socket",
    "run_server",
    "serve_in_thread",
]

_STARTUP_TIMEOUT = 10.0
_SHUTDOWN_TIMEOUT = 10.0


class _HideEmulatedDrops(logging.Filter):
    """uvicorn logs an app exception with a traceback; an injected drop is not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], EmulatedConnectionDrop))


_drop_filter = _HideEmulatedDrops()
logging.getLogger("uvicorn.error").addFilter(_drop_filter)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontEndLimits:
    """What the service's front end bounded, so that no client can hold the emulator.

    - ``header_timeout``: the most time from a connection's start (or the end of its
      previous answer) to the end of a request's head. Half-open connections that send
      a few header bytes, or none, are closed (a 408 if they sent anything).
    - ``body_timeout``: the most silence while a request body is being read; the request
      is then abandoned as a client hang-up (counted ``disconnected``).
    - ``keep_alive_timeout``: how long an idle keep-alive connection is kept.
    - ``max_connections``: the most open connections; a new one beyond it closes the
      oldest connection that is waiting for a request (never one being answered).
      ``None``: derived from the process's descriptor limit, so connections can never
      use up the descriptors (300 idle connections under ``ulimit -n 256`` used to make
      a normal request time out).
    """

    # 5 s, as the keep-alive: an idle or half-open connection is gone within 5 s either
    # way (Kestrel allows a head 30 s, but a developer's emulator has few descriptors to
    # spare, and no real client takes more than milliseconds to send one).
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_connections: int | None = None

    def connection_cap(self) -> int:
        """:attr:`max_connections`, or what the soft ``RLIMIT_NOFILE`` leaves room for."""
        if self.max_connections is not None:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return _DEFAULT_MAX_CONNECTIONS
        # Room for the listener, logs, the ledger's clients and Python's own descriptors.
        return max(8, min(_DEFAULT_MAX_CONNECTIONS, (soft - _RESERVED_DESCRIPTORS) * 3 // 4))


_DEFAULT_MAX_CONNECTIONS = 1000
MAX_HEAD_BYTES = 32 * 1024
"""The largest request line plus headers taken (431 beyond), as a front end bounds them."""
_RESERVED_DESCRIPTORS = 32


@dataclass
class _FrontEnd:
    """What the connections of one server share: the app, the limits, who is connected."""

    app: ASGIApp
    limits: FrontEndLimits
    cap: int
    open_connections: dict[_FrontEndProtocol, None] = field(default_factory=dict)
    """Insertion order: oldest first."""


class _FrontEndProtocol(H11Protocol):
    """uvicorn's h11 protocol with a front end's limits and the service's JSON errors.

    One subclass per server (:func:`_protocol_class`) carries that server's
    :class:`_FrontEnd`: uvicorn builds a protocol per connection from a class alone.
    """

    front_end: ClassVar[_FrontEnd]
    _timer: asyncio.TimerHandle | None = None
    _phase: str | None = None
    _head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvicorn narrows the parameter to asyncio.Transport; asyncio passes one.
        super().connection_made(transport)  # type: ignore[arg-type]
        self.front_end.open_connections[self] = None
        self._phase = None
        self._rearm()
        if len(self.front_end.open_connections) > self.front_end.cap:
            self._evict()

    def connection_lost(self, exc: Exception | None) -> None:
        self.front_end.open_connections.pop(self, None)
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            # h11's own bound applies only to a head still incomplete after a read, and
            # asyncio reads 256 KiB at a time: measure the head here.
            self._head += data[: MAX_HEAD_BYTES + 4 - len(self._head)]
            end = self._head.find(b"\r\n\r\n")
            if end > MAX_HEAD_BYTES or (end == -1 and len(self._head) > MAX_HEAD_BYTES):
                self._answer_and_close(
                    431,
                    "RequestHeaderFieldsTooLarge",
                    f"The request head is larger than {MAX_HEAD_BYTES} bytes.",
                )
                return
        try:
            super().data_received(data)
        except UnicodeDecodeError:
            # uvicorn decodes the target as ASCII; h11 lets other bytes through.
            self._answer_and_close(400, "BadRequest", "The request URL is not valid.")
            return
        self._rearm(refresh=True)

    def _should_upgrade(self) -> bool:
        # The service speaks plain HTTPS: an `Upgrade` (WebSocket, h2c) is ignored, as
        # RFC 9110 §7.8 lets a server do, and the request answered as any other.
        # (uvicorn would answer a WebSocket upgrade with a plain-text 500 or 400.)
        return False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head = b""
        self._rearm()

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(
            400, "BadRequest", "The request is not valid HTTP/1.1 (or its head is too large)."
        )

    # --- timers ---------------------------------------------------------------------

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _rearm(self, *, refresh: bool = False) -> None:
        """Arm the read deadline that fits what the client owes us now."""
        if self.transport is None or self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # The head's deadline is absolute: trickling bytes does not extend it.
            if self._phase != "head":
                self._phase = "head"
                self._cancel()
                self._timer = self.loop.call_later(
                    self.front_end.limits.header_timeout, self._head_late
                )
        elif state is h11.SEND_BODY and self.cycle is not None and self.cycle.more_body:
            if self._phase != "body" or refresh:
                self._phase = "body"
                self._cancel()
                self._timer = self.loop.call_later(
                    self.front_end.limits.body_timeout, self._body_late
                )
        else:
            self._phase = None
            self._cancel()

    def _head_late(self) -> None:
        self._timer = None
        if self._head:
            self._answer_and_close(
                408, "RequestTimeout", "The request head did not arrive in time."
            )
        else:
            self.transport.close()

    def _body_late(self) -> None:
        # The app is waiting in receive(): closing makes it see a disconnect.
        self._timer = None
        _log.info("arr-emulator: closed a connection whose request body stalled")
        self.transport.close()

    def _evict(self) -> None:
        # A closed transport reports connection_lost only on a later loop turn: drop it
        # from the count now, or every newcomer would "evict" the same one.
        victim = next(
            (c for c in self.front_end.open_connections if c is not self and c._phase == "head"),
            self,
        )
        # (No other connection waiting for a request: all are being answered, and the
        # newcomer is the one refused.)
        self.front_end.open_connections.pop(victim, None)
        victim._cancel()
        victim.transport.close()

    def _answer_and_close(self, status: int, code: str, message: str) -> None:
        self._cancel()
        if not self.transport.is_closing():
            self.transport.write(_raw_error(self.front_end.app, status, code, message))
            self.transport.close()


def _protocol_class(app: ASGIApp, limits: FrontEndLimits) -> type[H11Protocol]:
    """A :class:`_FrontEndProtocol` for one server."""

    class _ServerProtocol(_FrontEndProtocol):
        front_end = _FrontEnd(app, limits, limits.connection_cap())

    return _ServerProtocol


def _raw_error(app: ASGIApp, status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error answer written by the protocol layer (no ASGI request exists),
    shaped and logged as the app answers: JSON, MS-CV and the service headers."""
    if isinstance(app, EmulatorApp):  # (a benchmark serves other apps the same way)
        app.record_unrouted(status)
    response = error_response(status, code, message, headers={"Connection": "close"})
    add_service_headers(response)
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode("ascii")]
    head += [name + b": " + value for name, value in response.raw_headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + bytes(response.body)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free port).

    Its connections have ``TCP_NODELAY`` set. Without it, an answer written in two pieces
    (uvicorn writes the head, then the body) waits for the client's delayed ACK: 40 ms on
    every request on Linux loopback. asyncio sets ``TCP_NODELAY`` on an accepted socket only
    when its protocol number says TCP, which a socket created with protocol 0 does not, so
    the protocol is named explicitly; the option is also set on the listening socket, from
    which Linux's accepted sockets inherit it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def base_url_of(sock: socket.socket) -> str:
    """``http://host:port`` for a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising the signal after a graceful shutdown.

    uvicorn re-raises SIGINT/SIGTERM once it has shut down (so the process dies of the
    signal); the emulator's CLI wants a clean exit status 0 instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.should_exit = True


def _config(
    app: ASGIApp, *, log_level: str | None, access_log: bool, limits: FrontEndLimits | None
) -> uvicorn.Config:
    limits = limits or FrontEndLimits()
    # log_config=None: do not let uvicorn reconfigure the host process's logging.
    return uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=2,
        http=_protocol_class(app, limits),
        ws="none",
        timeout_keep_alive=max(1, round(limits.keep_alive_timeout)),
        # Accept no faster than connections can be looked at: the cap applies per accept.
        backlog=128,
    )


def run_server(
    app: ASGIApp,
    sock: socket.socket,
    *,
    log_level: str | None = "info",
    access_log: bool = False,
    limits: FrontEndLimits | None = None,
) -> None:
    """Serve on ``sock`` in this thread until SIGINT/SIGTERM, then return.

    ``access_log`` logs a line per request (``arr-emulator --access-log``); it is off by
    default because formatting and writing that line costs more than answering.
    """
    server = _Server(_config(app, log_level=log_level, access_log=access_log, limits=limits))
    server.run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: FrontEndLimits | None = None,
) -> Iterator[str]:
    """Serve ``app`` on ``host:port`` in a daemon thread; yield its base URL; stop on exit."""
    sock = bind_socket(host, port)
    server = _Server(_config(app, log_level=None, access_log=False, limits=limits))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="arr-emulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("arr-emulator's server thread ended before it started")
            if time.monotonic() > deadline:
                raise RuntimeError(f"arr-emulator did not start within {_STARTUP_TIMEOUT} s")
            time.sleep(0.005)
        yield base_url_of(sock)
    finally:
        server.should_exit = True
        thread.join(_SHUTDOWN_TIMEOUT)
        sock.close()
