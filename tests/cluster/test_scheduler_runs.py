"""The DAG under a real scheduler: CeleryExecutor, two workers, PostgreSQL and Redis.

One scenario runs against the cluster and the module's local stack. Unpausing the DAG makes
the scheduler start the run of the latest window. At the same time, a run triggered through the
REST API with changed params covers an earlier day. Once both have finished, `airflow backfill
create` queues three earlier days, one of which the triggered run already scored. The tests
below check what each step left behind.

Traces are sent as OTLP spans with chosen start times, because the Langfuse SDK stamps spans
with the current time.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from include.langfuse_eval.scores import read_trace_scores
from stack.airflow_cluster import AirflowCluster, read_dag_constants
from stack.otlp import TraceRecord, send_traces

pytestmark = pytest.mark.cluster

DAG_CONSTANTS = read_dag_constants(
    ["DAG_ID", "DEFAULT_TAG", "JUDGE_POOL", "LANGFUSE_POOL", "SCHEDULE_CRON"]
)
DAG_ID = DAG_CONSTANTS["DAG_ID"]
TAG = DAG_CONSTANTS["DEFAULT_TAG"]
PAGE_TASK_PREFIX = "evaluate_page."
TASK_POOLS = {
    "plan_pages": DAG_CONSTANTS["LANGFUSE_POOL"],
    f"{PAGE_TASK_PREFIX}fetch_page": DAG_CONSTANTS["LANGFUSE_POOL"],
    f"{PAGE_TASK_PREFIX}judge_tone": DAG_CONSTANTS["JUDGE_POOL"],
    f"{PAGE_TASK_PREFIX}judge_joyfulness": DAG_CONSTANTS["JUDGE_POOL"],
    f"{PAGE_TASK_PREFIX}push_scores": DAG_CONSTANTS["LANGFUSE_POOL"],
}
"""The pool of each task that the DAG assigns to one of the project's pools."""

WINDOW_HOUR_UTC = int(DAG_CONSTANTS["SCHEDULE_CRON"].split()[1])
"""Hour of the daily cron schedule, in UTC because the cluster sets LANGFUSE_EVAL_TIMEZONE=UTC."""
TRACES_WITH_OUTPUT = 7
TRACES_WITHOUT_OUTPUT = 2
TRACES_PER_DAY = TRACES_WITH_OUTPUT + TRACES_WITHOUT_OUTPUT
MANUAL_PAGE_SIZE = 3
BACKFILL_PAGE_SIZE = 5
RUN_TIMEOUT_S = 180.0
"""Upper bound of one wait, so that a stuck run fails the test instead of hanging it."""

ANSWERS = [
    "What a fun question! Rainbows are sunlight bending in raindrops, a sky-sized prism!",
    "Water boils at a lower temperature at altitude, about 1 degree Celsius per 300 m.",
    "Leave the building now and call the gas company; do not switch on any lights.",
    "Great news: your order shipped today and should arrive on Thursday. Enjoy!",
]
POLL_INTERVAL_S = 0.5


def latest_window_end(now: datetime) -> datetime:
    """Return the last 05:00 UTC at or before `now`: the end of the latest complete window."""
    end = now.replace(hour=WINDOW_HOUR_UTC, minute=0, second=0, microsecond=0)
    return end if end <= now else end - timedelta(days=1)


@dataclass(frozen=True)
class SeededDay:
    """One 05:00-to-05:00 window and the trace ids seeded into it."""

    start: datetime
    with_output: list[str]
    without_output: list[str]

    @property
    def end(self) -> datetime:
        """The exclusive end of the window."""
        return self.start + timedelta(days=1)


def day_records(start: datetime) -> list[TraceRecord]:
    """Build one day's traces, from 07:00 on, clear of the lookback and deferral margins."""
    return [
        TraceRecord(
            start_time=start + timedelta(hours=2, minutes=20 * index),
            input=f"Question {index} of {start:%d %B}",
            output=ANSWERS[index % len(ANSWERS)] if index < TRACES_WITH_OUTPUT else None,
            tags=(TAG,),
        )
        for index in range(TRACES_PER_DAY)
    ]


