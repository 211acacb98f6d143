"""Judge faults under ``dag.test()``: rate limits are waited for, key and quota errors fail fast."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from dag_runs import judge_requests, run_dag, scores_by_trace, window_end_after

from stack.otlp import TraceRecord, send_traces

pytestmark = pytest.mark.e2e

COMPLETIONS = "/v1/chat/completions"


@pytest.fixture
def judge_faults(local_stack: Any) -> Iterator[Any]:
    """Return a function that installs judge fault rules; clear them after the test."""
    url = f"{local_stack.judge.base_url}/_stack/faults"

    def install(*rules: dict[str, Any]) -> None:
        httpx.post(url, json={"rules": list(rules)}, timeout=10).raise_for_status()

    yield install
    httpx.delete(url, timeout=10).raise_for_status()


def seed_one(local_stack: Any, tag: str) -> tuple[datetime, str]:
    """Send one trace with output, starting now, and return its start time and id."""
    now = datetime.now(UTC)
    [trace_id] = send_traces(
        local_stack.langfuse.base_url,
        local_stack.public_key,
        local_stack.secret_key,
        [
            TraceRecord(
                start_time=now,
                input="Why do cats purr?",
                output="Purring is a cosy mystery! Cats buzz their voice box 25 times a second!",
                tags=(tag,),
            )
        ],
    )
    return now, trace_id


def conf_for(tag: str, now: datetime) -> dict[str, Any]:
    """Return the run conf of a window around ``now`` for ``tag``."""
    return {
        "tag": tag,
        "window_start": (now - timedelta(minutes=10)).isoformat(),
        "window_end": (now + timedelta(minutes=10)).isoformat(),
    }


def test_rate_limit_waited_for(dag, local_stack, api, judge_faults):
    now, trace_id = seed_one(local_stack, "judge-rate-limited")
    judge_faults(
        {
            "method": "POST",
            "path_prefix": COMPLETIONS,
            "status": 429,
            "times": 2,
            "retry_after_ms": 700,
            "body": {
                "error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}
            },
        },
    )
    requests_before = judge_requests(local_stack)
    started = time.monotonic()

    dag_run = run_dag(dag, local_stack, conf_for("judge-rate-limited", now), window_end_after(now))

    assert dag_run.state == "success"
    assert time.monotonic() - started >= 1.4
    assert judge_requests(local_stack) - requests_before == 2
    assert scores_by_trace(api, [trace_id])[trace_id] == Counter({"tone": 1, "joyfulness": 1})


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param({"status": 503, "times": 2}, id="service-unavailable"),
        pytest.param({"status": 500, "times": 1}, id="server-error"),
        pytest.param({"status": None, "delay_s": 3.0, "times": 1}, id="read-timeout"),
        pytest.param({"status": None, "drop_connection": True, "times": 2}, id="dropped"),
    ],
)
def test_transient_judge_fault_retried(dag, local_stack, api, judge_faults, rule):
    tag = f"judge-transient-{rule.get('status')}-{'drop' if 'drop_connection' in rule else 'x'}"
    now, trace_id = seed_one(local_stack, tag)
    judge_faults({"method": "POST", "path_prefix": COMPLETIONS, **rule})

    judge_conn = json.loads(local_stack.connection_env()["AIRFLOW_CONN_OPENAI_DEFAULT"])
    judge_conn["extra"]["timeout"] = 1.5
    env = {"AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(judge_conn)}

    dag_run = run_dag(dag, local_stack, conf_for(tag, now), window_end_after(now), env=env)

    assert dag_run.state == "success"
    assert scores_by_trace(api, [trace_id])[trace_id] == Counter({"tone": 1, "joyfulness": 1})


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(
            401,
            {
                "error": {
                    "message": "Incorrect API key",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            id="rejected-key",
        ),
        pytest.param(
            429,
            {
                "error": {
                    "message": "You exceeded your current quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
            id="quota-exhausted",
        ),
    ],
)
def test_permanent_judge_error_fails_fast(dag, local_stack, judge_faults, status, body):
    tag = f"judge-permanent-{status}"
    now, _ = seed_one(local_stack, tag)
    judge_faults(
        {
            "method": "POST",
            "path_prefix": COMPLETIONS,
            "status": status,
            "times": None,
            "body": body,
        }
    )
    started = time.monotonic()

    dag_run = run_dag(dag, local_stack, conf_for(tag, now), window_end_after(now))

    elapsed = time.monotonic() - started
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["evaluate_page.judge_tone"] == "failed"
    assert states["evaluate_page.judge_joyfulness"] == "failed"
    tries = {ti.task_id: ti.try_number for ti in dag_run.get_task_instances()}
    assert tries["evaluate_page.judge_tone"] == 1
    assert elapsed < 30


@pytest.fixture
def judge_script(local_stack: Any) -> Iterator[Any]:
    """Return a function that queues scripted judge replies; clear the queue after the test."""
    url = f"{local_stack.judge.base_url}/_judge/script"

    def queue(replies: list[dict[str, Any]]) -> None:
        httpx.post(url, json={"replies": replies}, timeout=10).raise_for_status()

    yield queue
    httpx.delete(url, timeout=10).raise_for_status()


@pytest.mark.parametrize(
    ("max_ratio", "state"),
    [pytest.param(0.2, "failed", id="above-ratio"), pytest.param(0.6, "success", id="within")],
)
def test_judge_errors_never_scored(dag, local_stack, api, judge_script, max_ratio, state):
    tag = f"judge-errors-{max_ratio}"
    now, trace_id = seed_one(local_stack, tag)
    # Both tone attempts get a reply outside the allowed labels: a judge error, not a score.
    judge_script([{"kind": "tone", "content": '{"tones": ["sarcastic", "bored", "sleepy"]}'}] * 2)
    conf = {**conf_for(tag, now), "max_judge_error_ratio": max_ratio}

    dag_run = run_dag(dag, local_stack, conf, window_end_after(now))

    assert dag_run.state == state
    assert scores_by_trace(api, [trace_id])[trace_id] == Counter({"joyfulness": 1})
