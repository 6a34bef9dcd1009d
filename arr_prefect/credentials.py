"""The ``RemoteRenderingCredentials`` Block: an ARR account, saved in Prefect.

A Prefect server started where arr-prefect is installed knows the block type (the package
declares a ``prefect.collections`` entry point, which Prefect imports at start-up): it
shows on the UI's Blocks page, with a form. A server that runs elsewhere (Prefect Cloud, a
server without the package) needs it registered once::

    prefect block register -m arr_prefect

Save one from Python (or from the UI: Blocks, +, Remote Rendering Credentials)::

    from arr_prefect import RemoteRenderingCredentials

    RemoteRenderingCredentials(
        account_id="11111111-1111-1111-1111-111111111111",
        account_key="...",
        account_domain="westus2.mixedreality.azure.com",
        region="westus2",
    ).save("arr-production")

Use it:

- every task, ``rendering_session`` and ``LeaseKeeper`` take an instance as
  ``credentials=``: ``credentials=await RemoteRenderingCredentials.aload("arr-production")``;
- ``render_batch`` takes the block too, as its ``credentials`` parameter: the UI's run
  form offers a picker of the saved blocks, and a run's stored parameters hold a reference
  to the block document (``{"$ref": {"block_document_id": ...}}``), never its fields.
  ``run_render_batch(credentials=block)`` passes a saved block the same way. The 0.1.0
  form, the block's name as ``credentials_block="arr-production"``, still works and is
  deprecated (a warning says so);
- ``block.get_client()`` is a ready :class:`~arr_prefect.client.ArrClient` for the account
  (Prefect's ``CredentialsBlock`` interface): ``async with block.get_client() as arr: ...``;
- scripts and the ``arr`` command line turn a name into settings with
  :func:`settings_from_block` (``settings_from_block("arr-production", region="eastus")``,
  keyword overrides win), or into the block with :func:`credentials_from_block`; holding
  a block, ``block.to_settings()``.

Which account is used, highest first: an explicit ``client=``, then the credentials (an
instance, or the block a name designates), then the ``ARR_*`` settings. A block holds
where the account is (id, key, domain, region or service URL, STS URL, API version); the
rest (timeouts, retries, polling, prices) still comes from ``ARR_*``. Its fields are
checked by the same rules as ``ARR_*`` settings (:func:`~arr_prefect.settings.load_settings`),
when the block is built in code, and when it is loaded by name or reference (a block
saved from the UI is checked there).

A flow run that uses a saved block records its **name** (never the key) as the run tag
``arr-credentials:<name>``, so the teardown hooks, which Prefect may run in another
process, reach the same account; the orphan reaper visits every saved block's account.
The key is a ``SecretStr``: masked in ``repr``, JSON, the UI and the API, and unwrapped
only where the STS request is built.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from prefect.blocks.abstract import CredentialsBlock
from pydantic import ConfigDict, Field, SecretStr, ValidationError

from arr_prefect.errors import ConfigurationError
from arr_prefect.models import ApiVersion
from arr_prefect.settings import ArrSettings, load_settings

if TYPE_CHECKING:
    from arr_prefect.client import ArrClient

__all__ = [
    "RemoteRenderingCredentials",
    "block_reference",
    "checked_credentials",
    "credentials_from_block",
    "credentials_name_of",
    "load_credentials",
    "open_client_for",
    "saved_credentials_names",
    "settings_from_block",
]

_ACCOUNT_FIELDS = (
    "account_id",
    "account_key",
    "account_domain",
    "region",
    "service_url",
    "sts_url",
    "api_version",
)


class RemoteRenderingCredentials(CredentialsBlock):
    """An Azure Remote Rendering account: its id and key, where its session API and token
    service are, and which API version to speak. Tasks and flows of arr-prefect (the
    render-batch flow included) take it as `credentials`; `get_client()` is a client for it.
    """

    _block_type_name: ClassVar[str] = "Remote Rendering Credentials"
    _description: ClassVar[str] = (
        "An Azure Remote Rendering account (id, key, domain, region or service URL, STS URL,"
        " API version) for the arr-prefect tasks and flows. The key is stored as a secret."
    )
    # The Azure logo Prefect's own Azure integration (prefect-azure) uses.
    _logo_url: ClassVar[Any] = (
        "https://cdn.sanity.io/images/3ugk85nk/production/"
        "54e3fa7e00197a4fbd1d82ed62494cb58d08c96a-250x250.png"
    )
    # Where an account's id, key and domain are found.
    _documentation_url: ClassVar[Any] = (
        "https://learn.microsoft.com/azure/remote-rendering/how-tos/create-an-account"
    )
    _code_example: ClassVar[str] = """
