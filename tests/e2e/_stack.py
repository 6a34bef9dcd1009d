"""The end-to-end stack on loopback: a Prefect server, a process work pool and worker, the
project's deployments, and an ``arr-emulator``, each a real process in its own process
group, all bounded in time and killed at the end.

The worker runs as on a machine with no checkout: in an empty directory, in a fresh
virtual environment where only the project's built wheel is installed (``_wheel.py``),
started with the README's worker command; the work pool and the deployments are created
with the README's commands too (``readme_deploy_commands``), from the repository's root.

Time: the emulator runs ``TIME_SCALE`` times faster than real time, and the flow-run
processes keep the same pace through ``ARR_TIME_SCALE`` (the process default clock), so a
rolling lease of ``LEASE_MINUTES`` emulated minutes lasts ``LEASE_MINUTES * 60 /
TIME_SCALE`` real seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY
from tests.e2e._wheel import WheelVenv, wheel_venv

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent
"""This (the developer's) venv: the server and the emulator run from it."""

TIME_SCALE = 20.0
"""Emulated seconds per real second, for the emulator and the flow-run processes."""
LEASE_MINUTES = 2.0
"""The runs' rolling lease (emulated): 6 real seconds, renewed every 3."""
STARTUP_SECONDS = 30.0
"""Emulated Starting -> Ready delay: 1.5 real seconds."""
POLL_INTERVAL = 5.0
"""Emulated seconds between the flows' status polls (the docs ask 5-10 s): 0.25 real s."""
POOL = "arr-process"

# Real-time bounds of the stack's own start-up, generous for a loaded 2-core machine.
SERVER_START_TIMEOUT = 150.0
CLI_TIMEOUT = 120.0
EMULATOR_START_TIMEOUT = 30.0
WORKER_START_TIMEOUT = 60.0
KILL_GRACE = 5.0

T = TypeVar("T")


class StackError(RuntimeError):
    """A process of the stack did not start, or a wait ran past its deadline."""


WORKER_COMMAND_PREFIX = ("prefect", "worker", "start")


def readme_deploy_commands(readme: Path = REPO_ROOT / "docs" / "deployments.md") -> list[list[str]]:
    """The commands of the Deployments page's first ``bash`` block, as argument
    lists (comments dropped): the work pool, the deploy, and the worker start."""
    text = readme.read_text()
    section = re.search(r"^# Deployments.*?^```bash\n(.*?)^```", text, re.M | re.S)
    if section is None:
        raise StackError(f"{readme} has no ```bash block under a '# Deployments' heading")
    commands = [shlex.split(line, comments=True) for line in section[1].splitlines()]
    return [argv for argv in commands if argv]


def _resolve(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` with its program looked up on ``env``'s PATH, as a shell would."""
    program = shutil.which(argv[0], path=env.get("PATH"))
    if program is None:
        raise StackError(f"{argv[0]!r} is not on the PATH {env.get('PATH')!r}")
    return [program, *argv[1:]]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` of a log file, for failure messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:])


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    describe: Callable[[], str] = lambda: "",
    step: float = 0.2,
) -> T:
    """Call ``probe`` until it returns something other than None, or fail after ``timeout``
    real seconds with a message saying what was awaited and the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}; {describe()}")
        time.sleep(step)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_process_group(pgid: int, grace: float = KILL_GRACE) -> None:
    """SIGTERM a process group, then SIGKILL it if it outlives ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


@dataclass
class Process:
    """A process of the stack, leader of its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        """End the whole process group (bounded) and reap the leader."""
        kill_process_group(self.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=KILL_GRACE)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def _clean_environment() -> dict[str, str]:
    """This process's environment without any developer's PREFECT_*/ARR_* settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "ARR_"))
    }


