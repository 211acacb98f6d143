"""The "View in Langfuse" links and the summary asset event of a ``dag.test()`` run.

The links are read the way the api-server serves them: from the serialized DAG in the metadata
database, whose links read the XCom that the task runner stored at the end of each task. The
asset events are read through Airflow's ORM models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from dag_runs import run_dag, window_end_after
from langfuse import Langfuse

from stack.seed import seed_records

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "langfuse_external_eval"
LINK_NAME = "View in Langfuse"
LINK_XCOM_KEY = "_link_LangfuseTracesLink"
ASSET_URI = "langfuse://langfuse_default/tags/ext_eval_pipelines"
LOCAL_PROJECT_ID = "local-project"
TAG = "links-and-assets"
RECORDS = [
    {"input": "Plan a picnic", "output": "Bring lemonade and a frisbee, it will be great fun!"},
    {"input": "Summarise the memo", "output": "The memo lists three budget changes for Q3."},
    {"input": "Say hello", "output": "Hello there, lovely to meet you!"},
]
LINKED_TASKS = ("evaluate_page.fetch_page", "evaluate_page.push_scores", "summarize_run")


@pytest.fixture(scope="module")
def seeded(local_stack: Any) -> dict[str, Any]:
    """Seed three traces with their own tag and return their ids and the seeding time."""
    seeded_at = datetime.now(UTC)
    client = Langfuse(
        public_key=local_stack.public_key,
        secret_key=local_stack.secret_key,
        base_url=local_stack.langfuse.base_url,
        tracing_enabled=True,
        sample_rate=1.0,
    )
    try:
        trace_ids = seed_records(RECORDS, TAG, client=client)
    finally:
        client.shutdown()
    return {"trace_ids": trace_ids, "seeded_at": seeded_at}


def run_conf(seeded: dict[str, Any]) -> dict[str, Any]:
    """Return a run conf whose window, in whole seconds, contains the seeded traces."""
    start = seeded["seeded_at"].replace(microsecond=0) - timedelta(minutes=10)
    return {
        "tag": TAG,
        "window_start": start.isoformat(),
        "window_end": (start + timedelta(hours=1)).isoformat(),
        "defer_minutes": 0,
    }


def served_links(dag_run: Any, task_id: str) -> dict[str, str | None]:
    """Return the task's extra links as the api-server's links endpoint computes them.

    The endpoint reads the serialized DAG of the run and turns an empty link into None.
    """
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = dag_run.get_task_instances(session=session)
        [task_instance] = [item for item in ti if item.task_id == task_id]
        dag = DBDagBag().get_dag_for_run(dag_run, session=session)
        task = dag.get_task(task_id)
        return {
            name: task.get_extra_links(task_instance, name) or None for name in task.extra_links
        }


def stored_link(dag_run: Any, task_id: str) -> str | None:
    """Return the link URL that the task runner stored in XCom for the task."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=dag_run.run_id, dag_ids=DAG_ID, task_ids=task_id, key=LINK_XCOM_KEY
        )
        row = session.scalars(query).first()
        return XComModel.deserialize_value(row) if row is not None else None


def traces_filter(url: str) -> dict[str, Any]:
    """Decode the Langfuse UI ``filter`` parameter into the tag and the time bounds."""
    [encoded] = parse_qs(urlsplit(url).query)["filter"]
    decoded: dict[str, Any] = {}
    for item in encoded.split(","):
        column, _kind, _key, operator, value = item.split(";")
        decoded[f"{column} {operator}"] = unquote(value)
    return decoded


def parse_ui_time(value: str) -> datetime:
    """Parse a Langfuse UI timestamp such as ``2026-12-03T05:00:00.000Z``."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def summary_events(run_id: str) -> list[Any]:
    """Return the events on the summary asset that the run emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == ASSET_URI, AssetEvent.source_run_id == run_id)
        )
        events = list(session.scalars(query))
        session.expunge_all()
        return events


