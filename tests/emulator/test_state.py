"""The pure state machine, driven by a virtual clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from arr_prefect.clock import VirtualClock
from arr_prefect.emulator import ApiError, EmulatorState, SessionRecord
from arr_prefect.models import SessionSize, SessionStatus
from tests.emulator._support import ACCOUNT, KEY, OTHER_ACCOUNT, OTHER_KEY, START

HOUR = timedelta(hours=1)


def make_state(clock: VirtualClock, startup: float = 30.0, **kwargs: object) -> EmulatorState:
    return EmulatorState(
        clock=clock,
        accounts={ACCOUNT: KEY, OTHER_ACCOUNT: OTHER_KEY},
        startup_seconds=startup,
        seed=1,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def state(clock: VirtualClock) -> EmulatorState:
    return make_state(clock)


def create(
    state: EmulatorState, lease: timedelta = HOUR, size: SessionSize = SessionSize.STANDARD
) -> str:
    return state.create_v1(ACCOUNT, size=size, max_lease=lease).id


class TestLifecycle:
    @pytest.mark.parametrize(
        "startup", [pytest.param(0.0, id="pooled"), pytest.param(30.0, id="30s")]
    )
    def test_ready_exactly_after_startup(self, clock: VirtualClock, startup: float) -> None:
        """A session is Starting until startup_seconds have passed, then Ready."""
        state = make_state(clock, startup)
        sid = create(state)
        if startup:
            clock.advance(startup - 0.001)
            assert state.get(ACCOUNT, sid).status is SessionStatus.STARTING
            clock.advance(0.001)
        record = state.get(ACCOUNT, sid)
        assert record.status is SessionStatus.READY
        assert record.ready_at == START + startup

    def test_expires_exactly_at_lease_from_ready(
        self, state: EmulatorState, clock: VirtualClock
    ) -> None:
        """The lease counts from Ready, and expiry is dated when it was due, not noticed."""
        sid = create(state)
        clock.advance(30 + 3600 - 1)
        assert state.get(ACCOUNT, sid).status is SessionStatus.READY
        clock.advance(5000)
        record = state.get(ACCOUNT, sid)
        assert record.status is SessionStatus.EXPIRED
        assert record.ended_at == START + 30 + 3600
        assert record.end_reason == "expired"
        assert record.message == "The session's lease expired."
        assert record.elapsed(clock.time()) == HOUR

    def test_starting_session_does_not_expire(self, clock: VirtualClock) -> None:
        """A lease shorter than start-up only starts counting once Ready."""
        state = make_state(clock, startup=600)
        sid = create(state, lease=timedelta(minutes=1))
        clock.advance(599)
        assert state.get(ACCOUNT, sid).status is SessionStatus.STARTING
        clock.advance(60)
        assert state.get(ACCOUNT, sid).status is SessionStatus.READY
        clock.advance(1)
        assert state.get(ACCOUNT, sid).status is SessionStatus.EXPIRED

    def test_stop_is_immediate_and_idempotent(
        self, state: EmulatorState, clock: VirtualClock
    ) -> None:
        """Stop ends the session now; stopping again changes nothing but is counted."""
        sid = create(state)
        clock.advance(100)
        state.stop(ACCOUNT, sid)
        clock.advance(100)
        record = state.stop(ACCOUNT, sid)
        assert record.status is SessionStatus.STOPPED
        assert record.ended_at == START + 100
        assert record.stop_requests == 2

    def test_stopping_an_expired_session_keeps_it_expired(
        self, state: EmulatorState, clock: VirtualClock
    ) -> None:
        """Stop on an ended session is a no-op success."""
        sid = create(state)
        clock.advance(30 + 3600)
        assert state.stop(ACCOUNT, sid).status is SessionStatus.EXPIRED

    def test_unknown_session_is_not_found(self, state: EmulatorState) -> None:
        """Unknown ids answer 404 NotFound."""
        with pytest.raises(ApiError) as info:
            state.stop(ACCOUNT, "nope")
        assert (info.value.status, info.value.code) == (404, "NotFound")

    def test_list_shows_only_active_sessions_of_the_account(
        self, state: EmulatorState, clock: VirtualClock
    ) -> None:
        """Stopped and expired sessions leave the list but stay readable."""
        stopped, expiring, running = (
            create(state),
            create(state, lease=timedelta(minutes=1)),
            create(state),
        )
        state.create_v1(OTHER_ACCOUNT, size=SessionSize.STANDARD, max_lease=HOUR)
        state.stop(ACCOUNT, stopped)
        clock.advance(30 + 60)
        assert [r.id for r in state.list_active(ACCOUNT)] == [running]
        assert state.get(ACCOUNT, expiring).status is SessionStatus.EXPIRED
        assert state.get(ACCOUNT.upper(), stopped).status is SessionStatus.STOPPED


class TestExtend:
    def test_v1_sets_the_total_lease(self, state: EmulatorState, clock: VirtualClock) -> None:
        """v1's lease is the total since Ready, not an increment."""
        sid = create(state)
        clock.advance(30 + 3000)
        state.extend_v1(ACCOUNT, sid, 2 * HOUR)
        clock.advance(3600)
        assert state.get(ACCOUNT, sid).status is SessionStatus.READY
        clock.advance(600)
        record = state.get(ACCOUNT, sid)
        assert (record.status, record.ended_at) == (SessionStatus.EXPIRED, START + 30 + 7200)
        assert [c.max_lease for c in record.extend_history] == [2 * HOUR]

    def test_v1_lease_below_elapsed_expires_at_ready_plus_lease(
        self, state: EmulatorState, clock: VirtualClock
    ) -> None:
        """v1 accepts a shorter lease; the session then ended at ready_at + lease."""
        sid = create(state)
        clock.advance(30 + 1800)
        record = state.extend_v1(ACCOUNT, sid, timedelta(minutes=10))
        assert (record.status, record.ended_at) == (SessionStatus.EXPIRED, START + 30 + 600)

    @pytest.mark.parametrize(
        "lease",
        [
            pytest.param(timedelta(0), id="zero"),
            pytest.param(timedelta(hours=24, seconds=1), id="over-24h"),
        ],
    )
    def test_v1_rejects_lease_out_of_range(self, state: EmulatorState, lease: timedelta) -> None:
        """v1 leases must be more than zero and at most 24 h."""
        sid = create(state)
        with pytest.raises(ApiError) as info:
            state.extend_v1(ACCOUNT, sid, lease)
        assert (info.value.status, info.value.code) == (400, "BadRequest")

    def test_v1_extend_of_ended_session_is_bad_request(self, state: EmulatorState) -> None:
        """An ended session cannot be extended (v1: 400)."""
        sid = create(state)
        state.stop(ACCOUNT, sid)
        with pytest.raises(ApiError) as info:
            state.extend_v1(ACCOUNT, sid, 2 * HOUR)
        assert info.value.status == 400

    @pytest.mark.parametrize(
        ("minutes", "status", "code"),
        [
            pytest.param(15, 422, "UnprocessableEntity", id="equal"),
            pytest.param(10, 422, "UnprocessableEntity", id="smaller"),
            pytest.param(1441, 400, "BadRequest", id="over-1440"),
            pytest.param(-1, 400, "BadRequest", id="negative"),
        ],
    )
    def test_v2021_refuses_a_lease_that_does_not_grow(
        self, state: EmulatorState, minutes: int, status: int, code: str
    ) -> None:
        """2021-01-01 needs more minutes than the current lease."""
        state.create_v2021(ACCOUNT, "s", size=SessionSize.STANDARD, max_lease_minutes=15)
        with pytest.raises(ApiError) as info:
            state.extend_v2021(ACCOUNT, "s", minutes)
        assert (info.value.status, info.value.code) == (status, code)

    def test_v2021_extend_of_ended_session_is_unprocessable(self, state: EmulatorState) -> None:
        """An ended session cannot be extended (2021-01-01: 422 UnprocessableEntity)."""
        state.create_v2021(ACCOUNT, "s", size=SessionSize.STANDARD, max_lease_minutes=15)
        state.stop(ACCOUNT, "s")
        with pytest.raises(ApiError) as info:
            state.extend_v2021(ACCOUNT, "s", 20)
        assert (info.value.status, info.value.code) == (422, "UnprocessableEntity")

    def test_v2021_extend_grows_the_lease(self, state: EmulatorState) -> None:
        """A larger lease is taken and recorded."""
        state.create_v2021(ACCOUNT, "s", size=SessionSize.STANDARD, max_lease_minutes=15)
        record = state.extend_v2021(ACCOUNT, "s", 20)
        assert record.max_lease == timedelta(minutes=20)
        assert len(record.extend_history) == 1


