"""Hook of the ``langfuse`` connection type: a Langfuse host and a project's API keys.

The connection stores the Langfuse host (Cloud or self-hosted), the project's public key as
login, the secret key as password and, optionally, the project id in the extra. Connections of
other types with the same fields (the ``http`` URIs of ``AIRFLOW_CONN_*`` variables) are read
the same way. The evaluation library is imported inside the methods, so the ProvidersManager
can import this module in any Airflow process.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

from langfuse_eval_provider.provider_info import CONNECTION_TYPE, HOOK_NAME, PROJECT_ID_FIELD

if TYPE_CHECKING:
    from langfuse.api import LangfuseAPI

    from include.langfuse_eval.settings import LangfuseSettings

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PROJECT_LOOKUP_TIMEOUT_S = 10
PROJECT_LOOKUP_MAX_RETRIES = 1


def get_connection(conn_id: str) -> Any:
    """Read a connection, or raise a ConfigurationError that explains how to define it."""
    from include.langfuse_eval.errors import ConfigurationError

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as error:
        raise ConfigurationError(
            f"Connection {conn_id!r} is not defined: create it in the Airflow UI or set "
            f"AIRFLOW_CONN_{conn_id.upper()}."
        ) from error


def langfuse_host(conn: Any) -> str:
    """Return the connection's Langfuse base URL, with a scheme.

    A URI-form connection such as ``http://login:password@host:port`` splits the URL, and its
    scheme becomes the connection type. So an ``http`` connection gets ``http://`` back. A
    host of any other type without a scheme gets ``http://`` on a loopback address, where a
    self-hosted Langfuse listens without TLS, and ``https://`` elsewhere. A scheme in capitals
    is lowered.
    """
    host = (conn.host or "").strip()
    if not host:
        return host
    if "://" in host:
        scheme, rest = host.split("://", 1)
        return f"{scheme.lower()}://{rest}"
    hostname = urlsplit(f"//{host}").hostname
    scheme = "http" if conn.conn_type == "http" or hostname in LOOPBACK_HOSTS else "https"
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}"


@functools.lru_cache(maxsize=16)
def _lookup_project_id(host: str, public_key: str, secret_key: str) -> str:
    # Project-scoped keys see exactly one project. Cached per process, because each link and
    # each task of a run would otherwise ask again.
    from include.langfuse_eval.errors import ConfigurationError
    from include.langfuse_eval.settings import LangfuseSettings

    client = LangfuseSettings(host=host, public_key=public_key, secret_key=secret_key).api()
    projects = client.projects.get(
        request_options={
            "timeout_in_seconds": PROJECT_LOOKUP_TIMEOUT_S,
            "max_retries": PROJECT_LOOKUP_MAX_RETRIES,
        }
    )
    if not projects.data:
        raise ConfigurationError(
            f"Langfuse at {host} returned no project for these keys: use a project's API keys "
            f"or set the {PROJECT_ID_FIELD!r} field of the connection."
        )
    return projects.data[0].id


class LangfuseHook(BaseHook):
    """Read the Langfuse settings of a connection and build the SDK's API client.

    Args:
        langfuse_conn_id: Id of a connection of type ``langfuse`` (or ``http``, with the same
            fields).
    """

    conn_name_attr = "langfuse_conn_id"
    default_conn_name = "langfuse_default"
    conn_type = CONNECTION_TYPE
    hook_name = HOOK_NAME

    def __init__(self, langfuse_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.langfuse_conn_id = langfuse_conn_id

    @functools.cached_property
    def connection(self) -> Any:
        """The connection, read once per hook."""
        return get_connection(self.langfuse_conn_id)

    def get_settings(self) -> LangfuseSettings:
        """Build the library's Langfuse settings and mask the secret key in logs.

        Raises:
            ConfigurationError: The connection is missing, or its host or keys are invalid.
        """
        from include.langfuse_eval.settings import LangfuseSettings

        conn = self.connection
        if conn.password:
            mask_secret(conn.password)
        host = langfuse_host(conn)
        hostname = urlsplit(host).hostname
        if host.startswith("http://") and hostname not in LOOPBACK_HOSTS:
            log.warning(
                "Connection %s sends the Langfuse keys over plain http to %s: use https",
                self.langfuse_conn_id,
                hostname,
            )
        # Keys pasted into the form can end with a newline or spaces, which Langfuse rejects.
        return LangfuseSettings(
            host=host,
            public_key=(conn.login or "").strip(),
            secret_key=(conn.password or "").strip(),
        )

    def get_conn(self) -> LangfuseAPI:
        """Build the SDK's synchronous API client for the connection."""
        return self.get_settings().api()

    def get_project_id(self) -> str:
        """Return the connection's project id: the extra field, else the one the keys belong to.

        Raises:
            ConfigurationError: The connection is invalid or the keys see no project.
            langfuse.api.core.api_error.ApiError: Langfuse rejected the lookup.
            httpx.HTTPError: Langfuse did not reply in time.
        """
        configured = str(self.connection.extra_dejson.get(PROJECT_ID_FIELD) or "").strip()
        if configured:
            return configured
        settings = self.get_settings()
        return _lookup_project_id(settings.host, settings.public_key, settings.secret_key)

    def test_connection(self) -> tuple[bool, str]:
        """Check the host and keys with ``GET /api/public/projects``, for the UI's Test button."""
        try:
            settings = self.get_settings()
            projects = settings.api().projects.get(
                request_options={"timeout_in_seconds": PROJECT_LOOKUP_TIMEOUT_S}
            )
        except Exception as error:
            from include.langfuse_eval.observations import describe_error

            return False, f"Langfuse connection test failed: {describe_error(error)}"
        if not projects.data:
            return False, f"Langfuse at {settings.host} returned no project for these keys."
        project = projects.data[0]
        return True, f"Connected to Langfuse project {project.name!r} ({project.id})."
