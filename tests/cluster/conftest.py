"""Fixtures of the scheduler-driven runs: a local stack of their own and a Celery cluster.

The runs use the DAG's default tag, which the `dag.test()` suites also seed into the
session's local stack, so this module starts its own Langfuse server and offline judge.
Every test skips, with the reason, when PostgreSQL or Redis is not reachable on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
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
from stack.local_stack import LocalStack, start_local_stack

CELERY_WORKERS = 2
WORKER_CONCURRENCY = 2


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
) -> Iterator[LocalStack]:
    """Start a Langfuse server and an offline judge for this module, with random keys."""
    with start_local_stack(tmp_path_factory.mktemp("cluster-stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def langfuse_api(cluster_stack: LocalStack) -> LangfuseAPI:
    """Return an SDK API client for the module's Langfuse server."""
    return LangfuseAPI(
        base_url=cluster_stack.langfuse.base_url,
        username=cluster_stack.public_key,
        password=cluster_stack.secret_key,
    )


@pytest.fixture(scope="module")
def cluster(
    cluster_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
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
