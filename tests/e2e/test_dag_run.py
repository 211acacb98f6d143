"""Run the whole DAG with ``dag.test()`` against the local Langfuse server and offline judge.

Traces are seeded through the real Langfuse SDK, the DAG reads and writes through the real SDK
over HTTP, and the checks read the scores back through the v3 scores API.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from dag_runs import judge_requests, run_dag, scores_by_trace, stored_outputs, window_end_after
from langfuse import Langfuse

from include.langfuse_eval.extraction import extract_output
from include.langfuse_eval.scores import read_trace_scores, score_id
from include.langfuse_eval.tone import TONES
from stack.seed import seed_records

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DATA = REPO_ROOT / "stack" / "data" / "demo.jsonl"
TAG = "ext_eval_pipelines"


@pytest.fixture(scope="module")
def seeded(local_stack: Any) -> dict[str, Any]:
    """Seed the bundled demo records as tagged traces and return their ids and outputs."""
    records = [json.loads(line) for line in DEMO_DATA.read_text().splitlines() if line.strip()]
    client = Langfuse(
        public_key=local_stack.public_key,
        secret_key=local_stack.secret_key,
        base_url=local_stack.langfuse.base_url,
        tracing_enabled=True,
        sample_rate=1.0,
    )
    try:
        trace_ids = seed_records(records, TAG, client=client)
    finally:
        client.shutdown()
    return {"trace_ids": trace_ids, "records": records, "seeded_at": datetime.now(UTC)}


def test_daily_run_scores_every_trace(dag, local_stack, api, seeded):
    trace_ids = seeded["trace_ids"]
    outputs = stored_outputs(api, TAG)
    with_output = [trace_id for trace_id in trace_ids if extract_output(outputs[trace_id])[0]]
    without_output = sorted(set(trace_ids) - set(with_output))
    run_after = window_end_after(seeded["seeded_at"])

    dag_run = run_dag(dag, local_stack, {"max_traces": None}, run_after)

    assert dag_run.state == "success"
    counts = scores_by_trace(api, trace_ids)
    for trace_id in with_output:
        assert counts[trace_id] == Counter({"tone": 1, "joyfulness": 1}), trace_id
    for trace_id in without_output:
        assert counts[trace_id] == Counter(), trace_id
    assert len(without_output) == 4

    scores = read_trace_scores(api, with_output)
    for trace_id in with_output:
        by_name = {score.name: score for score in scores[trace_id]}
        assert by_name["tone"].value in TONES
        assert 0.0 <= by_name["joyfulness"].value <= 1.0
        assert by_name["tone"].id == score_id(trace_id, "tone")
        assert by_name["joyfulness"].comment
        assert by_name["joyfulness"].metadata["dag_run_id"] == dag_run.run_id


def test_same_window_again_keeps_count(dag, local_stack, api, seeded):
    trace_ids = seeded["trace_ids"]
    run_after = window_end_after(seeded["seeded_at"])
    before = scores_by_trace(api, trace_ids)

    dag_run = run_dag(dag, local_stack, {"max_traces": None}, run_after)

    assert dag_run.state == "success"
    after = scores_by_trace(api, trace_ids)
    assert sum(map(sum, (c.values() for c in after.values()))) == sum(
        map(sum, (c.values() for c in before.values()))
    )
    assert after == before


def test_dry_run_writes_nothing(dag, local_stack, api, seeded):
    start = seeded["seeded_at"] - timedelta(minutes=5)
    conf = {
        "dry_run": True,
        "tag": "untouched-by-tests",
        "window_start": start.isoformat(),
        "window_end": (start + timedelta(hours=1)).isoformat(),
    }
    extra = seed_untagged_trace(local_stack, "untouched-by-tests")
    requests_before = judge_requests(local_stack)

    dag_run = run_dag(dag, local_stack, conf, window_end_after(seeded["seeded_at"]))

    assert dag_run.state == "success"
    assert judge_requests(local_stack) - requests_before == 2
    assert scores_by_trace(api, [extra])[extra] == Counter()


def test_empty_window_succeeds(dag, local_stack):
    requests_before = judge_requests(local_stack)
    conf = {"window_start": "2020-01-01T05:00:00+00:00", "window_end": "2020-01-02T05:00:00+00:00"}

    dag_run = run_dag(dag, local_stack, conf, datetime(2020, 1, 3, 5, tzinfo=UTC))

    assert dag_run.state == "success"
    assert judge_requests(local_stack) == requests_before


def seed_untagged_trace(local_stack: Any, tag: str) -> str:
    """Seed one trace with another tag, so only runs for that tag see it."""
    client = Langfuse(
        public_key=local_stack.public_key,
        secret_key=local_stack.secret_key,
        base_url=local_stack.langfuse.base_url,
        tracing_enabled=True,
        sample_rate=1.0,
    )
    try:
        [trace_id] = seed_records(
            [{"input": "Is the Moon drifting away?", "output": "Yes, about 3.8 cm a year!"}],
            tag,
            client=client,
        )
    finally:
        client.shutdown()
    return trace_id


def test_run_without_logical_date(dag, local_stack, api, seeded):
    trace_ids = seeded["trace_ids"]
    before = scores_by_trace(api, trace_ids)

    with pytest.MonkeyPatch.context() as patch:
        for name, value in local_stack.connection_env().items():
            patch.setenv(name, value)
        dag_run = dag.test(
            run_after=window_end_after(seeded["seeded_at"]) + timedelta(minutes=5),
            logical_date=None,
            run_conf={"max_traces": None},
        )

    assert dag_run.state == "success"
    assert dag_run.logical_date is None
    assert scores_by_trace(api, trace_ids) == before


def test_failed_page_fails_run(dag, local_stack, seeded):
    start = seeded["seeded_at"] - timedelta(minutes=5)
    tag = "rejected-writes"
    seed_untagged_trace(local_stack, tag)
    conf = {
        "tag": tag,
        "window_start": start.isoformat(),
        "window_end": (start + timedelta(hours=1)).isoformat(),
    }
    rule = {"method": "POST", "path_prefix": "/api/public/scores", "status": 401, "times": None}
    faults_url = f"{local_stack.langfuse.base_url}/_stack/faults"
    httpx.post(faults_url, json={"rules": [rule]}, timeout=10).raise_for_status()
    try:
        dag_run = run_dag(dag, local_stack, conf, window_end_after(seeded["seeded_at"]))
    finally:
        httpx.delete(faults_url, timeout=10).raise_for_status()

    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["evaluate_page.push_scores"] == "failed"
    assert states["summarize_run"] == "failed"
