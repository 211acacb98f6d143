"""Fixtures of the scheduler-driven runs: a local stack of their own and a Celery cluster.

The runs use the DAG's default tag, which the `dag.test()` suites also seed into the
session's local stack, so this module starts its own Langfuse server and offline judge.
Every test skips, with the reason, when PostgreSQL or Redis is not reachable on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from langfuse.api import LangfuseAPI

from stack.airflow_cluster import (
    AirflowCluster,
    create_database,
    drop_database,
    postgres_available,
    redis_available,
)
from stack.process import ServerProcess, free_port, start_server

CELERY_WORKERS = 2
WORKER_CONCURRENCY = 2


@dataclass(frozen=True)
class ClusterStack:
    """The Langfuse server and offline judge of the cluster runs, with their keys."""

    langfuse: ServerProcess
    judge: ServerProcess
    public_key: str
    secret_key: str
    judge_key: str

    def connection_env(self) -> dict[str, str]:
        """Return the `AIRFLOW_CONN_*` variables that point the DAG at this stack."""
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


@pytest.fixture(scope="module")
def cluster_services() -> None:
    """Skip unless PostgreSQL and Redis accept connections on their default ports of 127.0.0.1."""
    if not postgres_available():
        pytest.skip(
            "PostgreSQL on 127.0.0.1:5432 is unreachable or rejects the postgres user without a "
            "password"
        )
    if not redis_available():
        pytest.skip("Redis on 127.0.0.1:6379 is unreachable or does not reply to PING")


@pytest.fixture(scope="module")
def cluster_stack(
    cluster_services: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterStack]:
    """Start a Langfuse server and an offline judge for this module, with random keys."""
    state_dir = tmp_path_factory.mktemp("cluster-stack")
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
        yield ClusterStack(langfuse, judge, public_key, secret_key, judge_key)
    finally:
        judge.stop()
        langfuse.stop()


@pytest.fixture(scope="module")
def langfuse_api(cluster_stack: ClusterStack) -> LangfuseAPI:
    """Return an SDK API client for the module's Langfuse server."""
    return LangfuseAPI(
        base_url=cluster_stack.langfuse.base_url,
        username=cluster_stack.public_key,
        password=cluster_stack.secret_key,
    )


@pytest.fixture(scope="module")
def cluster(
    cluster_stack: ClusterStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowCluster]:
    """Run Airflow with the CeleryExecutor and two workers on a fresh PostgreSQL database."""
    home: Path = tmp_path_factory.mktemp("airflow-cluster")
    database_url = create_database("airflow_cluster_test")
    extra_env = {**cluster_stack.connection_env(), "LANGFUSE_EVAL_TIMEZONE": "UTC"}
    try:
        with AirflowCluster(
            home,
            database_url=database_url,
            executor="CeleryExecutor",
            workers=CELERY_WORKERS,
            worker_concurrency=WORKER_CONCURRENCY,
            extra_env=extra_env,
        ) as running:
            yield running
    finally:
        drop_database(database_url)
