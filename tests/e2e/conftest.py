"""Fixtures of the end-to-end DAG runs: the parsed DAG and an API client for the stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langfuse.api import LangfuseAPI

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "langfuse_external_eval"


@pytest.fixture
def dag(airflow_db: Path, local_stack: Any) -> Iterator[Any]:
    """Parse the DAG with the real DagBag, with connections pointing at the local stack.

    Each test parses anew because ``dag.test()`` writes the run conf into ``dag.params``.
    """
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        for name, value in local_stack.connection_env().items():
            patch.setenv(name, value)
        bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
        assert bag.import_errors == {}
        yield bag.dags[DAG_ID]


@pytest.fixture(scope="session")
def api(local_stack: Any) -> LangfuseAPI:
    """Return an SDK API client for the local Langfuse server."""
    return LangfuseAPI(
        base_url=local_stack.langfuse.base_url,
        username=local_stack.public_key,
        password=local_stack.secret_key,
    )
