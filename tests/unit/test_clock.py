"""The process default clock: real time unless ARR_TIME_SCALE opts into a scaled clock."""

from __future__ import annotations

import pytest

from arr_prefect import clock as clock_module
from arr_prefect.clock import (
    ScaledClock,
    SystemClock,
    VirtualClock,
    clock_from_environment,
    default_clock,
    use_clock,
)
from arr_prefect.settings import load_settings


@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the process default so the next default_clock() reads the environment."""
    monkeypatch.setattr(clock_module, "_default_clock", None)


class TestClockFromEnvironment:
    def test_real_time_when_unset(self) -> None:
        """Without ARR_TIME_SCALE the clock is real time."""
        assert isinstance(clock_from_environment(), SystemClock)

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param("1", id="one"),
            pytest.param(" 1.0 ", id="one-spaced"),
            pytest.param("", id="empty"),
        ],
    )
    def test_real_time_at_scale_one(self, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
        """A scale of 1 (or an empty value) is real time, not a ScaledClock."""
        monkeypatch.setenv("ARR_TIME_SCALE", raw)
        assert isinstance(clock_from_environment(), SystemClock)

    def test_scaled(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ARR_TIME_SCALE=60 gives a clock running 60 times faster than real time."""
        monkeypatch.setenv("ARR_TIME_SCALE", "60")
        clock = clock_from_environment()
        assert isinstance(clock, ScaledClock)
        assert clock.scale == 60.0

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param("0", id="zero"),
            pytest.param("-2", id="negative"),
            pytest.param("fast", id="not-a-number"),
            pytest.param("nan", id="nan"),
            pytest.param("inf", id="inf"),
        ],
    )
    def test_refuses_bad_values(self, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
        """A scale that is not a positive finite number is an error naming the variable."""
        monkeypatch.setenv("ARR_TIME_SCALE", raw)
        with pytest.raises(ValueError, match="ARR_TIME_SCALE must be a positive number"):
            clock_from_environment()


@pytest.mark.usefixtures("fresh_default")
class TestDefaultClock:
    def test_reads_the_environment_at_first_use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The default is chosen at first use, so a variable set after import counts."""
        monkeypatch.setenv("ARR_TIME_SCALE", "30")
        first = default_clock()
        assert isinstance(first, ScaledClock)
        assert first.scale == 30.0
        assert default_clock() is first

    def test_real_time_by_default(self) -> None:
        """With no opt-in the process runs on real time."""
        assert isinstance(default_clock(), SystemClock)

    def test_use_clock_overrides_and_restores(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """use_clock beats the environment and puts the previous default back."""
        monkeypatch.setenv("ARR_TIME_SCALE", "30")
        virtual = VirtualClock()
        with use_clock(virtual):
            assert default_clock() is virtual
        assert isinstance(default_clock(), ScaledClock)


class TestTimeScaleSetting:
    def test_defaults_to_real_time(self) -> None:
        """The setting is off (1.0) unless asked for."""
        assert load_settings(_env_file=None).time_scale == 1.0

    def test_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ARR_TIME_SCALE is an ARR_* setting like the others."""
        monkeypatch.setenv("ARR_TIME_SCALE", "60")
        assert load_settings(_env_file=None).time_scale == 60.0

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param("0", id="zero"),
            pytest.param("-1", id="negative"),
            pytest.param("inf", id="inf"),
        ],
    )
    def test_refuses_non_positive(self, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
        """A bad scale is a configuration error naming the field."""
        from arr_prefect.errors import ConfigurationError

        monkeypatch.setenv("ARR_TIME_SCALE", raw)
        with pytest.raises(ConfigurationError, match="time_scale"):
            load_settings(_env_file=None)