class TestCreateV2021:
    def test_same_settings_retry_returns_the_session(self, state: EmulatorState) -> None:
        """PUT is idempotent for the same id and settings."""
        first, created = state.create_v2021(
            ACCOUNT, "s", size=SessionSize.STANDARD, max_lease_minutes=15
        )
        again, created_again = state.create_v2021(
            ACCOUNT, "s", size=SessionSize.STANDARD, max_lease_minutes=15
        )
        assert (created, created_again) == (True, False)
        assert again is first

    @pytest.mark.parametrize(
        ("size", "minutes"),
        [
            pytest.param(SessionSize.PREMIUM, 15, id="other-size"),
            pytest.param(SessionSize.STANDARD, 16, id="other-lease"),
        ],
    )
    def test_other_settings_conflict(
        self, state: EmulatorState, size: SessionSize, minutes: int
    ) -> None:
        """The same id with other settings is a 409 Conflict."""
        state.create_v2021(ACCOUNT, "s", size=SessionSize.STANDARD, max_lease_minutes=15)
        with pytest.raises(ApiError) as info:
            state.create_v2021(ACCOUNT, "s", size=size, max_lease_minutes=minutes)
        assert info.value.status == 409

    def test_ended_session_id_conflicts(self, state: EmulatorState) -> None:
        """An id whose session has ended cannot be created again (409)."""
        state.create_v2021(ACCOUNT, "s", size=SessionSize.STANDARD, max_lease_minutes=15)
        state.stop(ACCOUNT, "s")
        with pytest.raises(ApiError) as info:
            state.create_v2021(ACCOUNT, "s", size=SessionSize.STANDARD, max_lease_minutes=15)
        assert info.value.status == 409


