"""Test settings shared by every suite: an isolated Airflow home and the local stack.

Airflow reads its configuration when it is first imported, so the environment is set at module
import, before any test module imports Airflow. Each test session gets its own Airflow home
with a fresh SQLite metadata database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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

from stack.local_stack import LocalStack, start_local_stack  # noqa: E402


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


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Start the local Langfuse server and the offline judge on free ports with random keys."""
    with start_local_stack(tmp_path_factory.mktemp("local-stack")) as stack:
        yield stack
