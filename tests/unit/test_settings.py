"""Settings: ARR_* environment, .env files, validation and derived endpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from arr_prefect.errors import ConfigurationError
from arr_prefect.settings import ArrSettings, is_loopback_url, load_settings

ACCOUNT_ID = "7c8a4b7e-1f53-4c2e-9a8d-0f1e2d3c4b5a"
ACCOUNT_KEY = "k3y-that-must-never-show"


@pytest.fixture(autouse=True)
def _no_arr_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's ARR_* variables out of every test."""
    for name in list(os.environ):
        if name.upper().startswith("ARR_"):
            monkeypatch.delenv(name)


def settings(**overrides: Any) -> ArrSettings:
    return load_settings(_env_file=None, **overrides)


class TestEnvironment:
    def test_reads_arr_prefixed_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ARR_* variables fill the matching fields."""
        monkeypatch.setenv("ARR_ACCOUNT_ID", ACCOUNT_ID)
        monkeypatch.setenv("ARR_ACCOUNT_KEY", ACCOUNT_KEY)
        monkeypatch.setenv("ARR_REGION", "westeurope")
        monkeypatch.setenv("ARR_API_VERSION", "2021-01-01")
        monkeypatch.setenv("ARR_MAX_ATTEMPTS", "3")
        loaded = settings()
        assert loaded.account_id == ACCOUNT_ID
        assert loaded.account_key is not None
        assert loaded.account_key.get_secret_value() == ACCOUNT_KEY
        assert loaded.region == "westeurope"
        assert loaded.api_version == "2021-01-01"
        assert loaded.max_attempts == 3

    def test_unprefixed_variables_are_ignored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ACCOUNT_ID without the ARR_ prefix does not configure anything."""
        monkeypatch.setenv("ACCOUNT_ID", ACCOUNT_ID)
        assert settings().account_id is None

    def test_explicit_values_beat_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A keyword passed to load_settings wins over ARR_*."""
        monkeypatch.setenv("ARR_REGION", "westeurope")
        assert settings(region="eastus").region == "eastus"

    def test_env_file(self, tmp_path: Path) -> None:
        """A .env file given as _env_file is read, with the same prefix."""
        env = tmp_path / ".env"
        env.write_text(
            f"ARR_ACCOUNT_ID={ACCOUNT_ID}\nARR_ACCOUNT_KEY={ACCOUNT_KEY}\n"
            "ARR_ACCOUNT_DOMAIN=westus2.mixedreality.azure.com\nUNRELATED=1\n",
            encoding="utf-8",
        )
        loaded = load_settings(_env_file=env)
        assert loaded.account_id == ACCOUNT_ID
        assert loaded.is_configured
        assert loaded.sts_base_url == "https://sts.westus2.mixedreality.azure.com"

    def test_environment_beats_env_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A real environment variable overrides the .env file."""
        env = tmp_path / ".env"
        env.write_text("ARR_REGION=westeurope\n", encoding="utf-8")
        monkeypatch.setenv("ARR_REGION", "uksouth")
        assert load_settings(_env_file=env).region == "uksouth"


class TestSecrets:
    def test_key_never_in_repr_or_str(self) -> None:
        """The account key is a SecretStr: repr, str and model_dump_json hide it."""
        loaded = settings(account_id=ACCOUNT_ID, account_key=ACCOUNT_KEY)
        for text in (repr(loaded), str(loaded), loaded.model_dump_json(), repr(loaded.account_key)):
            assert ACCOUNT_KEY not in text

    def test_key_never_in_validation_errors(self) -> None:
        """A settings error about other fields does not echo the key."""
        with pytest.raises(ConfigurationError) as info:
            settings(account_id="nope", account_key=ACCOUNT_KEY, region="mars")
        assert ACCOUNT_KEY not in str(info.value)
        assert ACCOUNT_KEY not in repr(info.value)

    def test_blank_key_is_refused(self) -> None:
        """An empty or whitespace key is a configuration error, not a silent None."""
        with pytest.raises(ConfigurationError, match="ARR_ACCOUNT_KEY is empty"):
            settings(account_key="   ")