```python
from arr_prefect import RemoteRenderingCredentials
from arr_prefect.tasks import list_sessions

credentials = RemoteRenderingCredentials.load("BLOCK_NAME")
sessions = await list_sessions(credentials=credentials)
async with credentials.get_client() as arr:  # the core client, for this account
    sessions = await arr.list_sessions()
```"""

    # Pydantic's validation errors would otherwise quote the input, the key included.
    model_config = ConfigDict(hide_input_in_errors=True)

    account_id: str = Field(
        title="Account ID",
        description="The account's GUID (Azure portal: the account's Overview).",
    )
    account_key: SecretStr = Field(
        title="Account key",
        description="A primary or secondary key of the account (Access Keys). Kept secret.",
    )
    account_domain: str | None = Field(
        default=None,
        title="Account domain",
        description="e.g. westus2.mixedreality.azure.com; the token service is sts.<domain>.",
    )
    region: str | None = Field(
        default=None,
        title="Region",
        description="The session API's region, e.g. westus2 (or give a service URL).",
    )
    service_url: str | None = Field(
        default=None,
        title="Service URL",
        description="Session API base URL, instead of the region's (e.g. an emulator).",
    )
    sts_url: str | None = Field(
        default=None,
        title="STS URL",
        description="Token service base URL, instead of the account domain's.",
    )
    api_version: ApiVersion = Field(
        default="v1", title="API version", description="'v1' or '2021-01-01'."
    )

    def block_initialization(self) -> None:
        """Check the account fields by the ``ARR_*`` settings' own rules (not the
        environment) when the block is built in code: a bad block is refused before it is
        saved. Raised here rather than in a pydantic validator, whose error would carry
        the raw input, key included."""
        self._check()

    def _check(self) -> ArrSettings:
        settings = load_settings(environment=False, **self._account_settings())
        if settings.service_url is None and settings.region is None:
            try:
                settings.service_base_url  # noqa: B018 - derived from the account domain
            except ConfigurationError:
                raise ConfigurationError(
                    "no session API endpoint: give a region (e.g. westus2) or a service URL"
                ) from None
        return settings

    def _account_settings(self) -> dict[str, Any]:
        # Every account field, unset ones as None, so no ARR_* variable fills a gap: a
        # block's account is all from the block, never half from the environment.
        return {name: getattr(self, name) for name in _ACCOUNT_FIELDS}

    @property
    def block_name(self) -> str | None:
        """The name this block was saved or loaded as (None for an unsaved instance)."""
        return self._block_document_name

    def to_settings(self, **overrides: Any) -> ArrSettings:
        """:class:`~arr_prefect.settings.ArrSettings` for this account.

        The account fields come from the block; timeouts, retries, polling and prices from
        ``ARR_*`` as usual; ``overrides`` (settings field names) win over both.
        """
        return load_settings(**{**self._account_settings(), **overrides})

    def get_client(self, **overrides: Any) -> ArrClient:
        """A ready :class:`~arr_prefect.client.ArrClient` for this account (Prefect's
        ``CredentialsBlock`` interface): ``async with block.get_client() as arr: ...``, or
        ``await arr.aclose()`` when done. ``overrides`` are settings, as for
        :meth:`to_settings`. Built the way every task builds its clients, so a factory
        installed with :func:`~arr_prefect.client.use_client_factory` (tests, the demo's
        in-process emulator) is honoured."""
        from arr_prefect.client import client_factory

        return client_factory()(self.to_settings(**overrides))


def _not_found(name: str) -> ConfigurationError:
    return ConfigurationError(
        f"no {RemoteRenderingCredentials.__name__} block named {name!r}: check the name on"
        " the Prefect UI's Blocks page, or save one (README: Credentials block)"
    )


def _invalid(name: str, exc: ValidationError) -> ConfigurationError:
    reasons = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'block'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    )
    return ConfigurationError(
        f"{RemoteRenderingCredentials.__name__} block {name!r} is invalid: {reasons}."
        " Fix it on the Prefect UI's Blocks page"
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"a credentials block name is a non-empty string, got {name!r}")
    return name.strip()


async def load_credentials(name: str) -> RemoteRenderingCredentials:
    """Load the saved block ``name``, or raise a :class:`ConfigurationError` saying what
    to do (no such block, or a block whose fields are invalid)."""
    name = _check_name(name)
    try:
        credentials = await RemoteRenderingCredentials.aload(name)
    except (ValidationError, RuntimeError, ValueError) as exc:
        raise _load_error(name, exc) from None
    return _checked(name, credentials)


def _load_error(name: str, exc: Exception) -> Exception:
    # Prefect answers an unknown name with ValueError, and a document that fails the
    # block's schema with RuntimeError from the ValidationError.
    cause = exc if isinstance(exc, ValidationError) else exc.__cause__
    if isinstance(cause, ValidationError):
        return _invalid(name, cause)
    if isinstance(exc, ValueError):
        return _not_found(name)
    return exc


def _checked(name: str, credentials: RemoteRenderingCredentials) -> RemoteRenderingCredentials:
    # Prefect loads a block without running its __init__: check the fields here (a block
    # saved from the UI's form was never checked by our rules).
    try:
        credentials._check()
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{RemoteRenderingCredentials.__name__} block {name!r} is invalid: {exc}."
            " Fix it on the Prefect UI's Blocks page"
        ) from None
    return credentials


def checked_credentials(credentials: RemoteRenderingCredentials) -> RemoteRenderingCredentials:
    """``credentials`` once its fields pass the ``ARR_*`` settings' rules, else a
    :class:`ConfigurationError` naming the block and what to fix. For a block Prefect
    loaded itself (a flow parameter given as a reference to the block document), which
    skipped them."""
    return _checked(credentials.block_name or "(unsaved)", credentials)


def block_reference(credentials: RemoteRenderingCredentials) -> dict[str, Any]:
    """How a saved block is passed as a deployment run's parameter: a reference to its
    document, ``{"$ref": {"block_document_id": "..."}}`` (what the UI's block picker
    sends), which Prefect loads in the flow run. Never the block's fields: their JSON has
    the key masked, so a run given them would authenticate with ``**********``."""
    document_id = credentials._block_document_id
    if document_id is None:
        raise ConfigurationError(
            "a credentials block is passed to a deployment run by reference: save it first"
            " (block.save(name)) or load a saved one (RemoteRenderingCredentials.load(name))"
        )
    return {"$ref": {"block_document_id": str(document_id)}}


async def credentials_name_of(parameter: object) -> str | None:
    """The saved block a flow run's parameter designates, by name: render-batch's
    ``credentials`` (a reference to the block document, read from the Prefect API) or its
    deprecated ``credentials_block`` (the name itself). None for anything else: no
    parameter, a block's fields (a flow called directly stores them, key masked), or a
    reference to a block deleted since."""
    if isinstance(parameter, str):
        return parameter.strip() or None
    reference = parameter.get("$ref") if isinstance(parameter, dict) else None
    if not isinstance(reference, dict):
        return None
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        document_id = UUID(str(reference.get("block_document_id")))
        async with get_client() as prefect:
            document = await prefect.read_block_document(document_id, include_secrets=False)
    except (ObjectNotFound, ValueError):
        return None
    return None if document.is_anonymous else document.name


async def saved_credentials_names() -> list[str]:
    """Names of every saved credentials block (none when the type was never registered)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        async with get_client() as prefect:
            documents = await prefect.read_block_documents_by_type(
                RemoteRenderingCredentials.get_block_type_slug(), include_secrets=False
            )
    except ObjectNotFound:
        return []
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 404:
            return []
        raise
    return sorted(d.name for d in documents if d.name and not d.is_anonymous)


def credentials_from_block(name: str) -> RemoteRenderingCredentials:
    """:func:`load_credentials` for synchronous code (scripts, the command line)."""
    name = _check_name(name)
    try:
        credentials = RemoteRenderingCredentials.load(name, _sync=True)  # type: ignore[call-arg]
    except (ValidationError, RuntimeError, ValueError) as exc:
        raise _load_error(name, exc) from None
    assert isinstance(credentials, RemoteRenderingCredentials)
    return _checked(name, credentials)


def settings_from_block(name: str, **overrides: Any) -> ArrSettings:
    """Settings for the account of the saved block ``name`` (synchronous, for scripts and
    the command line); ``overrides`` win over the block, which wins over ``ARR_*``."""
    return credentials_from_block(name).to_settings(**overrides)


def open_client_for(
    credentials: RemoteRenderingCredentials | None, client: ArrClient | None = None
) -> AbstractAsyncContextManager[ArrClient]:
    """:func:`~arr_prefect.client.open_client` with the precedence every task and flow
    follows: ``client`` if given, else one for ``credentials``, else the ``ARR_*`` one."""
    from arr_prefect.client import open_client

    if client is not None or credentials is None:
        return open_client(client)
    return open_client(settings=credentials.to_settings())
