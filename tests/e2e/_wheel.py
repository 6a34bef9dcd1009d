"""The project as a user installs it: the built wheel in a fresh virtual environment.

``build_wheel`` builds from a copy of the sources (so no ``build/`` directory in the
checkout can add stale modules to the wheel), ``wheel_venv`` creates a virtual
environment with no access to this one's packages and installs the wheel, non-editable,
with the pinned versions of ``constraints.txt`` (from pip's cache when it holds them, as
it does after ``scripts/_venv.sh`` ran). Both are timed: the e2e summary shows the figures.

For quicker iterations while developing, ``E2E_REUSE_VENV=/some/dir`` keeps the venv
there between runs: created as above the first time, then only the freshly built wheel is
reinstalled into it (``--no-deps --force-reinstall``). CI never sets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

BUILD_TIMEOUT = 300.0
"""Real seconds for ``pip wheel`` (a fresh machine fetches setuptools once)."""
INSTALL_TIMEOUT = 900.0
"""Real seconds to create the venv and install the wheel with its dependencies."""

_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "arr_prefect", "flows", "tasks")
REUSE_VARIABLE = "E2E_REUSE_VENV"


class WheelError(RuntimeError):
    """Building the wheel or installing it failed."""


@dataclass(frozen=True)
class WheelVenv:
    """A virtual environment where only the project's wheel (and its dependencies) is
    installed."""

    root: Path
    wheel: Path
    build_seconds: float
    install_seconds: float
    reused: bool = False
    """True when an existing venv (``E2E_REUSE_VENV``) only got the new wheel."""

    @property
    def bin_dir(self) -> Path:
        return self.root / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin_dir / ("python.exe" if os.name == "nt" else "python")

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` as an activated venv would see it: this venv's ``bin`` first on PATH,
        and nothing that could reach the checkout or the developer's venv."""
        env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        dev_bin = str(Path(sys.executable).parent)
        path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != dev_bin]
        env["PATH"] = os.pathsep.join([str(self.bin_dir), *path])
        env["VIRTUAL_ENV"] = str(self.root)
        return env


def _run(argv: list[str], *, cwd: Path, timeout: float, what: str, log: Path) -> None:
    with log.open("ab") as sink:
        sink.write(f"\n$ {' '.join(argv)}\n".encode())
        sink.flush()
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)},
            )
        except subprocess.TimeoutExpired:
            raise WheelError(f"{what} took over {timeout:.0f}s; see {log}") from None
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise WheelError(f"{what} exited {done.returncode}:\n{tail}")


def build_wheel(dest: Path, *, log: Path) -> Path:
    """Build the project's wheel into ``dest`` from a copy of its sources."""
    source = dest / "source"
    source.mkdir(parents=True)
    for name in _SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            # symlinks=True: arr_prefect/flows stays the relative link to ../flows, as in
            # a clone, and the build follows it.
            shutil.copytree(
                path,
                source / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
        else:
            shutil.copy2(path, source / name)
    wheels = dest / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), "."],
        cwd=source,
        timeout=BUILD_TIMEOUT,
        what="pip wheel",
        log=log,
    )
    [wheel] = wheels.glob("arr_prefect-*.whl")
    return wheel


def top_level_names(wheel: Path) -> set[str]:
    """The top-level entries of a wheel, besides its ``.dist-info``."""
    with zipfile.ZipFile(wheel) as archive:
        return {
            name.split("/", 1)[0]
            for name in archive.namelist()
            if not name.split("/", 1)[0].endswith(".dist-info")
        }


def wheel_venv(root: Path, *, log: Path) -> WheelVenv:
    """Build the wheel and install it into a fresh venv at ``root / "venv"`` (or the
    venv named by ``E2E_REUSE_VENV``)."""
    started = time.monotonic()
    wheel = build_wheel(root / "wheel", log=log)
    built = time.monotonic()
    reuse = os.environ.get(REUSE_VARIABLE)
    venv = Path(reuse) if reuse else root / "venv"
    if reuse and (venv / "pyvenv.cfg").exists():
        existing = WheelVenv(venv, wheel, build_seconds=built - started, install_seconds=0.0)
        _run(
            [
                str(existing.python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--force-reinstall",
                str(wheel),
            ],
            cwd=root,
            timeout=INSTALL_TIMEOUT,
            what="pip install of the wheel into the reused venv",
            log=log,
        )
        return WheelVenv(
            venv,
            wheel,
            build_seconds=built - started,
            install_seconds=time.monotonic() - built,
            reused=True,
        )
    # The base interpreter, not this venv's: the new venv must not see our packages.
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run(
        [base_python, "-m", "venv", str(venv)],
        cwd=root,
        timeout=INSTALL_TIMEOUT,
        what="python -m venv",
        log=log,
    )
    result = WheelVenv(venv, wheel, build_seconds=built - started, install_seconds=0.0)
    _run(
        [
            str(result.python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(REPO_ROOT / "constraints.txt"),
            str(wheel),
        ],
        cwd=root,
        timeout=INSTALL_TIMEOUT,
        what="pip install of the wheel",
        log=log,
    )
    return WheelVenv(
        venv, wheel, build_seconds=built - started, install_seconds=time.monotonic() - built
    )