@dataclass
class Stack:
    """Handles on the running stack, and the processes to end at the end."""

    workdir: Path
    venv: WheelVenv | None = None
    """Where the worker runs: only the built wheel installed (built when first needed)."""
    api_url: str = ""
    emulator_url: str = ""
    processes: dict[str, Process] = field(default_factory=dict)
    flow_run_pids: set[int] = field(default_factory=set)
    """Flow-run process groups seen by the tests: killed at teardown if still alive
    (a flow run orphaned by a killed worker outlives it)."""
    worker_starts: int = 0
    emulator_args: list[str] = field(default_factory=list)
    """Extra ``arr-emulator`` options (the fleet test's ``--max-sessions``)."""

    # --- environments ---------------------------------------------------------------

    @property
    def prefect_env(self) -> dict[str, str]:
        """Environment of every Prefect process: a private home, loopback server, quiet."""
        env = _clean_environment()
        env.update(
            {
                "PREFECT_HOME": str(self.workdir / "prefect-home"),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_CLI_PROMPT": "false",
                "PREFECT_LOGGING_LEVEL": "INFO",
                # Only the runs the tests create: the reaper's schedule must not race them.
                "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                # Events become readable a second after they are emitted, not five.
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
            }
        )
        return env

    def ensure_venv(self) -> WheelVenv:
        """The wheel-only venv, built (wheel and fresh venv, timed) on first use."""
        if self.venv is None:
            self.venv = wheel_venv(self.workdir / "wheel-venv", log=self.workdir / "wheel.log")
        return self.venv

    @property
    def user_env(self) -> dict[str, str]:
        """``prefect_env`` in a shell where the wheel-only venv is activated: what a user
        who ran ``pip install arr-prefect`` types the README's commands into."""
        return self.ensure_venv().env(self.prefect_env)

    @property
    def worker_env(self) -> dict[str, str]:
        """What flow runs (and the hooks Prefect runs after a cancel or crash) inherit:
        the wheel-only venv and the ARR_* settings, nothing pointing at the checkout."""
        env = self.user_env
        env.update(
            {
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                "ARR_SERVICE_URL": self.emulator_url,
                "ARR_STS_URL": self.emulator_url,
                "ARR_ACCOUNT_ID": DEFAULT_ACCOUNT_ID,
                "ARR_ACCOUNT_KEY": DEFAULT_ACCOUNT_KEY,
                "ARR_TIME_SCALE": f"{TIME_SCALE:g}",
                "ARR_POLL_INTERVAL": f"{POLL_INTERVAL:g}",
            }
        )
        return env

    # --- processes ------------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        *,
        cwd: Path,
        stdout_pipe: bool = False,
    ) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as sink:
            popen = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else sink,
                stderr=sink,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.processes[name] = process
        return process

    def _run_cli(
        self, argv: list[str], *, cwd: Path, what: str, env: Mapping[str, str] | None = None
    ) -> None:
        log = self.workdir / "cli.log"
        with log.open("ab") as sink:
            sink.write(f"\n$ {' '.join(argv)}\n".encode())
            sink.flush()
            try:
                done = subprocess.run(
                    argv,
                    env=dict(env if env is not None else self.prefect_env),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    timeout=CLI_TIMEOUT,
                    check=False,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired:
                raise StackError(f"{what} took over {CLI_TIMEOUT:.0f}s:\n{tail(log)}") from None
        if done.returncode != 0:
            raise StackError(f"{what} exited {done.returncode}:\n{tail(log)}")

    def start_emulator(self) -> None:
        """``arr-emulator --port 0``; its first stdout line says where it listens."""
        process = self._spawn(
            "emulator",
            [
                str(BIN_DIR / "arr-emulator"),
                "--port",
                "0",
                "--time-scale",
                f"{TIME_SCALE:g}",
                "--startup-seconds",
                f"{STARTUP_SECONDS:g}",
                "--log-level",
                "warning",
                *self.emulator_args,
            ],
            _clean_environment(),
            cwd=self.workdir,
            stdout_pipe=True,
        )
        assert process.popen.stdout is not None
        stdout = process.popen.stdout
        first: list[bytes] = []
        reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(EMULATOR_START_TIMEOUT)
        line = first[0].decode().strip() if first else ""
        prefix = "arr-emulator listening on "
        if not line.startswith(prefix):
            raise StackError(
                f"arr-emulator did not announce its URL within {EMULATOR_START_TIMEOUT:.0f}s"
                f" (got {line!r}):\n{tail(process.log)}"
            )
        self.emulator_url = line.removeprefix(prefix)

    def start_server(self, port: int = 0, settings: Mapping[str, str] | None = None) -> None:
        """``prefect server start`` on loopback: on ``port``, or a free one (SQLite in the
        private home unless ``settings`` name another database)."""
        port = port or free_port()
        self.api_url = f"http://127.0.0.1:{port}/api"
        env = self.prefect_env
        env.update({"PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)})
        env.update(settings or {})
        self._spawn(
            "server",
            [
                str(BIN_DIR / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env,
            cwd=self.workdir,
        )

    def wait_for_server(self) -> None:
        server = self.processes["server"]

        def healthy() -> bool | None:
            if not server.alive():
                raise StackError(f"prefect server exited:\n{tail(server.log)}")
            try:
                return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200 or None
            except httpx.HTTPError:
                return None

        wait_for(
            healthy,
            timeout=SERVER_START_TIMEOUT,
            what="the Prefect server's /health",
            describe=lambda: f"server log:\n{tail(server.log)}",
            step=0.25,
        )

    def deploy(self) -> None:
        """The README's commands before the worker's (create the work pool, ``prefect
        --no-prompt deploy --all``), as written, from the repository's root where
        prefect.yaml is, in the wheel-only venv."""
        env = self.user_env
        for argv in readme_deploy_commands():
            if tuple(argv[:3]) == WORKER_COMMAND_PREFIX:
                continue
            self._run_cli(_resolve(argv, env), cwd=REPO_ROOT, what=shlex.join(argv), env=env)

    def worker_command(self, name: str) -> list[str]:
        """The README's worker command, plus ``--name`` so the stack can tell its
        workers apart."""
        [argv] = [a for a in readme_deploy_commands() if tuple(a[:3]) == WORKER_COMMAND_PREFIX]
        return [*argv, "--name", name]

    def start_worker(self) -> None:
        """The README's ``prefect worker start`` in a new, empty directory, in the
        wheel-only venv: the flow runs and their hooks can only find the code in the
        installed package."""
        self.worker_starts += 1
        name = f"worker-{self.worker_starts}"
        cwd = self.workdir / name
        cwd.mkdir(exist_ok=True)
        env = self.worker_env
        self._spawn(name, _resolve(self.worker_command(name), env), env, cwd=cwd)
        self.processes["worker"] = self.processes[name]

    def replace_worker(self) -> None:
        """End the current worker (if still alive) and start another one."""
        self.processes["worker"].stop()
        self.start_worker()
        self.wait_for_worker()

    def wait_for_worker(self) -> None:
        """Until the current worker has announced itself to the server (it polls then)."""
        worker = self.processes["worker"]

        def online() -> bool | None:
            if not worker.alive():
                raise StackError(f"the worker exited:\n{tail(worker.log)}")
            try:
                response = httpx.post(
                    f"{self.api_url}/work_pools/{POOL}/workers/filter", json={}, timeout=5
                )
                response.raise_for_status()
            except httpx.HTTPError:
                return None  # a server slow to answer on a loaded machine: ask again
            names = {w["name"] for w in response.json() if w.get("status") == "ONLINE"}
            return True if worker.name in names else None

        wait_for(
            online,
            timeout=WORKER_START_TIMEOUT,
            what=f"worker {worker.name} to come online",
            describe=lambda: f"worker log:\n{tail(worker.log)}",
            step=0.5,
        )

    def _flow_run_pids_from_server(self) -> set[int]:
        """The infrastructure PIDs of every flow run the server knows (best effort)."""
        if not self.api_url:
            return set()
        try:
            response = httpx.post(f"{self.api_url}/flow_runs/filter", json={}, timeout=5)
            response.raise_for_status()
        except httpx.HTTPError:
            return set()
        pids = set()
        for run in response.json():
            pid = str(run.get("infrastructure_pid") or "").rsplit(":", 1)[-1]
            if pid.isdigit():
                pids.add(int(pid))
        return pids

    def stop(self) -> None:
        """End every process group the stack started, flow runs first (bounded): a run
        orphaned by a killed worker, or left behind by a failed test, outlives its worker."""
        for pid in sorted(self.flow_run_pids | self._flow_run_pids_from_server()):
            if _is_alive(pid):
                kill_process_group(pid)
        for name in ("worker", *sorted(self.processes)):
            process = self.processes.get(name)
            if process is not None:
                process.stop()  # ends the group (a dead worker's hook runners too), reaps

    # --- the emulator's accounting view ---------------------------------------------

    def ledger(self) -> dict[str, Any]:
        """``GET /_emulator/ledger``: every session, its billing, and ``running``."""
        response = httpx.get(f"{self.emulator_url}/_emulator/ledger", timeout=10)
        response.raise_for_status()
        ledger: dict[str, Any] = response.json()
        return ledger

    def emulated_now(self) -> tuple[float, float]:
        """The emulator's time and the local wall-clock time it corresponds to."""
        before = time.time()
        ledger = self.ledger()
        after = time.time()
        return parse_time(ledger["time"]), (before + after) / 2


def parse_time(text: str) -> float:
    """An ISO-8601 instant from the emulator or Prefect, as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def session_entry(ledger: Mapping[str, Any], session_id: str) -> dict[str, Any] | None:
    """The ledger's entry for one session."""
    for entry in ledger["sessions"]:
        if entry["id"] == session_id:
            return dict(entry)
    return None


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    """Start the whole stack (server and emulator in parallel), yield it, always end it."""
    stack = Stack(workdir)
    try:
        stack.start_server()
        stack.start_emulator()
        stack.ensure_venv()  # while the server starts
        stack.wait_for_server()
        stack.deploy()
        stack.start_worker()
        stack.wait_for_worker()
        yield stack
    finally:
        stack.stop()
