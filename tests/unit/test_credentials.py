"""RemoteRenderingCredentials: the block's fields, its settings, and what it never shows."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

import arr_prefect
from arr_prefect.credentials import RemoteRenderingCredentials
from arr_prefect.errors import ConfigurationError

ACCOUNT_ID = "7c8a4b7e-1f53-4c2e-9a8d-0f1e2d3c4b5a"
ACCOUNT_KEY = "block-k3y-that-must-never-show"
ENV_ACCOUNT_ID = "99999999-8888-4777-8666-555555555555"


def block(**overrides: Any) -> RemoteRenderingCredentials:
    values: dict[str, Any] = {
        "account_id": ACCOUNT_ID,
        "account_key": ACCOUNT_KEY,
        "account_domain": "westeurope.mixedreality.azure.com",
        "region": "westeurope",
        **overrides,
    }
    return RemoteRenderingCredentials(**values)


class TestSettings:
    def test_account_comes_from_the_block(self) -> None:
        """to_settings() carries the block's account, endpoints and API version."""
        settings = block(api_version="2021-01-01").to_settings()
        assert settings.account_id == ACCOUNT_ID
        assert settings.account_key is not None
        assert settings.account_key.get_secret_value() == ACCOUNT_KEY
        assert settings.api_version == "2021-01-01"
        assert (
            settings.service_base_url == "https://remoterendering.westeurope.mixedreality.azure.com"
        )
        assert settings.sts_base_url == "https://sts.westeurope.mixedreality.azure.com"

    def test_block_beats_every_account_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """No ARR_* account field fills a gap the block left: its account is all its own."""
        monkeypatch.setenv("ARR_ACCOUNT_ID", ENV_ACCOUNT_ID)
        monkeypatch.setenv("ARR_ACCOUNT_KEY", "env-key")
        monkeypatch.setenv("ARR_SERVICE_URL", "http://127.0.0.1:1")
        monkeypatch.setenv("ARR_STS_URL", "http://127.0.0.1:2")
        monkeypatch.setenv("ARR_API_VERSION", "2021-01-01")
        settings = block().to_settings()
        assert settings.account_id == ACCOUNT_ID
        assert settings.service_url is None
        assert settings.sts_url is None
        assert settings.api_version == "v1"
        assert settings.service_base_url.startswith("https://remoterendering.westeurope.")

    def test_other_settings_still_come_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Timeouts, polling and prices are not the block's: ARR_* still sets them."""
        monkeypatch.setenv("ARR_POLL_INTERVAL", "7")
        monkeypatch.setenv("ARR_PRICE_STANDARD_PER_HOUR", "3.5")
        settings = block().to_settings()
        assert settings.poll_interval == 7
        assert settings.price_per_hour("standard") == 3.5

    def test_overrides_beat_the_block(self) -> None:
        """Keyword overrides (the command line's flags) win over the block."""
        settings = block().to_settings(region="eastus", poll_interval=9)
        assert settings.region == "eastus"
        assert settings.poll_interval == 9
        assert settings.account_id == ACCOUNT_ID

    def test_service_url_instead_of_a_region(self) -> None:
        """An emulator on loopback: service and STS URLs, no region or domain."""
        settings = block(
            account_domain=None,
            region=None,
            service_url="http://127.0.0.1:8080",
            sts_url="http://127.0.0.1:8080",
        ).to_settings()
        assert settings.service_base_url == settings.sts_base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        pytest.param({"account_id": "not-a-guid"}, ConfigurationError, "account's GUID", id="account-id-not-guid"),
        pytest.param({"account_key": "  "}, ConfigurationError, "ARR_ACCOUNT_KEY is empty", id="blank-key"),
        pytest.param({"region": "moon"}, ConfigurationError, "unknown ARR_REGION", id="unknown-region"),
        pytest.param({"service_url": "http://example.com"}, ConfigurationError, "https://", id="plain-http-off-loopback"),
        pytest.param({"sts_url": "ftp://x"}, ConfigurationError, "http\\(s\\) URL", id="sts-not-http"),
        pytest.param({"api_version": "2019"}, ValidationError, "api_version", id="unknown-api-version"),
        pytest.param({"account_key": 42}, ValidationError, "account_key", id="key-not-a-string"),
        pytest.param({"region": None, "account_domain": None}, ConfigurationError, "give a region", id="no-endpoint"),
    ],
)  # fmt: skip
def test_invalid_fields_are_refused_when_built(
    overrides: dict[str, Any], error: type[Exception], match: str
) -> None:
    """A block is checked by the settings' own rules when built; the error hides the key."""
    with pytest.raises(error, match=match) as raised:
        block(**overrides)
    texts = [str(raised.value), repr(raised.value)]
    if isinstance(raised.value, ValidationError):
        texts.append(repr(raised.value.errors()))
    for text in texts:
        assert ACCOUNT_KEY not in text


def test_environment_does_not_decide_whether_a_block_is_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad ARR_* variable does not make a good block invalid (it fails later, in use)."""
    monkeypatch.setenv("ARR_POLL_INTERVAL", "-1")
    credentials = block()
    with pytest.raises(ConfigurationError, match="poll_interval"):
        credentials.to_settings()


def test_the_key_is_never_shown() -> None:
    """repr, str, JSON and dumps of the block mask the key; to_settings() keeps it masked."""
    credentials = block()
    texts = [
        repr(credentials),
        str(credentials),
        credentials.model_dump_json(),
        repr(credentials.model_dump()),
        json.dumps(credentials.model_dump(mode="json")),
        repr(credentials.to_settings()),
    ]
    for text in texts:
        assert ACCOUNT_KEY not in text
    assert credentials.account_key.get_secret_value() == ACCOUNT_KEY


def test_block_type_shows_in_the_ui_with_a_description() -> None:
    """The block type's name, slug, description, logo and secret field, as the UI gets them."""
    assert RemoteRenderingCredentials.get_block_type_name() == "Remote Rendering Credentials"
    assert RemoteRenderingCredentials.get_block_type_slug() == "remote-rendering-credentials"
    description = RemoteRenderingCredentials.get_description()
    assert description is not None
    assert "Azure Remote Rendering account" in description
    schema = RemoteRenderingCredentials.model_json_schema()
    assert schema["secret_fields"] == ["account_key"]
    assert schema["required"] == ["account_id", "account_key"]
    assert schema["properties"]["api_version"]["enum"] == ["v1", "2021-01-01"]
    assert RemoteRenderingCredentials._logo_url is not None


def test_block_name_is_none_until_saved() -> None:
    """An instance built in code has no name another process could load it by."""
    assert block().block_name is None


def test_importing_the_package_does_not_import_prefect() -> None:
    """`import arr_prefect` (the emulator, the client) stays free of Prefect's import cost,
    while the block is still listed and importable from the package."""
    code = (
        "import sys, arr_prefect;"
        "assert not [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')];"
        "assert 'RemoteRenderingCredentials' in dir(arr_prefect);"
        "from arr_prefect import RemoteRenderingCredentials;"
        "assert 'prefect' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_package_exports_the_block() -> None:
    """arr_prefect.RemoteRenderingCredentials is the credentials module's class."""
    assert "RemoteRenderingCredentials" in arr_prefect.__all__
    assert arr_prefect.RemoteRenderingCredentials is RemoteRenderingCredentials
