"""Test settings shared by every suite: an isolated Airflow home and the local stack.

Airflow reads its configuration when it is first imported, so the environment is set at module
import, before any test module imports Airflow. Each test session gets its own Airflow home
with a fresh SQLite metadata database.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "DEEPEVAL_TELEMETRY_OPT_OUT": "1",
        "DEEPEVAL_DISABLE_DOTENV": "1",
        "DEEPEVAL_FILE_SYSTEM": "READ_ONLY",
    }
)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO_ROOT), str(REPO_ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]
).rstrip(os.pathsep)

from stack.process import ServerProcess, free_port, start_server  # noqa: E402


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Create the session's Airflow metadata database and return the Airflow home."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return AIRFLOW_HOME


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
                    "extra": {"model": "gpt-4.1-mini"},
                }
            ),
        }


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Start the local Langfuse server and the offline judge on free ports with random keys."""
    state_dir = tmp_path_factory.mktemp("local-stack")
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
