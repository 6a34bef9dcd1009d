"""A throwaway PostgreSQL for the fleet test: Debian's binaries, started by the test itself.

``initdb`` makes a cluster in a temporary directory and ``pg_ctl`` starts and stops it on a
free loopback port (its socket in the same directory): no system service, nothing outside
the directory. PostgreSQL refuses to run as root, so when the tests run as root (CI
containers) every command runs as the ``postgres`` user that Debian's package creates,
through ``runuser -u postgres --``; the directory is made theirs. The binaries are looked
for in ``/usr/lib/postgresql/<version>/bin`` (Debian's layout), then on PATH; ``.ci/run``
installs them (``apt-get install postgresql``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_START_TIMEOUT = 60.0


def postgres_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are (the newest Debian version first), or None."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


def missing_reason() -> str | None:
    """Why the fleet test cannot run PostgreSQL here, or None when it can."""
    if postgres_bin_dir() is None:
        return (
            "PostgreSQL's initdb/pg_ctl not found (looked in /usr/lib/postgresql/*/bin and on"
            " PATH): install Debian's postgresql package, as .ci/run does"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and there is no runuser to run PostgreSQL as 'postgres'"
    return None


@dataclass
class Postgres:
    """One PostgreSQL cluster in ``root``, listening on 127.0.0.1:``port``."""

    bin_dir: Path
    root: Path
    port: int
    log: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        """What ``PREFECT_API_DATABASE_CONNECTION_URL`` takes (trust auth on loopback)."""
        return f"postgresql+asyncpg://prefect@127.0.0.1:{self.port}/prefect"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def _run(self, argv: list[str], timeout: float = PG_START_TIMEOUT) -> None:
        with self.log.open("ab") as sink:
            sink.write(f"\n$ {' '.join(argv)}\n".encode())
            sink.flush()
            done = subprocess.run(
                self._as_owner(argv),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                cwd=self.root,
            )
        if done.returncode != 0:
            text = self.log.read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"{argv[0]} exited {done.returncode}:\n" + "\n".join(text))

    def init(self) -> None:
        """``initdb`` (superuser ``prefect``, trust auth: loopback only, a throwaway)."""
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "prefect",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )

    def start(self) -> None:
        """``pg_ctl start``, waiting until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(int(PG_START_TIMEOUT)),
                "start",
            ]
        )

    def create_database(self) -> None:
        self._run(
            [
                str(self.bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "prefect",
                "prefect",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop`` (``fast``: connections are cut, as when the database goes away)."""
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextlib.contextmanager
def temporary_postgres(port: int, log: Path) -> Iterator[Postgres]:
    """A started cluster with a ``prefect`` database; stopped and deleted at the end."""
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    # Not under pytest's tmp_path: that is private to the user running the tests, and
    # PostgreSQL runs as 'postgres' when they run as root.
    root = Path(tempfile.mkdtemp(prefix="arr-fleet-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    pg = Postgres(bin_dir, root, port, log)
    try:
        pg.init()
        pg.start()
        pg.create_database()
        yield pg
    finally:
        if pg.running():
            with contextlib.suppress(Exception):
                pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