class TestCapacityAndFailures:
    def test_no_capacity_ends_in_error_and_bills_nothing(self, clock: VirtualClock) -> None:
        """Beyond the per-size limit the create succeeds and the session goes to Error."""
        state = make_state(clock, capacity={"standard": 1})
        ok = create(state)
        refused = create(state)
        premium = create(state, size=SessionSize.PREMIUM)
        clock.advance(60)
        record = state.get(ACCOUNT, refused)
        assert record.status is SessionStatus.ERROR
        assert record.message == "No capacity available for size Standard in region westus2."
        assert record.billed_seconds(clock.time()) == 0.0
        assert state.get(ACCOUNT, ok).status is SessionStatus.READY
        assert state.get(ACCOUNT, premium).status is SessionStatus.READY

    def test_capacity_frees_up_when_a_session_stops(self, clock: VirtualClock) -> None:
        """Stopping a session gives its VM back."""
        state = make_state(clock, capacity={"standard": 1})
        state.stop(ACCOUNT, create(state))
        clock.advance(30)
        assert state.get(ACCOUNT, create(state)).status is SessionStatus.STARTING

    def test_start_failure_ends_in_error_when_startup_completes(
        self, state: EmulatorState, clock: VirtualClock
    ) -> None:
        """An injected start-up failure turns Starting into Error, with the reason."""
        sid = state.create_v1(
            ACCOUNT, size=SessionSize.STANDARD, max_lease=HOUR, fail_reason="boom"
        ).id
        clock.advance(29)
        assert state.get(ACCOUNT, sid).status is SessionStatus.STARTING
        clock.advance(1)
        record = state.get(ACCOUNT, sid)
        assert (record.status, record.ended_at) == (SessionStatus.ERROR, START + 30)
        assert record.message == "The session failed to start: boom"


class TestBilling:
    def test_billed_from_create_to_end(self, state: EmulatorState, clock: VirtualClock) -> None:
        """A session bills from create (VM allocated) to its end; running ones to now."""
        stopped, running = create(state), create(state)
        clock.advance(130)
        state.stop(ACCOUNT, stopped)
        clock.advance(70)
        ledger = {entry["id"]: entry for entry in state.ledger()["sessions"]}
        assert ledger[stopped]["billed_seconds"] == 130.0
        assert ledger[stopped]["end_reason"] == "stopped"
        assert ledger[running]["billed_seconds"] == 200.0
        assert state.ledger()["running"] == 1
        assert [r.id for r in state.running()] == [running]


