"""Build the evaluation library's settings from Airflow Connections.

Secrets reach the library only through here. ``langfuse_default`` is a ``langfuse`` connection,
read by :class:`langfuse_eval_provider.hook.LangfuseHook`, with the Langfuse host, the public key
as login and the secret key as password. An ``http`` connection with the same fields works too.
``openai_default`` is an OpenAI provider connection with the API key as password, an optional
base URL as host (or ``openai_client_kwargs.base_url`` in the extra) and optional ``model``,
``timeout`` (seconds) and ``max_retries`` in the extra.
Both can come from ``AIRFLOW_CONN_*`` environment variables.
"""

from __future__ import annotations

from airflow.sdk.log import mask_secret
from langfuse_eval_provider.hook import LangfuseHook, get_connection

from include.langfuse_eval.settings import (
    DEFAULT_JUDGE_MAX_RETRIES,
    DEFAULT_JUDGE_MODEL,
    DEFAULT_JUDGE_TIMEOUT_S,
    JudgeSettings,
    LangfuseSettings,
)

LANGFUSE_CONN_ID = LangfuseHook.default_conn_name
OPENAI_CONN_ID = "openai_default"


def langfuse_settings(conn_id: str = LANGFUSE_CONN_ID) -> LangfuseSettings:
    """Read the Langfuse host and project keys from a connection through the Langfuse hook."""
    return LangfuseHook(conn_id).get_settings()


def judge_settings(conn_id: str = OPENAI_CONN_ID) -> JudgeSettings:
    """Read the judge endpoint, API key and model from an OpenAI provider connection."""
    conn = get_connection(conn_id)
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
