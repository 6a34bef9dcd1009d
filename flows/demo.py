"""The main job, end to end: ``python -m arr_prefect.flows.demo`` (what ``./scripts/demo`` runs).

With no ARR account configured (no ``ARR_ACCOUNT_ID``/``ARR_ACCOUNT_KEY``), it starts the
built-in emulator on loopback with time running 60 times faster (a minute of session time
per real second, so a 10-minute batch with lease renewals takes seconds), runs
``render_batch`` with the sample job, prints the run's summary and the emulator's ledger,
and exits 0 only if the run succeeded and no session is left running.

With ``ARR_*`` settings it runs the same flow against the configured service, in real time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from arr_prefect.clock import ScaledClock, use_clock
from arr_prefect.flows.render_batch import RenderSummary, render_batch
from arr_prefect.settings import load_settings

__all__ = ["main"]

DEMO_TIME_SCALE = 60.0


def _print_ledger(ledger: dict[str, Any]) -> None:
    print("\nEmulator ledger (every session ever created):")
    print(f"  {'session':<38} {'status':<8} {'billed':>9}  end")
    for entry in ledger["sessions"]:
        billed = f"{entry['billed_seconds'] / 60:.1f} min"
        end = entry.get("end_reason") or "-"
        print(f"  {entry['id']:<38} {entry['status']:<8} {billed:>9}  {end}")
    print(f"  running: {ledger['running']}")


def _print_summary(summary: RenderSummary) -> None:
    print("\nRender batch summary:")
    for key, value in summary.model_dump().items():
        print(f"  {key:<22} {value}")


def _run(args: argparse.Namespace) -> RenderSummary:
    parameters = {"frames": args.frames, "seconds_per_frame": args.seconds_per_frame}
    return asyncio.run(
        render_batch(
            size=args.size,
            job_parameters=parameters,
            lease_minutes=args.lease_minutes,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arr_prefect.flows.demo", description=__doc__)
    parser.add_argument("--size", choices=["standard", "premium"], default="standard")
    parser.add_argument("--frames", type=int, default=10, help="frames the sample job renders")
    parser.add_argument(
        "--seconds-per-frame", type=float, default=60.0, help="session seconds per frame"
    )
    parser.add_argument("--lease-minutes", type=float, default=4.0, help="rolling lease")
    parser.add_argument(
        "--startup-seconds", type=float, default=90.0, help="emulated session start-up time"
    )
    args = parser.parse_args(argv)

    if load_settings().is_configured:
        print("ARR account configured: running render-batch against the configured service")
        _print_summary(_run(args))
        return 0

    from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator

    clock = ScaledClock(DEMO_TIME_SCALE)
    emulator = Emulator(clock=clock, startup_seconds=args.startup_seconds)
    with emulator.serve() as url, use_clock(clock):
        print(
            f"No ARR account configured: using the built-in emulator at {url}"
            f" (time runs {DEMO_TIME_SCALE:.0f}x faster)"
        )
        os.environ.update(
            {
                "ARR_SERVICE_URL": url,
                "ARR_STS_URL": url,
                "ARR_ACCOUNT_ID": DEFAULT_ACCOUNT_ID,
                "ARR_ACCOUNT_KEY": DEFAULT_ACCOUNT_KEY,
            }
        )
        failed: BaseException | None = None
        try:
            summary: RenderSummary | None = _run(args)
        except Exception as exc:  # noqa: BLE001 - reported below, with the ledger
            failed, summary = exc, None
        ledger = emulator.ledger()
    if summary is not None:
        _print_summary(summary)
    _print_ledger(ledger)
    if failed is not None:
        print(f"\nrender-batch failed: {type(failed).__name__}: {failed}", file=sys.stderr)
        return 1
    if ledger["running"]:
        print(f"\n{ledger['running']} session(s) left running", file=sys.stderr)
        return 1
    print("\nOK: the batch rendered and no session is left running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
