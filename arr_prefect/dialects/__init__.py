"""One module per API version, behind one interface, chosen from one registry.

::

    dialect = dialect_for("2021-01-01")
    dialect.client_chooses_session_id  # True: record the ID before the create is sent

:class:`~arr_prefect.client.ArrClient` holds the dialect of its settings' ``api_version``
(``arr.dialect``) and never compares version strings; neither should flows or the CLI.
Adding a version is one new module implementing :class:`Dialect` and one line in
:data:`DIALECTS` (plus its name in :data:`arr_prefect.models.ApiVersion`, which settings
validate against; a test keeps the two the same).
"""

from __future__ import annotations

from arr_prefect.dialects.base import AmbiguousOutcome, Dialect, SessionCalls
from arr_prefect.dialects.v1 import V1
from arr_prefect.dialects.v2021_01_01 import V2021_01_01, new_session_id
from arr_prefect.errors import ConfigurationError

__all__ = [
    "DIALECTS",
    "AmbiguousOutcome",
    "Dialect",
    "SessionCalls",
    "dialect_for",
    "new_session_id",
]

DIALECTS: dict[str, Dialect] = {
    V1.api_version: V1(),
    V2021_01_01.api_version: V2021_01_01(),
}
"""The registry: API version name -> its dialect (one shared, stateless instance each)."""


def dialect_for(api_version: str) -> Dialect:
    """The dialect of ``api_version``; an unknown version is a :class:`ConfigurationError`."""
    try:
        return DIALECTS[api_version]
    except KeyError:
        known = ", ".join(repr(name) for name in DIALECTS)
        raise ConfigurationError(
            f"unknown api_version {api_version!r}: expected one of {known}"
        ) from None
