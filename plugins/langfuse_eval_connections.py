"""Build the evaluation library's settings from Airflow Connections.

Secrets reach the library only through here: ``langfuse_default`` contains the Langfuse host, the
public key as login and the secret key as password; ``openai_default`` is an OpenAI provider
connection with the API key as password, an optional base URL as host (or
``openai_client_kwargs.base_url`` in the extra) and optional ``model``, ``timeout`` (seconds)
and ``max_retries`` in the extra.
Both can come from ``AIRFLOW_CONN_*`` environment variables.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

from include.langfuse_eval.errors import ConfigurationError
from include.langfuse_eval.settings import (
    DEFAULT_JUDGE_MAX_RETRIES,
    DEFAULT_JUDGE_MODEL,
    DEFAULT_JUDGE_TIMEOUT_S,
    JudgeSettings,
    LangfuseSettings,
)

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
LANGFUSE_CONN_ID = "langfuse_default"
OPENAI_CONN_ID = "openai_default"


def _get_connection(conn_id: str):
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as error:
        raise ConfigurationError(
            f"Connection {conn_id!r} is not defined: create it in the Airflow UI or set "
            f"AIRFLOW_CONN_{conn_id.upper()}."
        ) from error


def langfuse_settings(conn_id: str = LANGFUSE_CONN_ID) -> LangfuseSettings:
    """Read the Langfuse host and project keys from a connection."""
    conn = _get_connection(conn_id)
    if conn.password:
        mask_secret(conn.password)
    host = conn.host or ""
    if host and "://" not in host:
        # A URI-form connection such as http://login:password@host:port splits the URL, and
        # its scheme becomes the connection type. Any other host without a scheme gets https.
        scheme = "http" if conn.conn_type == "http" else "https"
        port = f":{conn.port}" if conn.port else ""
        host = f"{scheme}://{host}{port}"
    if host.startswith("http://") and urlsplit(host).hostname not in LOOPBACK_HOSTS:
        log.warning(
            "Connection %s sends the Langfuse keys over plain http to %s: use https",
            conn_id,
            urlsplit(host).hostname,
        )
    return LangfuseSettings(host=host, public_key=conn.login or "", secret_key=conn.password or "")


def judge_settings(conn_id: str = OPENAI_CONN_ID) -> JudgeSettings:
    """Read the judge endpoint, API key and model from an OpenAI provider connection."""
    conn = _get_connection(conn_id)
    extras = conn.extra_dejson
    client_kwargs = dict(extras.get("openai_client_kwargs") or {})
    api_key = client_kwargs.get("api_key") or conn.password or ""
    if api_key:
        mask_secret(api_key)
    base_url = client_kwargs.get("base_url") or conn.host or None
    return JudgeSettings(
        api_key=api_key,
        model=str(extras.get("model") or DEFAULT_JUDGE_MODEL),
        base_url=base_url,
        timeout_s=float(extras.get("timeout") or DEFAULT_JUDGE_TIMEOUT_S),
        max_retries=int(extras.get("max_retries", DEFAULT_JUDGE_MAX_RETRIES)),
    )
