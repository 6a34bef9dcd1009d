"""The main job, end to end: ``python -m arr_prefect.flows.demo`` (what ``./scripts/demo`` runs).

With no ARR account configured (no ``ARR_ACCOUNT_ID``/``ARR_ACCOUNT_KEY``), it starts the
built-in emulator on loopback with time running 60 times faster (a minute of session time
per real second, so a 10-minute batch with lease renewals takes seconds), runs
``render_batch`` with the sample job, prints the run's summary and the emulator's ledger,
and exits 0 only if the run went as asked and no session is left running.

With ``ARR_*`` settings it runs the same flow against the configured service, in real time.

``--fail-at-frame N`` makes the sample job fail at frame N, to show teardown on failure:
the run fails, the session is stopped anyway, and the demo exits 0 if it was.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arr_prefect.flows.render_batch import RenderSummary

__all__ = ["main", "parse_args"]

DEMO_TIME_SCALE = 60.0
SUMMARY_ARTIFACT_KEY = "render-batch-summary"

# Prefect's temporary server gets 20 s to start by default, which a loaded machine's first
# run (cold imports, database migrations) can exceed. The demo allows this many, unless
# the user set their own.
EPHEMERAL_STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
EPHEMERAL_STARTUP_TIMEOUT_SECONDS = 180


class DemoArgumentError(ValueError):
    """An argument the demo refuses before starting anything."""


DESCRIPTION = """\
The main job, end to end: the render-batch flow with the sample job.

With no ARR account configured (no ARR_ACCOUNT_ID / ARR_ACCOUNT_KEY), it starts the
built-in emulator on loopback with time running 60 times faster (a minute of session time
per real second), runs render-batch, prints the run's summary and the emulator's ledger,
and exits 0 only if the run went as asked and no session is left running. With ARR_*
settings it runs the same flow against the configured service, in real time.

--fail-at-frame N makes the sample job fail at frame N, to show teardown on failure: the
run fails, the session is stopped anyway, and the demo exits 0 if it was."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./scripts/demo",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--size",
        choices=["standard", "premium"],
        default="standard",
        help="session size (default standard)",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=10,
        metavar="N",
        help="frames the sample job renders (default 10)",
    )
    parser.add_argument(
        "--seconds-per-frame",
        metavar="SECONDS",
        type=float,
        default=60.0,
        help="session seconds per frame (default 60)",
    )
    parser.add_argument(
        "--fail-at-frame",
        type=int,
        default=None,
        metavar="N",
        help="make the sample job fail at frame N, to show teardown on failure"
        " (default: no failure)",
    )
    parser.add_argument(
        "--api-version",
        choices=["v1", "2021-01-01"],
        default=None,
        help="session API version (default: ARR_API_VERSION, else v1)",
    )
    parser.add_argument(
        "--time-scale",
        metavar="X",
        type=float,
        default=None,
        help=f"emulator only: session seconds per real second (default {DEMO_TIME_SCALE:g})",
    )
    parser.add_argument(
        "--lease-minutes",
        metavar="MINUTES",
        type=float,
        default=4.0,
        help="rolling lease in minutes, 1 to 1440 (default 4)",
    )
    parser.add_argument(
        "--startup-seconds",
        metavar="SECONDS",
        type=float,
        default=None,
        help="emulator only: session start-up time in seconds (default 90)",
    )
    return parser