@pytest.fixture(scope="module")
def scored_run(local_stack: Any, seeded: dict[str, Any], airflow_db: Any) -> Any:
    """Run the DAG once over the seeded traces and return the DagRun."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        for name, value in local_stack.connection_env().items():
            patch.setenv(name, value)
        dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags[DAG_ID]
    return run_dag(dag, local_stack, run_conf(seeded), window_end_after(seeded["seeded_at"]))


def test_run_links_served_for_tasks(scored_run: Any) -> None:
    assert scored_run.state == "success"
    for task_id in LINKED_TASKS:
        links = served_links(scored_run, task_id)
        assert list(links) == [LINK_NAME], task_id
        assert links[LINK_NAME], task_id
        assert links[LINK_NAME] == stored_link(scored_run, task_id), task_id


def test_summary_link_filters_run_window(scored_run: Any, local_stack: Any, seeded: Any) -> None:
    url = stored_link(scored_run, "summarize_run")
    conf = run_conf(seeded)

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == local_stack.langfuse.base_url
    assert parts.path == f"/project/{LOCAL_PROJECT_ID}/traces"
    assert traces_filter(url) == {
        "tags any of": TAG,
        "timestamp >=": datetime.fromisoformat(conf["window_start"])
        .astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "timestamp <": datetime.fromisoformat(conf["window_end"])
        .astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }


def test_page_link_covers_page_traces(scored_run: Any, local_stack: Any, seeded: Any) -> None:
    conf = run_conf(seeded)
    window_start = datetime.fromisoformat(conf["window_start"])
    window_end = datetime.fromisoformat(conf["window_end"])
    page_window = scored_run_page(scored_run)

    for task_id in ("evaluate_page.fetch_page", "evaluate_page.push_scores"):
        url = stored_link(scored_run, task_id)
        parts = urlsplit(url)
        conditions = traces_filter(url)
        assert f"{parts.scheme}://{parts.netloc}" == local_stack.langfuse.base_url, task_id
        assert parts.path == f"/project/{LOCAL_PROJECT_ID}/traces", task_id
        assert conditions["tags any of"] == TAG, task_id
        start = parse_ui_time(conditions["timestamp >="])
        end = parse_ui_time(conditions["timestamp <"])
        assert window_start <= start, task_id
        assert end <= window_end, task_id
        assert start <= page_window["oldest"], task_id
        assert page_window["newest"] < end, task_id


def scored_run_page(dag_run: Any) -> dict[str, datetime]:
    """Return the start-time range of the run's only page, from the plan in XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=dag_run.run_id, dag_ids=DAG_ID, task_ids="plan_pages", key="return_value"
        )
        [page] = XComModel.deserialize_value(session.scalars(query).first())
    assert len(page["trace_ids"]) == len(RECORDS)
    return {
        "oldest": datetime.fromisoformat(page["oldest_start"].replace("Z", "+00:00")),
        "newest": datetime.fromisoformat(page["newest_start"].replace("Z", "+00:00")),
    }


def test_summary_asset_event_extra(scored_run: Any, local_stack: Any, seeded: Any) -> None:
    conf = run_conf(seeded)

    [event] = summary_events(scored_run.run_id)

    extra = event.extra
    assert extra["traces_found"] == len(RECORDS)
    assert extra["evaluated"] == len(RECORDS)
    assert extra["scores_written"] == {"joyfulness": len(RECORDS), "tone": len(RECORDS)}
    assert extra["judge_error_ratio"] == 0.0
    assert extra["dry_run"] is False
    assert extra["tag"] == TAG
    assert datetime.fromisoformat(extra["window_start"]) == datetime.fromisoformat(
        conf["window_start"]
    )
    assert datetime.fromisoformat(extra["window_end"]) == datetime.fromisoformat(conf["window_end"])
    assert extra["dag_run_id"] == scored_run.run_id
    assert event.source_task_id == "summarize_run"
    text = json.dumps(extra)
    for secret in (local_stack.public_key, local_stack.secret_key, local_stack.judge_key):
        assert secret not in text
    for record in RECORDS:
        assert record["output"] not in text
        assert record["input"] not in text


def test_failed_summary_emits_no_event(local_stack: Any, seeded: Any, dag: Any) -> None:
    wrong_key = json.loads(local_stack.connection_env()["AIRFLOW_CONN_LANGFUSE_DEFAULT"])
    wrong_key["password"] = "sk-lf-rejected"
    env = {"AIRFLOW_CONN_LANGFUSE_DEFAULT": json.dumps(wrong_key)}

    dag_run = run_dag(
        dag, local_stack, run_conf(seeded), window_end_after(seeded["seeded_at"]), env=env
    )

    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["plan_pages"] == "failed"
    assert states["summarize_run"] == "failed"
    assert summary_events(dag_run.run_id) == []
    assert served_links(dag_run, "summarize_run") == {LINK_NAME: None}