@dataclass
class Scenario:
    """The runs of the scenario, as the REST API returned them once finished."""

    scheduled: dict[str, Any]
    manual: dict[str, Any]
    backfill: list[dict[str, Any]]
    judge_calls: int

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Every run of the scenario."""
        return [self.scheduled, self.manual, *self.backfill]


def judge_requests(judge_url: str) -> int:
    """Return how many chat completions the offline judge has served."""
    stats = httpx.get(f"{judge_url}/_judge/stats", timeout=10).json()
    return sum(stats["requests"].values())


def wait_for_scheduled_run(cluster: AirflowCluster) -> dict[str, Any]:
    """Wait until the scheduler has created a scheduled run and return it."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = cluster.client.list_runs(DAG_ID, run_type="scheduled")
        if runs:
            return runs[-1]
        cluster.check_processes()
        time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(
        f"The scheduler created no scheduled run of {DAG_ID} within {RUN_TIMEOUT_S:.0f} s; "
        f"scheduler log tail:\n{cluster.processes['scheduler'].log_tail()}"
    )


def wait_for_backfill(cluster: AirflowCluster) -> dict[str, Any]:
    """Wait until the DAG's only backfill has completed and return it."""
    backfills = cluster.client.list_backfills(DAG_ID)
    assert len(backfills) == 1, backfills
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        backfill = cluster.client.get_backfill(backfills[0]["id"])
        if backfill["completed_at"] is not None:
            return backfill
        cluster.check_processes()
        time.sleep(POLL_INTERVAL_S)
    runs = cluster.client.list_runs(DAG_ID, run_type="backfill")
    raise TimeoutError(
        f"Backfill {backfills[0]['id']} did not complete within {RUN_TIMEOUT_S:.0f} s; runs: "
        f"{[(run['dag_run_id'], run['state']) for run in runs]}"
    )


@pytest.fixture(scope="module")
def days(cluster: AirflowCluster, cluster_stack: Any) -> list[SeededDay]:
    """Seed the latest complete window and the three before it, latest first.

    Seeding waits for the cluster, so that the windows are computed right before the DAG is
    unpaused and the scheduler picks the same latest window.
    """
    end = latest_window_end(datetime.now(UTC))
    seeded = []
    for age in range(4):
        start = end - timedelta(days=age + 1)
        records = day_records(start)
        trace_ids = send_traces(
            cluster_stack.langfuse.base_url,
            cluster_stack.public_key,
            cluster_stack.secret_key,
            records,
        )
        seeded.append(
            SeededDay(
                start=start,
                with_output=trace_ids[:TRACES_WITH_OUTPUT],
                without_output=trace_ids[TRACES_WITH_OUTPUT:],
            )
        )
    return seeded


@pytest.fixture(scope="module")
def scenario(cluster: AirflowCluster, cluster_stack: Any, days: list[SeededDay]) -> Scenario:
    """Run the scheduled and the triggered run side by side, then the backfill."""
    client = cluster.client
    judge_before = judge_requests(cluster_stack.judge.base_url)
    cluster.wait_for_dag(DAG_ID)

    client.set_paused(DAG_ID, paused=False)
    scheduled = wait_for_scheduled_run(cluster)
    earlier = days[1]
    manual_conf = {
        "page_size": MANUAL_PAGE_SIZE,
        "window_start": earlier.start.isoformat(),
        "window_end": earlier.end.isoformat(),
    }
    manual = client.trigger_run(DAG_ID, manual_conf)
    scheduled = client.wait_for_run(DAG_ID, scheduled["dag_run_id"], RUN_TIMEOUT_S)
    manual = client.wait_for_run(DAG_ID, manual["dag_run_id"], RUN_TIMEOUT_S)

    cluster.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        days[3].start.isoformat(),
        "--to-date",
        days[1].start.isoformat(),
        "--dag-run-conf",
        json.dumps({"page_size": BACKFILL_PAGE_SIZE}),
    )
    wait_for_backfill(cluster)
    backfill = client.list_runs(DAG_ID, run_type="backfill")

    return Scenario(
        scheduled=scheduled,
        manual=manual,
        backfill=backfill,
        judge_calls=judge_requests(cluster_stack.judge.base_url) - judge_before,
    )


def summary_of(cluster: AirflowCluster, run: dict[str, Any]) -> dict[str, Any]:
    """Return the summary that `summarize_run` returned in a run."""
    return cluster.client.xcom(DAG_ID, run["dag_run_id"], "summarize_run")


def assert_succeeded(cluster: AirflowCluster, run: dict[str, Any]) -> None:
    """Assert that a run succeeded, listing the task instances that did not."""
    unfinished = {}
    if run["state"] != "success":
        unfinished = cluster.client.unfinished_tasks(DAG_ID, run["dag_run_id"])
    assert run["state"] == "success", f"{run['dag_run_id']}: {unfinished}"