class TestValidation:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("not-a-guid", id="words"),
            pytest.param("7c8a4b7e1f534c2e9a8d0f1e2d3c4b5a", id="no-dashes"),
            pytest.param("7c8a4b7e-1f53-4c2e-9a8d-0f1e2d3c4b5", id="short"),
            pytest.param("", id="empty"),
        ],
    )
    def test_account_id_must_be_a_guid(self, value: str) -> None:
        """ARR_ACCOUNT_ID must be a GUID."""
        with pytest.raises(ConfigurationError, match=r"account_id: .*GUID"):
            settings(account_id=value)

    def test_account_id_is_normalised(self) -> None:
        """A GUID in upper case with spaces is stored lower-case and stripped."""
        assert settings(account_id=f" {ACCOUNT_ID.upper()} ").account_id == ACCOUNT_ID

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("http://127.0.0.1:8000", id="ipv4-loopback"),
            pytest.param("http://127.9.9.9", id="ipv4-loopback-net"),
            pytest.param("http://localhost:8000/", id="localhost"),
            pytest.param("http://[::1]:8000", id="ipv6-loopback"),
            pytest.param("https://arr.test", id="https"),
        ],
    )
    def test_service_url_accepts_https_and_loopback_http(self, url: str) -> None:
        """https:// anywhere, and http:// to loopback hosts only, are accepted."""
        assert settings(service_url=url, sts_url=url).service_base_url == url.rstrip("/")

    @pytest.mark.parametrize(
        ("field", "url"),
        [
            pytest.param("service_url", "http://arr.test", id="service-http-remote"),
            pytest.param("sts_url", "http://10.0.0.1:8000", id="sts-http-private-ip"),
            pytest.param("service_url", "http://127.0.0.1.nip.io", id="loopback-lookalike"),
            pytest.param("service_url", "http://localhost.evil.test", id="localhost-prefix"),
            pytest.param("service_url", "ftp://arr.test", id="ftp"),
            pytest.param("service_url", "arr.test", id="no-scheme"),
            pytest.param("service_url", "https://arr.test/?x=1", id="query"),
        ],
    )
    def test_refuses_clear_text_and_odd_urls(self, field: str, url: str) -> None:
        """A key must never travel over plain http to a non-loopback host."""
        with pytest.raises(ConfigurationError, match=field):
            settings(**{field: url})

    @pytest.mark.parametrize(
        ("url", "loopback"),
        [
            pytest.param("http://127.0.0.1", True, id="ipv4"),
            pytest.param("http://[::1]", True, id="ipv6"),
            pytest.param("http://localhost", True, id="localhost"),
            pytest.param("http://arr.test", False, id="name"),
            pytest.param("http://192.168.1.1", False, id="lan"),
        ],
    )
    def test_is_loopback_url(self, url: str, loopback: bool) -> None:
        """Only localhost and loopback addresses count as loopback."""
        assert is_loopback_url(url) is loopback

    def test_unknown_region(self) -> None:
        """A region ARR never served is a configuration error listing the real ones."""
        with pytest.raises(ConfigurationError, match=r"unknown ARR_REGION 'mars'.*westus2"):
            settings(region="mars")

    def test_unknown_api_version(self) -> None:
        """Only v1 and 2021-01-01 are API versions."""
        with pytest.raises(ConfigurationError, match="api_version"):
            settings(api_version="2020-01-01")

    def test_bad_account_domain(self) -> None:
        """The account domain must be a host name."""
        with pytest.raises(ConfigurationError, match="account_domain"):
            settings(account_domain="https://westus2.mixedreality.azure.com/")

    @pytest.mark.parametrize(
        "overrides",
        [
            pytest.param({"max_attempts": 0}, id="zero-attempts"),
            pytest.param({"max_attempts": 21}, id="too-many-attempts"),
            pytest.param({"poll_interval": 0}, id="zero-poll"),
            pytest.param({"backoff_initial": 10, "backoff_max": 1}, id="backoff-order"),
        ],
    )
    def test_bounds(self, overrides: dict[str, Any]) -> None:
        """Retry and polling settings outside their bounds are configuration errors."""
        with pytest.raises(ConfigurationError, match="invalid ARR settings"):
            settings(**overrides)


class TestEndpoints:
    def test_service_url_from_region(self) -> None:
        """The session API host is remoterendering.{region}.mixedreality.azure.com."""
        assert (
            settings(region="WestEurope").service_base_url
            == "https://remoterendering.westeurope.mixedreality.azure.com"
        )

    def test_service_url_from_account_domain(self) -> None:
        """Without a region, the account domain's region names the session API host."""
        assert (
            settings(account_domain="eastus2.mixedreality.azure.com").service_base_url
            == "https://remoterendering.eastus2.mixedreality.azure.com"
        )

    def test_override_beats_region(self) -> None:
        """ARR_SERVICE_URL (the emulator) wins over the region."""
        loaded = settings(region="westus2", service_url="https://arr.test/")
        assert loaded.service_base_url == "https://arr.test"

    def test_no_endpoint(self) -> None:
        """Neither region, domain nor override: asking for the URL is a ConfigurationError."""
        with pytest.raises(ConfigurationError, match="ARR_REGION"):
            _ = settings().service_base_url

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            pytest.param(
                {"account_domain": "westus2.mixedreality.azure.com"},
                "https://sts.westus2.mixedreality.azure.com",
                id="account-domain",
            ),
            pytest.param({}, "https://sts.mixedreality.azure.com", id="global"),
            pytest.param({"sts_url": "https://sts.test/"}, "https://sts.test", id="override"),
        ],
    )
    def test_sts_base_url(self, overrides: dict[str, Any], expected: str) -> None:
        """The STS is sts.{accountDomain}, the global host, or the override."""
        assert settings(**overrides).sts_base_url == expected


class TestRequireAccount:
    @pytest.mark.parametrize(
        ("overrides", "missing"),
        [
            pytest.param({}, "set ARR_ACCOUNT_ID and ARR_ACCOUNT_KEY", id="both"),
            pytest.param({"account_id": ACCOUNT_ID}, "set ARR_ACCOUNT_KEY$", id="key"),
            pytest.param({"account_key": ACCOUNT_KEY}, "set ARR_ACCOUNT_ID$", id="id"),
        ],
    )
    def test_names_what_is_missing(self, overrides: dict[str, Any], missing: str) -> None:
        """require_account names exactly the missing variables."""
        loaded = settings(**overrides)
        assert not loaded.is_configured
        with pytest.raises(ConfigurationError, match=missing):
            loaded.require_account()

    def test_returns_id_and_secret(self) -> None:
        """With both set, require_account returns the id and the key still wrapped."""
        account_id, key = settings(account_id=ACCOUNT_ID, account_key=ACCOUNT_KEY).require_account()
        assert account_id == ACCOUNT_ID
        assert key.get_secret_value() == ACCOUNT_KEY
        assert ACCOUNT_KEY not in str(key)


def test_price_per_hour() -> None:
    """Prices are configuration, picked by size case-insensitively."""
    loaded = settings(price_standard_per_hour=3.0, price_premium_per_hour=12.0)
    assert loaded.price_per_hour("Premium") == 12.0
    assert loaded.price_per_hour("standard") == 3.0
    assert settings().price_per_hour("standard") is None