def _check(args: argparse.Namespace, configured: bool) -> None:
    """Refuse what cannot run, before anything starts."""
    if args.frames < 1:
        raise DemoArgumentError(f"--frames must be at least 1, got {args.frames}")
    if args.seconds_per_frame < 0:
        raise DemoArgumentError(
            f"--seconds-per-frame must not be negative, got {args.seconds_per_frame:g}"
        )
    if args.fail_at_frame is not None and not 1 <= args.fail_at_frame <= args.frames:
        raise DemoArgumentError(
            f"--fail-at-frame must be between 1 and --frames ({args.frames}),"
            f" got {args.fail_at_frame}"
        )
    if not 1 <= args.lease_minutes <= 1440:
        raise DemoArgumentError(
            f"--lease-minutes must be between 1 and 1440, got {args.lease_minutes:g}"
        )
    if args.time_scale is not None and not 0 < args.time_scale <= 3600:
        raise DemoArgumentError(
            f"--time-scale must be above 0 and at most 3600, got {args.time_scale:g}"
        )
    if args.startup_seconds is not None and args.startup_seconds < 0:
        raise DemoArgumentError(
            f"--startup-seconds must not be negative, got {args.startup_seconds:g}"
        )
    if configured:
        for flag, value in (
            ("--time-scale", args.time_scale),
            ("--startup-seconds", args.startup_seconds),
        ):
            if value is not None:
                raise DemoArgumentError(
                    f"{flag} only applies to the built-in emulator, but an ARR account is"
                    " configured (ARR_ACCOUNT_ID/ARR_ACCOUNT_KEY), and the real service runs"
                    " in real time"
                )


def parse_args(
    argv: list[str] | None = None, *, configured: bool | None = None
) -> argparse.Namespace:
    """Parse and check the demo's arguments; exits 2 with a message on bad ones.

    ``configured``: whether an ARR account is configured (read from the settings if None).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _check(args, _configured() if configured is None else configured)
    except DemoArgumentError as exc:
        parser.error(str(exc))
    return args


def _print_ledger(ledger: dict[str, Any]) -> None:
    from arr_prefect.units import format_duration

    print("\nEmulator ledger (every session ever created):")
    print(f"  {'session':<38} {'status':<8} {'ran':>12}  end")
    for entry in ledger["sessions"]:
        ran = format_duration(entry["billed_seconds"])
        end = entry.get("end_reason") or "-"
        print(f"  {entry['id']:<38} {entry['status']:<8} {ran:>12}  {end}")
    print(f"  still running: {ledger['running']}")
    print(
        "  (ran: from the create's arrival at the service to the stop; the summary counts"
        " from the create request to the stop's answer, the two requests' round trips more)"
    )


def _print_summary(summary: RenderSummary | str, time_scale: float | None) -> None:
    if time_scale is not None and time_scale != 1.0:
        print(
            f"\nRender batch summary (durations in emulated time: the emulator runs"
            f" {time_scale:g}x faster; Prefect's own durations in its log are real time):"
        )
    else:
        print("\nRender batch summary:")
    print(summary if isinstance(summary, str) else summary.text())


def summary_text(markdown: str) -> str:
    """The render-batch summary artifact's Markdown as the aligned text
    :meth:`RenderSummary.text` prints: how the demo shows the summary of a run that failed,
    whose only copy is its artifact (the flow raised instead of returning it)."""
    lines: list[str] = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or set(cells[0]) <= {"-"} or cells[0] in ("What", "Phase"):
            continue
        if len(cells) == 2:
            lines.append(f"  {cells[0]:<15} {cells[1].replace('`', '')}")
        elif len(cells) == 4:
            lines.append(f"  {'  ' + cells[0]:<15} {cells[1]}, took {cells[2]}")
    return "\n".join(lines)


async def _summary_of_run(flow_run_id: Any) -> str | None:
    """The summary a finished render-batch run published, as text (None if it has none)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    markdown = next((a.data for a in artifacts if isinstance(a.data, str)), None)
    return summary_text(markdown) if markdown else None


async def _run(
    args: argparse.Namespace,
) -> tuple[RenderSummary | str | None, BaseException | None]:
    """Run render-batch; a run that failed gives its published summary and its error."""
    from arr_prefect.flows.render_batch import render_batch

    parameters: dict[str, Any] = {
        "frames": args.frames,
        "seconds_per_frame": args.seconds_per_frame,
    }
    if args.fail_at_frame is not None:
        parameters["fail_at_frame"] = args.fail_at_frame
    state = await render_batch(
        size=args.size,
        job_parameters=parameters,
        lease_minutes=args.lease_minutes,
        return_state=True,
    )
    if state.is_completed():
        result = await state.aresult()
        return result, None
    error = await state.aresult(raise_on_failure=False)
    failed = error if isinstance(error, BaseException) else RuntimeError(state.message)
    return await _summary_of_run(state.state_details.flow_run_id), failed


