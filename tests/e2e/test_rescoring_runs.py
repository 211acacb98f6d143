"""Re-runs over scored days: backfills, forced re-judging and late traces, under ``dag.test()``.

Traces for past days are sent as OTLP spans with chosen start times, because the Langfuse SDK
stamps spans with the current time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dag_runs import judge_requests, run_dag, run_summary, score_writes, scores_by_trace
from langfuse.api.scores.types.create_score_request import CreateScoreRequest

from include.langfuse_eval import EVALUATOR_VERSION
from include.langfuse_eval.scores import read_trace_scores, score_id
from stack.otlp import TraceRecord, send_traces

pytestmark = pytest.mark.e2e

TAG = "backfill-days"
DAYS = [datetime(2026, 11, day, 5, tzinfo=UTC) for day in (20, 21, 22)]
TRACES_PER_DAY = 3
ANSWERS = [
    "What a great question! Rainbows are sunlight bending in raindrops, a sky-sized prism!",
    "The boiling point of water falls by about 1 degree Celsius per 300 m of altitude.",
    "Please leave the building now and call the gas company: do not switch on any lights.",
]


def day_records(day_start: datetime, offset_hours: float = 7.0) -> list[TraceRecord]:
    """Build the traces of one day, a few hours after the window start."""
    return [
        TraceRecord(
            start_time=day_start + timedelta(hours=offset_hours, minutes=index),
            input=f"Question {index} of {day_start:%d %B}",
            output=ANSWERS[index % len(ANSWERS)],
            tags=(TAG,),
        )
        for index in range(TRACES_PER_DAY)
    ]


@pytest.fixture(scope="module")
def backfill_days(local_stack: Any) -> list[str]:
    """Send three traces on each of three past days and return their trace ids."""
    records = [record for day in DAYS for record in day_records(day)]
    return send_traces(
        local_stack.langfuse.base_url, local_stack.public_key, local_stack.secret_key, records
    )


def run_days(dag: Any, local_stack: Any, conf: dict[str, Any]) -> list[Any]:
    """Run the DAG once per backfill day, like ``airflow backfill create`` over those days."""
    conf = {"tag": TAG, "lookback_hours": 0, **conf}
    return [run_dag(dag, local_stack, conf, day + timedelta(days=1)) for day in DAYS]


def test_first_pass_scores_every_day(dag, local_stack, api, backfill_days):
    judge_before = judge_requests(local_stack)

    runs = run_days(dag, local_stack, {})

    assert [run.state for run in runs] == ["success"] * len(DAYS)
    assert judge_requests(local_stack) - judge_before == 2 * len(backfill_days)
    counts = scores_by_trace(api, backfill_days)
    for trace_id in backfill_days:
        assert counts[trace_id] == Counter({"tone": 1, "joyfulness": 1}), trace_id


def test_backfill_over_scored_days_is_free(dag, local_stack, api, backfill_days):
    before = scores_by_trace(api, backfill_days)
    judge_before = judge_requests(local_stack)
    writes_before = score_writes(local_stack)

    runs = run_days(dag, local_stack, {})

    assert [run.state for run in runs] == ["success"] * len(DAYS)
    assert judge_requests(local_stack) == judge_before
    assert score_writes(local_stack) == writes_before
    assert scores_by_trace(api, backfill_days) == before


def test_forced_backfill_rewrites_same_ids(dag, local_stack, api, backfill_days):
    ids_before = {
        trace_id: sorted(score.id for score in scores)
        for trace_id, scores in read_trace_scores(api, backfill_days).items()
    }
    judge_before = judge_requests(local_stack)

    runs = run_days(dag, local_stack, {"force": True})

    assert [run.state for run in runs] == ["success"] * len(DAYS)
    assert judge_requests(local_stack) - judge_before == 2 * len(backfill_days)
    ids_after = {
        trace_id: sorted(score.id for score in scores)
        for trace_id, scores in read_trace_scores(api, backfill_days).items()
    }
    assert ids_after == ids_before
    counts = scores_by_trace(api, backfill_days)
    for trace_id in backfill_days:
        assert counts[trace_id] == Counter({"tone": 1, "joyfulness": 1}), trace_id


def test_late_trace_scored_next_run(dag, local_stack, api, backfill_days):
    second_day = DAYS[1]
    # Started 30 minutes before the first window's end, but arrives after that day's run.
    [late] = send_traces(
        local_stack.langfuse.base_url,
        local_stack.public_key,
        local_stack.secret_key,
        [
            TraceRecord(
                start_time=second_day - timedelta(minutes=30),
                input="A question asked just before the day ended",
                output="Wonderful timing! Night owls see the most meteors after midnight!",
                tags=(TAG,),
            )
        ],
    )
    judge_before = judge_requests(local_stack)

    without_lookback = run_dag(
        dag, local_stack, {"tag": TAG, "lookback_hours": 0}, second_day + timedelta(days=1)
    )
    with_lookback = run_dag(
        dag, local_stack, {"tag": TAG, "lookback_hours": 2}, second_day + timedelta(days=1)
    )
    again = run_dag(
        dag, local_stack, {"tag": TAG, "lookback_hours": 2}, second_day + timedelta(days=1)
    )

    assert without_lookback.state == "success"
    assert with_lookback.state == "success"
    assert again.state == "success"
    assert judge_requests(local_stack) - judge_before == 2
    assert scores_by_trace(api, [late])[late] == Counter({"tone": 1, "joyfulness": 1})


def test_empty_output_near_end_deferred(dag, local_stack, api):
    tag = "deferred-outputs"
    day = datetime(2026, 11, 25, 5, tzinfo=UTC)
    next_day = day + timedelta(days=1)
    record = TraceRecord(
        start_time=next_day - timedelta(minutes=20),
        input="Tell me about auroras",
        output="",
        tags=(tag,),
    )
    early = TraceRecord(
        start_time=day + timedelta(hours=3), input="And comets?", output="", tags=(tag,)
    )
    base_url, public, secret = (
        local_stack.langfuse.base_url,
        local_stack.public_key,
        local_stack.secret_key,
    )
    [late_id, early_id] = send_traces(base_url, public, secret, [record, early])

    first = run_dag(dag, local_stack, {"tag": tag}, next_day)
    # The output arrives after the first run, on another root observation of the same trace.
    send_traces(
        base_url,
        public,
        secret,
        [replace(record, output="Auroras are solar wind painting the sky green! Magical!")],
    )
    second = run_dag(dag, local_stack, {"tag": tag}, next_day + timedelta(days=1))

    assert first.state == "success"
    assert second.state == "success"
    first_summary = run_summary(first.run_id)
    assert first_summary["skipped"] == {"deferred": 1, "empty_output": 1}
    assert first_summary["deferred"] == 1
    counts = scores_by_trace(api, [late_id, early_id])
    assert counts[late_id] == Counter({"tone": 1, "joyfulness": 1})
    assert counts[early_id] == Counter()


def test_new_version_overwrites_in_place(dag, local_stack, api):
    tag = "older-evaluator"
    day = datetime(2026, 11, 27, 5, tzinfo=UTC)
    [record] = day_records(day)[:1]
    [trace_id] = send_traces(
        local_stack.langfuse.base_url,
        local_stack.public_key,
        local_stack.secret_key,
        [replace(record, tags=(tag,))],
    )
    # Scores that an older evaluator version wrote, with the ids this project derives.
    api.scores.create(
        request=[
            CreateScoreRequest(
                id=score_id(trace_id, name),
                trace_id=trace_id,
                name=name,
                value=value,
                data_type=data_type,
                metadata={"evaluator_version": "2020.1.1"},
                timestamp=record.start_time,
            )
            for name, value, data_type in (
                ("tone", "neutral", "CATEGORICAL"),
                ("joyfulness", 0.5, "NUMERIC"),
            )
        ]
    )
    judge_before = judge_requests(local_stack)

    dag_run = run_dag(dag, local_stack, {"tag": tag, "lookback_hours": 0}, day + timedelta(1))

    assert dag_run.state == "success"
    assert judge_requests(local_stack) - judge_before == 2
    scores = read_trace_scores(api, [trace_id])[trace_id]
    assert sorted(score.name for score in scores) == ["joyfulness", "tone"]
    versions = {score.metadata["evaluator_version"] for score in scores}
    assert versions == {EVALUATOR_VERSION}


def test_root_on_next_day_keeps_one_score(dag, local_stack, api):
    tag = "roots-across-midnight"
    day = datetime(2026, 11, 14, 5, tzinfo=UTC)
    first = TraceRecord(
        start_time=datetime(2026, 11, 14, 23, 59, tzinfo=UTC),
        input="What is a meteor?",
        output="A space pebble burning up in our air, a tiny shooting star!",
        tags=(tag,),
    )
    base_url, public, secret = (
        local_stack.langfuse.base_url,
        local_stack.public_key,
        local_stack.secret_key,
    )
    [trace_id] = send_traces(base_url, public, secret, [first])
    conf = {"tag": tag, "lookback_hours": 0}
    assert run_dag(dag, local_stack, conf, day + timedelta(days=1)).state == "success"
    # A second root of the same trace arrives two minutes later, on the next UTC day.
    send_traces(
        base_url,
        public,
        secret,
        [replace(first, start_time=datetime(2026, 11, 15, 0, 1, tzinfo=UTC), output="Wow!")],
    )

    again = run_dag(dag, local_stack, {**conf, "force": True}, day + timedelta(days=1))

    assert again.state == "success"
    assert scores_by_trace(api, [trace_id])[trace_id] == Counter({"tone": 1, "joyfulness": 1})


def test_scored_traces_leave_cap_free(dag, local_stack, api):
    tag = "cap-and-late"
    day = datetime(2026, 11, 28, 5, tzinfo=UTC)
    base_url, public, secret = (
        local_stack.langfuse.base_url,
        local_stack.public_key,
        local_stack.secret_key,
    )
    today = [replace(record, tags=(tag,)) for record in day_records(day)]
    late = TraceRecord(
        start_time=day - timedelta(minutes=30),
        input="A late question",
        output="Late but lovely: owls really can turn their heads 270 degrees!",
        tags=(tag,),
    )
    send_traces(base_url, public, secret, today)
    conf = {"tag": tag, "lookback_hours": 0, "max_traces": len(today)}
    assert run_dag(dag, local_stack, conf, day + timedelta(days=1)).state == "success"
    [late_id] = send_traces(base_url, public, secret, [late])

    dag_run = run_dag(dag, local_stack, {**conf, "lookback_hours": 2}, day + timedelta(days=1))

    assert dag_run.state == "success"
    summary = run_summary(dag_run.run_id)
    assert summary["already_scored_at_planning"] == len(today)
    assert summary["over_max_traces"] == 0
    assert scores_by_trace(api, [late_id])[late_id] == Counter({"tone": 1, "joyfulness": 1})


def test_defer_capped_at_lookback(dag, local_stack):
    tag = "defer-capped"
    day = datetime(2026, 11, 30, 5, tzinfo=UTC)
    next_day = day + timedelta(days=1)
    send_traces(
        local_stack.langfuse.base_url,
        local_stack.public_key,
        local_stack.secret_key,
        [
            TraceRecord(
                start_time=next_day - timedelta(minutes=m), input="?", output="", tags=(tag,)
            )
            for m in (30, 150)
        ],
    )
    conf = {"tag": tag, "defer_minutes": 180, "lookback_hours": 2}

    dag_run = run_dag(dag, local_stack, conf, next_day)

    assert dag_run.state == "success"
    assert run_summary(dag_run.run_id)["skipped"] == {"deferred": 1, "empty_output": 1}
