"""`arr`'s configuration: the vendor's arrconfig.json, and which source wins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from arr_prefect.cli.config import (
    ConfigSources,
    account_domain_fields,
    read_arrconfig,
    rendering_domain_fields,
    resolve_settings,
)
from arr_prefect.errors import ConfigurationError

ACCOUNT = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"
THIRD = "33333333-3333-3333-3333-333333333333"
KEY = "config-file-key-DO-NOT-ECHO"

REGIONS_TEXT = (
    "<select from available regions: australiaeast, eastus, eastus2, japaneast, northeurope,"
    " southcentralus, southeastasia, uksouth, westeurope, westus2 or specify the full url>"
)


def vendor_template(**filled: dict[str, str]) -> dict[str, Any]:
    """The vendor's Scripts/arrconfig.json template, with some fields filled in."""
    template: dict[str, Any] = {
        "accountSettings": {
            "arrAccountId": "<fill in the account ID from the Azure Portal>",
            "arrAccountKey": "<fill in the account key from the Azure Portal>",
            "arrAccountDomain": REGIONS_TEXT,
        },
        "renderingSessionSettings": {
            "remoteRenderingDomain": REGIONS_TEXT,
            "vmSize": "<standard or premium>",
            "maxLeaseTime": "<hh:mm:ss>",
        },
        "assetConversionSettings": {
            "resourceGroup": "<resource group which contains the storage account you created,"
            " only needed when uploading or generating SAS>",
            "storageAccountName": "<name of the storage account you created>",
            "blobInputContainerName": "<input container inside the storage container>",
            "blobOutputContainerName": "<output container inside the storage container>",
            "localAssetDirectoryPath": "<fill in a path to a local directory containing your"
            " asset (and files referenced from it like textures)>",
            "inputFolderPath": "<optional: base folderpath in the input container for asset"
            " upload. uses / as dir separator>",
            "inputAssetPath": "<the path to the asset under inputcontainer/inputfolderpath"
            " pointing to the input asset e.g. box.fbx>",
            "outputFolderPath": "<optional: base folderpath in the output container - the"
            " converted asset and log files will be placed here>",
            "outputAssetFileName": "<optional: filename for the converted asset, this will be"
            " placed in the output container under the outputpath>",
        },
    }
    for section, values in filled.items():
        template[section].update(values)
    return template


def write_config(path: Path, document: dict[str, Any], *, bom: bool = True) -> Path:
    """Write it as PowerShell would: 4-space indents, UTF-8 with a BOM (Windows PowerShell)."""
    text = json.dumps(document, indent=4)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env


def no_block(name: str) -> dict[str, Any]:
    raise AssertionError("no block was asked for")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("westus2", {"region": "westus2", "service_url": None}, id="region"),
        pytest.param(
            "WestEurope", {"region": "westeurope", "service_url": None}, id="region-any-case"
        ),
        pytest.param(
            "westus2.mixedreality.azure.com",
            {"region": "westus2", "service_url": None},
            id="region-domain",
        ),
        pytest.param(
            "https://eastus.mixedreality.azure.com",
            {"region": "eastus", "service_url": None},
            id="https-region-domain",
        ),
        pytest.param(
            "https://remoterendering.japaneast.mixedreality.azure.com",
            {
                "region": None,
                "service_url": "https://remoterendering.japaneast.mixedreality.azure.com",
            },
            id="full-url",
        ),
        pytest.param(
            "http://127.0.0.1:8080",
            {"region": None, "service_url": "http://127.0.0.1:8080"},
            id="emulator-url",
        ),
        pytest.param(
            "myregion.mixedreality.example",
            {
                "region": None,
                "service_url": "https://remoterendering.myregion.mixedreality.example",
            },
            id="other-cloud-domain",
        ),
    ],
)
def test_rendering_domain_forms(value: str, expected: dict[str, Any]) -> None:
    """remoteRenderingDomain: a region (as the script's ToDomain finds it) or a full URL."""
    assert rendering_domain_fields(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "australiaeast",
            {"account_domain": "australiaeast.mixedreality.azure.com", "sts_url": None},
            id="region",
        ),
        pytest.param(
            "westus2.mixedreality.azure.com",
            {"account_domain": "westus2.mixedreality.azure.com", "sts_url": None},
            id="region-domain",
        ),
        pytest.param(
            "https://sts.eastus.mixedreality.azure.com",
            {"account_domain": None, "sts_url": "https://sts.eastus.mixedreality.azure.com"},
            id="full-url",
        ),
    ],
)
def test_account_domain_forms(value: str, expected: dict[str, Any]) -> None:
    """arrAccountDomain: a region, its domain, or the token service's full URL."""
    assert account_domain_fields(value) == expected


@pytest.mark.parametrize("value", ["not a domain", "westus9", "ftp//x"])
def test_domain_that_is_neither_region_nor_url_is_refused(value: str) -> None:
    """A value that is no region, domain or URL is refused, naming the accepted forms."""
    with pytest.raises(ConfigurationError, match="neither a region"):
        rendering_domain_fields(value)