def _explain_start_failure(exc: BaseException) -> str | None:
    """What to do when Prefect's temporary server did not come up."""
    if "ephemeral Prefect API server" not in str(exc):
        return None
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    timeout = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    return (
        f"Prefect's temporary API server did not start within {timeout} s (a loaded machine"
        " or a first run can be that slow).\nWhat to do: run it again (the second start is"
        f" faster), or allow more time with {EPHEMERAL_STARTUP_TIMEOUT_ENV}=600, or start a"
        " server yourself (`.venv/bin/prefect server start` in another terminal) and point"
        " the demo at it with PREFECT_API_URL=http://127.0.0.1:4200/api."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if EPHEMERAL_STARTUP_TIMEOUT_ENV in os.environ:  # the operator's own choice
        return _main(args)
    # Prefect read its settings when it was imported, before this ran: setting the
    # environment variable now would change nothing, a settings context does.
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    with temporary_settings(
        updates={
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_TIMEOUT_SECONDS
        }
    ):
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    configured = _configured()
    if args.api_version is not None:
        os.environ["ARR_API_VERSION"] = args.api_version
    if configured:
        print("ARR account configured: running render-batch against the configured service")
        return _finish(args, *_attempt(args), ledger=None)

    from arr_prefect.clock import ScaledClock, use_clock
    from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator

    scale = args.time_scale if args.time_scale is not None else DEMO_TIME_SCALE
    startup = args.startup_seconds if args.startup_seconds is not None else 90.0
    clock = ScaledClock(scale)
    emulator = Emulator(clock=clock, startup_seconds=startup)
    with emulator.serve() as url, use_clock(clock):
        print(
            f"No ARR account configured: using the built-in emulator at {url}"
            f" (time runs {scale:g}x faster)"
        )
        os.environ.update(
            {
                "ARR_SERVICE_URL": url,
                "ARR_STS_URL": url,
                "ARR_ACCOUNT_ID": DEFAULT_ACCOUNT_ID,
                "ARR_ACCOUNT_KEY": DEFAULT_ACCOUNT_KEY,
            }
        )
        summary, failed = _attempt(args)
        ledger = emulator.ledger()
    return _finish(args, summary, failed, ledger=ledger, time_scale=scale)


def _configured() -> bool:
    from arr_prefect.settings import load_settings

    return load_settings().is_configured


def _attempt(
    args: argparse.Namespace,
) -> tuple[RenderSummary | str | None, BaseException | None]:
    if args.fail_at_frame is not None:
        print(
            f"The sample job will fail at frame {args.fail_at_frame} on purpose: Prefect logs"
            " its SampleJobError with a traceback below. That is expected; the summary and"
            " the ledger then show the session stopped all the same."
        )
    try:
        return asyncio.run(_run(args))
    except Exception as exc:  # noqa: BLE001 - reported by _finish, with the ledger
        return None, exc


def _finish(
    args: argparse.Namespace,
    summary: RenderSummary | str | None,
    failed: BaseException | None,
    *,
    ledger: dict[str, Any] | None,
    time_scale: float | None = None,
) -> int:
    if summary is not None:
        _print_summary(summary, time_scale)
    if ledger is not None:
        _print_ledger(ledger)
    if failed is not None:
        hint = _explain_start_failure(failed)
        if hint is not None:
            print(f"\n{hint}", file=sys.stderr)
            return 1
        from arr_prefect.flows.sample_job import SampleJobError

        if isinstance(failed, SampleJobError) and args.fail_at_frame is not None:
            print(f"\nThe job failed as asked ({failed}); the run failed with it.")
        else:
            print(f"\nrender-batch failed: {type(failed).__name__}: {failed}", file=sys.stderr)
            return 1
    if ledger is not None and ledger["running"]:
        print(f"\n{ledger['running']} session(s) left running", file=sys.stderr)
        return 1
    if failed is not None:
        print("OK: the session was stopped all the same; none is left running.")
    else:
        print("\nOK: the batch rendered and no session is left running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
