"""A v1 create's lease fingerprint, chosen by the caller: what the session guard finds a
create's session by when its process dies before the answer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from arr_prefect.client import ArrClient
from arr_prefect.clock import VirtualClock
from arr_prefect.dialects.v1 import fingerprinted_lease
from arr_prefect.emulator import DEFAULT_ACCOUNT_ID, DEFAULT_ACCOUNT_KEY, Emulator
from arr_prefect.models import MAX_LEASE
from arr_prefect.settings import load_settings


@pytest.mark.parametrize(
    ("lease", "fingerprint", "sent"),
    [
        pytest.param(
            timedelta(minutes=20),
            424242,
            timedelta(minutes=20, microseconds=424242),
            id="whole-seconds",
        ),
        pytest.param(
            timedelta(minutes=20, microseconds=7),
            1,
            timedelta(minutes=20, microseconds=1),
            id="replaces-microseconds",
        ),
        pytest.param(
            MAX_LEASE, 999_999, MAX_LEASE - timedelta(microseconds=1), id="at-the-24-h-maximum"
        ),
    ],
)
def test_fingerprinted_lease(lease: timedelta, fingerprint: int, sent: timedelta) -> None:
    """The fingerprint becomes the lease's microseconds; never past the 24-hour maximum."""
    assert fingerprinted_lease(lease, fingerprint) == sent


@pytest.mark.parametrize("fingerprint", [pytest.param(0, id="zero"), pytest.param(10**6, id="1s")])
def test_fingerprint_out_of_range_is_refused(fingerprint: int) -> None:
    """0 (a lease in whole seconds, what other clients send) is no fingerprint."""
    with pytest.raises(ValueError, match="1 to 999999"):
        fingerprinted_lease(timedelta(minutes=20), fingerprint)


async def test_every_attempt_carries_the_chosen_fingerprint() -> None:
    """A create given a fingerprinted lease sends it on every attempt (a re-post after an
    answer lost before the service made anything included), and the session gets it."""
    clock = VirtualClock(autojump=True)
    emulator = Emulator(clock=clock)
    emulator.faults.add("drop", "v1.create")  # broken before the service made anything
    settings = load_settings(
        _env_file=None,
        account_id=DEFAULT_ACCOUNT_ID,
        account_key=DEFAULT_ACCOUNT_KEY,
        service_url="http://127.0.0.1:9",
        sts_url="http://127.0.0.1:9",
        api_version="v1",
    )
    lease = fingerprinted_lease(timedelta(minutes=20), 424242)
    async with ArrClient(settings, transport=emulator.transport(), clock=clock) as arr:
        session = await arr.create_session(lease=lease)
    assert emulator.request_counts()["v1.create"] == {"dropped": 1, "202": 1}
    [record] = emulator.sessions()
    assert (record.id, record.max_lease, session.max_lease) == (session.id, lease, lease)
    emulator.state.stop(DEFAULT_ACCOUNT_ID, session.id)


def test_a_forked_child_draws_other_fingerprints_than_its_parent() -> None:
    """Clients share one generator per process; a forked worker (a process pool) seeds
    its own, so two processes never send the same fingerprints in the same order."""
    import os

    from arr_prefect import client as client_module

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, repr([client_module._RNG.randrange(1, 10**6) for _ in range(4)]).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as answer:
        child = answer.read()
    assert child != repr([client_module._RNG.randrange(1, 10**6) for _ in range(4)])