def test_scheduled_run_covers_latest_window(cluster, scenario, days):
    run = scenario.scheduled

    assert_succeeded(cluster, run)
    assert datetime.fromisoformat(run["data_interval_start"]) == days[0].start
    assert datetime.fromisoformat(run["data_interval_end"]) == days[0].end
    summary = summary_of(cluster, run)
    assert summary["traces_found"] == TRACES_PER_DAY
    assert summary["scores_written"] == {
        "joyfulness": TRACES_WITH_OUTPUT,
        "tone": TRACES_WITH_OUTPUT,
    }
    assert summary["skipped"] == {"missing_output": TRACES_WITHOUT_OUTPUT}


def test_triggered_run_applies_params(cluster, scenario, days):
    run = scenario.manual

    assert_succeeded(cluster, run)
    assert run["run_type"] == "manual"
    assert run["conf"]["page_size"] == MANUAL_PAGE_SIZE
    window = cluster.client.xcom(DAG_ID, run["dag_run_id"], "resolve_window")
    assert datetime.fromisoformat(window["start"]) == days[1].start
    assert datetime.fromisoformat(window["end"]) == days[1].end
    tasks = cluster.client.task_instances(DAG_ID, run["dag_run_id"])
    fetches = [ti for ti in tasks if ti["task_id"] == f"{PAGE_TASK_PREFIX}fetch_page"]
    assert len(fetches) == math.ceil(TRACES_PER_DAY / MANUAL_PAGE_SIZE)
    summary = summary_of(cluster, run)
    assert summary["pages"] == math.ceil(TRACES_PER_DAY / MANUAL_PAGE_SIZE)
    assert summary["traces_found"] == TRACES_PER_DAY
    assert summary["scores_written"] == {
        "joyfulness": TRACES_WITH_OUTPUT,
        "tone": TRACES_WITH_OUTPUT,
    }


def test_backfill_runs_each_day(cluster, scenario, days):
    runs = scenario.backfill

    logical_dates = [datetime.fromisoformat(run["logical_date"]) for run in runs]
    assert logical_dates == [days[3].start, days[2].start, days[1].start]
    for run in runs:
        assert_succeeded(cluster, run)
        assert run["conf"]["page_size"] == BACKFILL_PAGE_SIZE
    fresh = {"joyfulness": TRACES_WITH_OUTPUT, "tone": TRACES_WITH_OUTPUT}
    assert summary_of(cluster, runs[0])["scores_written"] == fresh
    assert summary_of(cluster, runs[1])["scores_written"] == fresh
    # The triggered run scored the last day already, so its backfill run judges nothing.
    overlap = summary_of(cluster, runs[2])
    assert overlap["already_scored_at_planning"] == TRACES_WITH_OUTPUT
    assert overlap["judge_calls_total"] == 0
    assert sum(overlap["scores_written"].values()) == 0


def test_one_score_per_trace_and_name(scenario, days, langfuse_api):
    with_output = [trace_id for day in days for trace_id in day.with_output]
    without_output = [trace_id for day in days for trace_id in day.without_output]

    scores = read_trace_scores(langfuse_api, with_output + without_output)

    for trace_id in with_output:
        names = Counter(score.name for score in scores[trace_id])
        assert names == Counter({"tone": 1, "joyfulness": 1}), trace_id
    for trace_id in without_output:
        assert scores[trace_id] == [], trace_id
    # Two judge calls per trace with output: nothing was judged twice across the runs.
    assert scenario.judge_calls == 2 * len(with_output)


def test_both_workers_ran_page_tasks(cluster, scenario):
    hostnames: Counter[str] = Counter()
    for run in scenario.runs:
        for ti in cluster.client.task_instances(DAG_ID, run["dag_run_id"]):
            if ti["task_id"].startswith(PAGE_TASK_PREFIX):
                hostnames[ti["hostname"]] += 1

    assert set(hostnames) == set(cluster.worker_hostnames), hostnames


def test_tasks_ran_in_project_pools(cluster, scenario):
    tasks = cluster.client.task_instances(DAG_ID, scenario.manual["dag_run_id"])

    pools = {ti["task_id"]: ti["pool"] for ti in tasks if ti["task_id"] in TASK_POOLS}
    assert pools == TASK_POOLS