class TestTokens:
    def test_token_is_accepted_for_its_account(self, state: EmulatorState) -> None:
        """A freshly issued token authenticates session calls of its account."""
        token = state.issue_token(ACCOUNT, f"Bearer {ACCOUNT}:{KEY}")
        claims = state.authenticate(f"Bearer {token}", ACCOUNT.upper())
        assert claims["accountId"] == ACCOUNT
        assert claims["exp"] - claims["iat"] == 86400

    @pytest.mark.parametrize(
        "authorization",
        [
            pytest.param(None, id="missing"),
            pytest.param(f"Bearer {ACCOUNT}:wrong", id="wrong-key"),
            pytest.param(f"Bearer {OTHER_ACCOUNT}:{OTHER_KEY}", id="other-account-credentials"),
            pytest.param(f"Basic {ACCOUNT}:{KEY}", id="not-bearer"),
        ],
    )
    def test_sts_refuses_bad_credentials(
        self, state: EmulatorState, authorization: str | None
    ) -> None:
        """The STS answers 401 unless the key matches the path's account."""
        with pytest.raises(ApiError) as info:
            state.issue_token(ACCOUNT, authorization)
        assert info.value.status == 401
        assert info.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'

    def test_token_expires_after_its_lifetime(self, clock: VirtualClock) -> None:
        """A token is refused (401) from its exp on."""
        state = make_state(clock, token_lifetime=600)
        token = state.issue_token(ACCOUNT, f"Bearer {ACCOUNT}:{KEY}")
        clock.advance(599)
        state.authenticate(f"Bearer {token}", ACCOUNT)
        clock.advance(1)
        with pytest.raises(ApiError, match="expired"):
            state.authenticate(f"Bearer {token}", ACCOUNT)

    def test_revoked_and_tampered_tokens_are_refused(self, state: EmulatorState) -> None:
        """expire_tokens() revokes issued tokens; a forged signature never passes."""
        token = state.issue_token(ACCOUNT, f"Bearer {ACCOUNT}:{KEY}")
        head, payload, signature = token.split(".")
        forged = f"{head}.{payload}.{signature[::-1]}"
        with pytest.raises(ApiError, match="signature"):
            state.authenticate(f"Bearer {forged}", ACCOUNT)
        assert state.expire_tokens() == 1
        with pytest.raises(ApiError, match="revoked"):
            state.authenticate(f"Bearer {token}", ACCOUNT)

    def test_other_accounts_token_is_forbidden(self, state: EmulatorState) -> None:
        """A valid token of another account answers 403."""
        token = state.issue_token(OTHER_ACCOUNT, f"Bearer {OTHER_ACCOUNT}:{OTHER_KEY}")
        with pytest.raises(ApiError) as info:
            state.authenticate(f"Bearer {token}", ACCOUNT)
        assert info.value.status == 403


class TestSettleCost:
    """Settling touches what is due, never the whole history (timers in a heap)."""

    @staticmethod
    def count_settles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
        settled: list[str] = []
        original = SessionRecord.settle

        def counting(record: SessionRecord, now: float) -> None:
            settled.append(record.id)
            original(record, now)

        monkeypatch.setattr(SessionRecord, "settle", counting)
        return settled

    def test_a_request_settles_nothing_of_an_ended_history(
        self, state: EmulatorState, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With 2,000 ended sessions (stopped and expired), a get settles only what is due."""
        for index in range(2000):
            sid = create(state)
            if index % 2:
                state.stop(ACCOUNT, sid)
        clock.advance(30 + HOUR.total_seconds())  # the other half expire
        live = create(state)
        state.settle()
        assert state.running_count() == 1
        settled = self.count_settles(monkeypatch)
        for _ in range(10):
            state.get(ACCOUNT, live)
            state.list_active(ACCOUNT)
        assert settled == []
        clock.advance(30)
        assert state.get(ACCOUNT, live).status is SessionStatus.READY
        assert settled == [live]

    def test_an_extended_lease_moves_its_timer(
        self, state: EmulatorState, clock: VirtualClock
    ) -> None:
        """After extends the session expires at the newest lease, not at an older timer."""
        sid = create(state)
        clock.advance(30)
        state.extend_v1(ACCOUNT, sid, 2 * HOUR)
        state.extend_v1(ACCOUNT, sid, 3 * HOUR)
        clock.advance(2 * HOUR.total_seconds())
        assert state.get(ACCOUNT, sid).status is SessionStatus.READY
        clock.advance(HOUR.total_seconds())
        record = state.get(ACCOUNT, sid)
        assert (record.status, record.ended_at) == (SessionStatus.EXPIRED, START + 30 + 3 * 3600)
        assert state.running() == []

    def test_capacity_frees_up_when_a_session_expires(self, clock: VirtualClock) -> None:
        """An expired session gives its VM back, as a stopped one does."""
        state = make_state(clock, capacity={"standard": 1})
        create(state)
        clock.advance(30 + HOUR.total_seconds())
        sid = create(state)
        clock.advance(30)
        assert state.get(ACCOUNT, sid).status is SessionStatus.READY
