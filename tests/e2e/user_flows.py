"""A user's own pipeline, written as a user of the installed package writes one.

Not part of ``arr_prefect``: tests/e2e/test_teardown_reactive.py copies this file into a
project directory of its own and deploys it from there with ``flow.from_source(...)
.deploy(...)`` in the wheel-only venv, with no tags at all (no ``arr``, no
``rendering``). It imports nothing from this repository but the installed package.
"""

from __future__ import annotations

import time
from datetime import timedelta

from prefect import flow

from arr_prefect.flows import rendering_session, stop_owned_sessions


@flow(
    name="render-my-scene",
    on_cancellation=[stop_owned_sessions],
    on_crashed=[stop_owned_sessions],
)
def render_my_scene(
    lease_minutes: float = 10.0, frames: int = 300, seconds_per_frame: float = 1.0
) -> int:
    """Render ``frames`` frames on one session, each a blocking call of the renderer."""
    rendered = 0
    with rendering_session(lease=timedelta(minutes=lease_minutes)) as session:
        print(f"rendering on {session.hostname}:{session.handshake_port}")
        for _ in range(frames):
            time.sleep(seconds_per_frame)  # the user's renderer: blocks this thread
            rendered += 1
    return rendered
