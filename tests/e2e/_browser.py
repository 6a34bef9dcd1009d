"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, with the
``websockets`` client Prefect already brings: no Playwright, no browser download.

:class:`Browser` starts Chromium with a fresh profile and ``--remote-debugging-port=0``,
reads the port it chose from ``DevToolsActivePort``, opens one page and offers the few
calls the UI tests need: navigate, read the page's text, wait for a text, take a
screenshot, and the bodies of the API responses the page fetched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

from tests.e2e._stack import kill_process_group

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
]


def chromium_binary() -> str | None:
    """Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium page over CDP (flattened target sessions)."""

    def __init__(self, ws: Any, session_id: str) -> None:
        self._ws = ws
        self._session = session_id
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.responses: dict[str, str] = {}
        """requestId -> URL of every response the page received."""
        self._finished: set[str] = set()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            if "id" in message and message["id"] in self._pending:
                self._pending.pop(message["id"]).set_result(message)
                continue
            method = message.get("method")
            params = message.get("params", {})
            if method == "Network.responseReceived":
                self.responses[params["requestId"]] = params["response"]["url"]
            elif method == "Network.loadingFinished":
                self._finished.add(params["requestId"])

    async def send(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send a CDP command (to the page unless ``session`` is False); its result."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send(json.dumps(message))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def text(self) -> str:
        """The page's visible text."""
        result = await self.send(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
        )
        return str(result.get("result", {}).get("value", ""))

    async def wait_for_text(self, *needles: str, timeout: float = 60) -> str:
        """Until the page's text contains every needle; the text (or a timeout error)."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.text()
            if all(n in text for n in needles):
                return text
            await asyncio.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise TimeoutError(f"page never showed {missing}; it shows:\n{text[:3000]}")

    async def response_bodies(self, url_part: str) -> list[str]:
        """Bodies of the finished responses whose URL contains ``url_part``."""
        bodies = []
        for request_id, url in list(self.responses.items()):
            if url_part in url and request_id in self._finished:
                with contextlib.suppress(RuntimeError):
                    result = await self.send("Network.getResponseBody", requestId=request_id)
                    body = result.get("body", "")
                    if result.get("base64Encoded"):
                        body = base64.b64decode(body).decode(errors="replace")
                    bodies.append(body)
        return bodies

    async def screenshot(self, path: Path) -> None:
        result = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(result["data"]))


@contextlib.asynccontextmanager
async def open_browser(binary: str, log: Path) -> AsyncIterator[Browser]:
    """Chromium with a fresh profile in a temporary directory, ended (group) at exit."""
    with tempfile.TemporaryDirectory(prefix="arr-chromium-") as profile:
        with log.open("ab") as sink:
            # Popen returns at once: chromium is a long-lived child we talk to over CDP.
            process = subprocess.Popen(  # noqa: ASYNC220
                [
                    binary,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start; see {log}")
                await asyncio.sleep(0.2)
            port, path = port_file.read_text().splitlines()[:2]
            async with websockets.connect(
                f"ws://127.0.0.1:{port}{path}", max_size=64 * 1024 * 1024
            ) as ws:
                target = await _command(ws, "Target.createTarget", url="about:blank")
                attached = await _command(
                    ws, "Target.attachToTarget", targetId=target["targetId"], flatten=True
                )
                browser = Browser(ws, attached["sessionId"])
                try:
                    await browser.send("Network.enable")
                    await browser.send("Page.enable")
                    yield browser
                finally:
                    browser._reader.cancel()
        finally:
            kill_process_group(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


async def _command(ws: Any, method: str, **params: Any) -> dict[str, Any]:
    """A browser-level command before the page session's reader runs."""
    await ws.send(json.dumps({"id": 0, "method": method, "params": params}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message.get("id") == 0:
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result