def test_vendor_template_filled_in_configures_everything(tmp_path: Path) -> None:
    """The vendor's template with its account and session fields filled in is all it takes."""
    path = write_config(
        tmp_path / "arrconfig.json",
        vendor_template(
            accountSettings={
                "arrAccountId": ACCOUNT,
                "arrAccountKey": KEY,
                "arrAccountDomain": "westeurope",
            },
            renderingSessionSettings={
                "remoteRenderingDomain": "westeurope",
                "vmSize": "premium",
                "maxLeaseTime": "01:30:00",
            },
        ),
    )
    settings, config = resolve_settings(ConfigSources(config_file=path), no_block)
    assert settings.account_id == ACCOUNT
    assert settings.account_key is not None
    assert settings.account_key.get_secret_value() == KEY
    assert settings.sts_base_url == "https://sts.westeurope.mixedreality.azure.com"
    assert settings.service_base_url == "https://remoterendering.westeurope.mixedreality.azure.com"
    assert config is not None
    assert config.default_size() is not None
    assert config.default_size() == "Premium"
    assert config.default_lease() is not None
    assert str(config.default_lease()) == "1:30:00"


def test_unfilled_template_names_the_field_and_never_the_key(tmp_path: Path) -> None:
    """A key left as the template's placeholder is reported by its field name."""
    path = write_config(
        tmp_path / "arrconfig.json",
        vendor_template(accountSettings={"arrAccountId": ACCOUNT, "arrAccountDomain": "westus2"}),
    )
    with pytest.raises(ConfigurationError) as caught:
        resolve_settings(ConfigSources(config_file=path), no_block)
    assert "accountSettings.arrAccountKey is not filled in" in str(caught.value)


def test_bad_json_says_so(tmp_path: Path) -> None:
    """A stray comma is reported as a parse error of that file, not a traceback."""
    path = tmp_path / "arrconfig.json"
    path.write_text('{"accountSettings": {"arrAccountId": "x",}}')
    with pytest.raises(ConfigurationError, match="stray comma"):
        read_arrconfig(path)


def test_bad_lease_in_config_reported_when_used(tmp_path: Path) -> None:
    """maxLeaseTime is checked when create uses it, with the script's wording."""
    path = write_config(
        tmp_path / "arrconfig.json",
        vendor_template(renderingSessionSettings={"maxLeaseTime": "four hours", "vmSize": "huge"}),
    )
    config = read_arrconfig(path)
    with pytest.raises(ConfigurationError, match="hh:mm:ss"):
        config.default_lease()
    with pytest.raises(ConfigurationError, match="standard, premium"):
        config.default_size()


def test_precedence_flags_block_env_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flags > --block > ARR_* env > --config, field by field."""
    path = write_config(
        tmp_path / "arrconfig.json",
        vendor_template(
            accountSettings={
                "arrAccountId": ACCOUNT,
                "arrAccountKey": KEY,
                "arrAccountDomain": "westus2",
            },
            renderingSessionSettings={"remoteRenderingDomain": "westus2"},
        ),
    )
    sources = ConfigSources(config_file=path)
    settings, _ = resolve_settings(sources, no_block)
    assert (settings.account_id, settings.api_version) == (ACCOUNT, "v1")

    monkeypatch.setenv("ARR_ACCOUNT_ID", OTHER)
    monkeypatch.setenv("ARR_API_VERSION", "2021-01-01")
    settings, _ = resolve_settings(sources, no_block)
    assert (settings.account_id, settings.api_version) == (OTHER, "2021-01-01")
    assert settings.account_key is not None
    assert settings.account_key.get_secret_value() == KEY  # still from the file

    def block(name: str) -> dict[str, Any]:
        assert name == "ops"
        return {"account_id": THIRD, "account_key": "block-key", "region": "uksouth",
                "account_domain": None, "service_url": None, "sts_url": None,
                "api_version": "2021-01-01"}  # fmt: skip

    sources.block = "ops"
    monkeypatch.setenv("ARR_API_VERSION", "v1")
    settings, _ = resolve_settings(sources, block)
    assert (settings.account_id, settings.api_version) == (THIRD, "2021-01-01")
    assert settings.service_base_url == "https://remoterendering.uksouth.mixedreality.azure.com"
    # The whole account is the block's: the file's account domain does not fill its gap.
    assert settings.sts_base_url == "https://sts.mixedreality.azure.com"

    sources.flags = {"account_id": ACCOUNT, "api_version": "v1"}
    settings, _ = resolve_settings(sources, block)
    assert (settings.account_id, settings.api_version) == (ACCOUNT, "v1")
    assert settings.account_key is not None
    assert settings.account_key.get_secret_value() == "block-key"


def test_endpoint_taken_whole_from_the_highest_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """A --region flag beats ARR_SERVICE_URL from the environment (not only ARR_REGION)."""
    monkeypatch.setenv("ARR_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("ARR_ACCOUNT_KEY", KEY)
    monkeypatch.setenv("ARR_SERVICE_URL", "http://127.0.0.1:8080")
    settings, _ = resolve_settings(ConfigSources(), no_block)
    assert settings.service_base_url == "http://127.0.0.1:8080"
    settings, _ = resolve_settings(ConfigSources(flags={"region": "westus2"}), no_block)
    assert settings.service_base_url == "https://remoterendering.westus2.mixedreality.azure.com"


def test_missing_account_names_every_way_to_give_it() -> None:
    """With nothing configured the message says which settings to give."""
    with pytest.raises(
        ConfigurationError, match=r"ARR_ACCOUNT_ID or --account-id.*ARR_ACCOUNT_KEY"
    ):
        resolve_settings(ConfigSources(), no_block)


def test_missing_endpoint_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An account with no region, URL or account domain is refused before any request."""
    monkeypatch.setenv("ARR_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("ARR_ACCOUNT_KEY", KEY)
    with pytest.raises(ConfigurationError, match="no session API endpoint"):
        resolve_settings(ConfigSources(), no_block)
