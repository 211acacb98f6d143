"""Start the local Langfuse server and the offline judge together, with fresh random keys.

Tests start one such pair per session or per module and point the DAG at it through
``AIRFLOW_CONN_*`` variables.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stack.process import ServerProcess, free_port, start_server

JUDGE_MODEL = "gpt-4.1-mini"


@dataclass(frozen=True)
class LocalStack:
    """The running local Langfuse server and offline judge, with the keys they accept."""

    langfuse: ServerProcess
    judge: ServerProcess
    public_key: str
    secret_key: str
    judge_key: str

    def connection_env(self) -> dict[str, str]:
        """Return the ``AIRFLOW_CONN_*`` variables that point the DAG at this stack."""
        return {
            "AIRFLOW_CONN_LANGFUSE_DEFAULT": json.dumps(
                {
                    "conn_type": "http",
                    "host": self.langfuse.base_url,
                    "login": self.public_key,
                    "password": self.secret_key,
                }
            ),
            "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
                {
                    "conn_type": "openai",
                    "host": f"{self.judge.base_url}/v1",
                    "password": self.judge_key,
                    "extra": {"model": JUDGE_MODEL},
                }
            ),
        }


@contextmanager
def start_local_stack(state_dir: Path) -> Iterator[LocalStack]:
    """Start both servers on free ports of 127.0.0.1; stop both by pid on exit.

    Args:
        state_dir: Where the Langfuse database and both servers' logs go.
    """
    public_key = f"pk-lf-{secrets.token_hex(8)}"
    secret_key = f"sk-lf-{secrets.token_hex(16)}"
    judge_key = f"sk-judge-{secrets.token_hex(16)}"
    langfuse = start_server(
        "stack.langfuse_server",
        free_port(),
        {"LOCAL_LANGFUSE_PUBLIC_KEY": public_key, "LOCAL_LANGFUSE_SECRET_KEY": secret_key},
        state_dir / "langfuse.log",
        args=["--db", str(state_dir / "langfuse.db")],
    )
    try:
        judge = start_server(
            "stack.judge_server",
            free_port(),
            {"LOCAL_JUDGE_API_KEY": judge_key},
            state_dir / "judge.log",
            health_path="/health",
        )
    except BaseException:
        langfuse.stop()
        raise
    try:
        yield LocalStack(langfuse, judge, public_key, secret_key, judge_key)
    finally:
        judge.stop()
        langfuse.stop()
