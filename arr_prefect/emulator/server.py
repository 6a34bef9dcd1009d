"""Serving the emulator over real HTTP with uvicorn: in a background thread or in the foreground.

The listening socket is bound (and listening) before uvicorn starts, so the real port is
known at once when port 0 was asked, and a client that connects before uvicorn's loop
runs simply waits in the backlog.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from arr_prefect.emulator.app import EmulatedConnectionDrop

__all__ = ["base_url_of", "bind_socket", "run_server", "serve_in_thread"]

_STARTUP_TIMEOUT = 10.0
_SHUTDOWN_TIMEOUT = 10.0


class _HideEmulatedDrops(logging.Filter):
    """uvicorn logs an app exception with a traceback; an injected drop is not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], EmulatedConnectionDrop))


_drop_filter = _HideEmulatedDrops()
logging.getLogger("uvicorn.error").addFilter(_drop_filter)


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


def _config(app: ASGIApp, *, log_level: str | None, access_log: bool) -> uvicorn.Config:
    # log_config=None: do not let uvicorn reconfigure the host process's logging.
    return uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=2,
    )


def run_server(
    app: ASGIApp, sock: socket.socket, *, log_level: str | None = "info", access_log: bool = False
) -> None:
    """Serve on ``sock`` in this thread until SIGINT/SIGTERM, then return.

    ``access_log`` logs a line per request (``arr-emulator --access-log``); it is off by
    default because formatting and writing that line costs more than answering.
    """
    server = _Server(_config(app, log_level=log_level, access_log=access_log))
    server.run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` on ``host:port`` in a daemon thread; yield its base URL; stop on exit."""
    sock = bind_socket(host, port)
    server = _Server(_config(app, log_level=None, access_log=False))
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
