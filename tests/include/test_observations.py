"""Tests of the v2 observations reads, the page fetch and the connection settings.

The fake API returns real SDK reply models, parsed from camelCase JSON the way the SDK parses
a server reply.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from langfuse.api.core.api_error import ApiError
from langfuse.api.core.pydantic_utilities import parse_obj_as
from langfuse.api.observations.types.observations_v2meta import ObservationsV2Meta
from langfuse.api.observations.types.observations_v2response import ObservationsV2Response

from include.langfuse_eval.errors import AuthenticationError, ConfigurationError, TransientError
from include.langfuse_eval.observations import (
    FETCH_FIELDS,
    MAX_OBSERVATIONS_LIMIT,
    PLAN_FIELDS,
    TraceRef,
    build_filter,
    call_langfuse,
    dedupe_roots,
    iter_observations,
    list_window_traces,
)
from include.langfuse_eval.planning import PageSpec, fetch_page, plan_pages
from include.langfuse_eval.settings import JudgeSettings, LangfuseSettings, RetryPolicy
from include.langfuse_eval.window import Window, parse_timestamp

TAG = "eval-daily"
FAST = RetryPolicy(attempts=3, initial_wait_s=0.001, max_wait_s=0.005, sdk_max_retries=0)
WINDOW = Window(
    start=datetime(2026, 12, 3, 5, 0, tzinfo=UTC),
    end=datetime(2026, 12, 4, 5, 0, tzinfo=UTC),
)


def row(
    observation_id: str,
    trace_id: str,
    start: str,
    *,
    output: Any = "A cheerful answer.",
    updated: str | None = None,
    input_raw: Any = None,
    environment: str | None = "production",
) -> dict[str, Any]:
    """Return one observation row in the camelCase form the server sends."""
    value: dict[str, Any] = {
        "id": observation_id,
        "traceId": trace_id,
        "startTime": start,
        "projectId": "project-1",
        "type": "SPAN",
        "isRootObservation": True,
        "environment": environment,
        "output": output,
        "input": input_raw,
    }
    if updated is not None:
        value["updatedAt"] = updated
    return value


def reply(rows: list[dict[str, Any]], cursor: str | None = None) -> ObservationsV2Response:
    """Build a v2 observations reply. A reply without a cursor is the last page."""
    meta = {} if cursor is None else {"cursor": cursor}
    return parse_obj_as(ObservationsV2Response, {"data": rows, "meta": meta})


class FakeObservations:
    """Serve replies in order and record every request's arguments."""

    def __init__(self, replies: list[ObservationsV2Response | Exception]) -> None:
        self.replies = list(replies)
        self.calls: list[dict[str, Any]] = []

    def get_many(self, **kwargs: Any) -> ObservationsV2Response:
        self.calls.append(kwargs)
        next_reply = self.replies.pop(0)
        if isinstance(next_reply, Exception):
            raise next_reply
        return next_reply


class FakeApi:
    def __init__(self, replies: list[ObservationsV2Response | Exception]) -> None:
        self.observations = FakeObservations(replies)


def conditions(call: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(call["filter"])


def condition(call: dict[str, Any], column: str, operator: str) -> dict[str, Any]:
    matches = [c for c in conditions(call) if c["column"] == column and c["operator"] == operator]
    assert len(matches) == 1, matches
    return matches[0]


def walk(replies: list[ObservationsV2Response | Exception]) -> tuple[list[str], FakeApi]:
    api = FakeApi(replies)
    filter_json = build_filter(TAG, start_at_or_after=WINDOW.start, end_before=WINDOW.end)
    ids = [o.id for o in iter_observations(api, filter_json=filter_json, fields=PLAN_FIELDS)]
    return ids, api


CURSOR_REPLIES = [
    reply([row("o1", "t1", "2026-12-03T12:00:00Z")], cursor="c1"),
    reply([], cursor="c2"),
    reply([row("o2", "t2", "2026-12-03T11:00:00Z")], cursor="c3"),
    reply([], cursor="c4"),
    reply([row("o3", "t3", "2026-12-03T10:00:00Z")]),
]


def test_walk_reads_all_rows() -> None:
    ids, _ = walk(CURSOR_REPLIES)
    assert ids == ["o1", "o2", "o3"]


def test_walk_passes_each_cursor() -> None:
    _, api = walk(CURSOR_REPLIES)
    assert [call["cursor"] for call in api.observations.calls] == [None, "c1", "c2", "c3", "c4"]


def test_walk_stops_without_cursor() -> None:
    _, api = walk([reply([row("o1", "t1", "2026-12-03T12:00:00Z")]), reply([])])
    assert len(api.observations.calls) == 1


def test_walk_empty_first_page() -> None:
    ids, _ = walk([reply([], cursor="c1"), reply([row("o1", "t1", "2026-12-03T12:00:00Z")])])
    assert ids == ["o1"]


def test_walk_limit_at_most_max() -> None:
    _, api = walk(CURSOR_REPLIES)
    assert all(call["limit"] <= MAX_OBSERVATIONS_LIMIT for call in api.observations.calls)


def test_walk_default_uses_client_timeout() -> None:
    _, api = walk([reply([])])
    assert "timeout_in_seconds" not in api.observations.calls[0]["request_options"]


def test_walk_passes_given_timeout() -> None:
    api = FakeApi([reply([])])
    list(iter_observations(api, filter_json="[]", fields=PLAN_FIELDS, timeout_s=0.25))
    assert api.observations.calls[0]["request_options"]["timeout_in_seconds"] == 0.25


def test_walk_sets_sdk_retries() -> None:
    api = FakeApi([reply([])])
    list(iter_observations(api, filter_json="[]", fields=PLAN_FIELDS, retry_policy=FAST))
    assert api.observations.calls[0]["request_options"]["max_retries"] == FAST.sdk_max_retries


def test_client_timeout_covers_scan() -> None:
    # A v2 observations query may scan for up to 45 s on the server (see settings.py).
    client = langfuse_settings().api()
    assert client._client_wrapper.get_timeout() >= 45


@pytest.mark.parametrize(
    "limit",
    [pytest.param(0, id="zero"), pytest.param(MAX_OBSERVATIONS_LIMIT + 1, id="too-big")],
)
def test_invalid_limit_rejected(limit: int) -> None:
    api = FakeApi([])
    walker = iter_observations(api, filter_json="[]", fields=PLAN_FIELDS, limit=limit)
    with pytest.raises(ConfigurationError, match="page limit"):
        next(walker)


def test_filter_needs_one_end() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        build_filter(TAG, start_at_or_after=WINDOW.start)


PLAN_REPLIES = [
    reply(
        [
            row("o3", "t3", "2026-12-04T04:59:59.999999Z"),
            row("o2b", "t2", "2026-12-03T20:00:00Z"),
        ],
        cursor="c1",
    ),
    reply([], cursor="c2"),
    reply([row("o2a", "t2", "2026-12-03T19:00:00Z"), row("o1", "t1", "2026-12-03T05:00:00Z")]),
]


def plan_call() -> tuple[list[TraceRef], dict[str, Any]]:
    api = FakeApi(list(PLAN_REPLIES))
    traces = list_window_traces(api, tag=TAG, window=WINDOW)
    return traces, api.observations.calls[0]


def test_plan_lists_newest_first() -> None:
    traces, _ = plan_call()
    assert [ref.trace_id for ref in traces] == ["t3", "t2", "t1"]


def test_plan_keeps_root_start_range() -> None:
    traces, _ = plan_call()
    refs = {ref.trace_id: ref for ref in traces}
    assert refs["t2"].newest_start == datetime(2026, 12, 3, 20, 0, tzinfo=UTC)
    assert refs["t2"].oldest_start == datetime(2026, 12, 3, 19, 0, tzinfo=UTC)


def test_plan_reads_core_fields() -> None:
    _, call = plan_call()
    assert call["fields"] == "core"


def test_plan_filter_tag_all_of() -> None:
    _, call = plan_call()
    assert condition(call, "traceTags", "all of")["value"] == [TAG]


def test_plan_filter_tag_type() -> None:
    _, call = plan_call()
    assert condition(call, "traceTags", "all of")["type"] == "arrayOptions"


def test_plan_filter_root_only() -> None:
    _, call = plan_call()
    assert condition(call, "isRootObservation", "=")["value"] is True


def test_plan_filter_start_inclusive() -> None:
    _, call = plan_call()
    assert condition(call, "startTime", ">=")["value"] == "2026-12-03T05:00:00.000000Z"


def test_plan_filter_end_exclusive() -> None:
    _, call = plan_call()
    assert condition(call, "startTime", "<")["value"] == "2026-12-04T05:00:00.000000Z"


def test_plan_filter_has_no_inclusive_end() -> None:
    _, call = plan_call()
    assert not [c for c in conditions(call) if c["operator"] == "<="]


def test_plan_puts_all_in_filter() -> None:
    _, call = plan_call()
    assert not {"from_start_time", "to_start_time", "tags"} & set(call)


PAGE = PageSpec(
    index=2,
    newest_start="2026-12-03T12:00:00.000500Z",
    oldest_start="2026-12-03T10:00:00.000250Z",
    trace_ids=["t-dup", "t-roots", "t-missing", "t-empty", "t-none", "t-chat"],
)

FETCH_ROWS = [
    row(
        "o-dup",
        "t-dup",
        "2026-12-03T12:00:00.0005Z",
        output="Old text.",
        updated="2026-12-03T12:00:01Z",
    ),
    row("o-foreign", "t-foreign", "2026-12-03T11:30:00Z", output="Not this page's trace."),
    row(
        "o-dup",
        "t-dup",
        "2026-12-03T12:00:00.0005Z",
        output="New text.",
        updated="2026-12-03T12:00:09Z",
        input_raw=json.dumps({"args": ["Dup question"], "kwargs": {}}),
    ),
    row(
        "o-root-a",
        "t-roots",
        "2026-12-03T11:00:00Z",
        output=None,
        updated="2026-12-03T11:00:30Z",
    ),
    row(
        "o-root-b",
        "t-roots",
        "2026-12-03T10:59:00Z",
        output="Root with output.",
        updated="2026-12-03T11:00:05Z",
    ),
    row("o-empty", "t-empty", "2026-12-03T10:30:00Z", output=""),
    row("o-none", "t-none", "2026-12-03T10:20:00Z", output=None),
    row(
        "o-chat",
        "t-chat",
        "2026-12-03T10:00:00.00025Z",
        output=json.dumps([{"role": "assistant", "content": " Chat reply. "}]),
        environment=None,
    ),
]


def fetch_call(rows: list[dict[str, Any]] | None = None) -> tuple[Any, dict[str, Any]]:
    data = FETCH_ROWS if rows is None else rows
    api = FakeApi([reply(data[:3], cursor="c1"), reply([], cursor="c2"), reply(data[3:])])
    fetched = fetch_page(api, tag=TAG, window=WINDOW, page=PAGE)
    return fetched, api.observations.calls[0]


def items_by_trace() -> dict[str, Any]:
    fetched, _ = fetch_call()
    return {item.trace_id: item for item in fetched.items}


def test_fetch_reads_io_fields() -> None:
    _, call = fetch_call()
    assert "io" in call["fields"].split(",")


def test_fetch_uses_fetch_fields() -> None:
    _, call = fetch_call()
    assert call["fields"] == FETCH_FIELDS


def test_fetch_filter_tag_all_of() -> None:
    _, call = fetch_call()
    assert condition(call, "traceTags", "all of")["value"] == [TAG]


def test_fetch_filter_root_only() -> None:
    _, call = fetch_call()
    assert condition(call, "isRootObservation", "=")["value"] is True


def test_fetch_filter_oldest_inclusive() -> None:
    _, call = fetch_call()
    assert condition(call, "startTime", ">=")["value"] == "2026-12-03T10:00:00.000250Z"


def test_fetch_filter_newest_inclusive() -> None:
    _, call = fetch_call()
    assert condition(call, "startTime", "<=")["value"] == "2026-12-03T12:00:00.000500Z"


def test_fetch_limit_at_most_max() -> None:
    _, call = fetch_call()
    assert call["limit"] <= MAX_OBSERVATIONS_LIMIT


def test_fetch_follows_cursor() -> None:
    api = FakeApi([reply(FETCH_ROWS[:3], cursor="c1"), reply([], cursor="c2"), reply([])])
    fetch_page(api, tag=TAG, window=WINDOW, page=PAGE)
    assert [call["cursor"] for call in api.observations.calls] == [None, "c1", "c2"]


def test_fetch_items_in_page_order() -> None:
    fetched, _ = fetch_call()
    assert [item.trace_id for item in fetched.items] == ["t-dup", "t-roots", "t-chat"]


def test_duplicate_keeps_newest_update() -> None:
    assert items_by_trace()["t-dup"].output_text == "New text."


def test_duplicate_input_from_newest() -> None:
    assert items_by_trace()["t-dup"].input_text == "Dup question"


def test_root_with_output_wins() -> None:
    assert items_by_trace()["t-roots"].observation_id == "o-root-b"


def test_chat_output_extracted() -> None:
    assert items_by_trace()["t-chat"].output_text == "Chat reply."


def test_item_keeps_environment() -> None:
    assert items_by_trace()["t-dup"].environment == "production"


def test_item_start_time_utc() -> None:
    assert items_by_trace()["t-roots"].start_time == "2026-12-03T10:59:00.000000Z"


def test_foreign_trace_dropped() -> None:
    fetched, _ = fetch_call()
    everything = [item.trace_id for item in fetched.items] + [
        trace_id for ids in fetched.skipped.values() for trace_id in ids
    ]
    assert "t-foreign" not in everything


def test_skipped_reasons_by_trace() -> None:
    fetched, _ = fetch_call()
    assert fetched.skipped == {
        "not_found": ["t-missing"],
        "empty_output": ["t-empty"],
        "missing_output": ["t-none"],
    }


def test_fetch_index_from_page() -> None:
    fetched, _ = fetch_call()
    assert fetched.index == 2


def test_row_outside_window_dropped() -> None:
    page = PageSpec(
        index=0,
        newest_start="2026-12-04T05:00:00.000000Z",
        oldest_start="2026-12-04T05:00:00.000000Z",
        trace_ids=["t-edge"],
    )
    api = FakeApi([reply([row("o-edge", "t-edge", "2026-12-04T05:00:00Z")])])
    fetched = fetch_page(api, tag=TAG, window=WINDOW, page=page)
    assert fetched.skipped == {"not_found": ["t-edge"]}


class FilteringObservations:
    """Apply the startTime conditions of the filter to a fixed set of rows, newest first."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = reply(rows).data

    def get_many(self, **kwargs: Any) -> ObservationsV2Response:
        checks = {
            ">=": lambda moment, bound: moment >= bound,
            "<": lambda moment, bound: moment < bound,
            "<=": lambda moment, bound: moment <= bound,
        }
        matching = list(self.rows)
        for c in json.loads(kwargs["filter"]):
            if c["column"] == "startTime":
                bound = parse_timestamp(c["value"])
                matching = [o for o in matching if checks[c["operator"]](o.start_time, bound)]
        matching.sort(key=lambda o: o.start_time, reverse=True)
        return ObservationsV2Response(data=matching, meta=ObservationsV2Meta())


class FilteringApi:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.observations = FilteringObservations(rows)


SIBLING_ROWS = [
    row("o-late", "t-siblings", "2026-12-03T12:00:00Z", output=None),
    row("o-other", "t-other", "2026-12-03T10:00:00Z", output="Other answer."),
    row("o-early", "t-siblings", "2026-12-03T08:00:00Z", output="Sibling answer."),
]


def test_filtering_fake_applies_range() -> None:
    api = FilteringApi(SIBLING_ROWS)
    assert [ref.trace_id for ref in list_window_traces(api, tag=TAG, window=WINDOW)] == [
        "t-siblings",
        "t-other",
    ]


def test_sibling_root_output_found() -> None:
    api = FilteringApi(SIBLING_ROWS)
    refs = list_window_traces(api, tag=TAG, window=WINDOW)
    first_page = plan_pages(refs, page_size=1, max_traces=None).pages[0]
    fetched = fetch_page(api, tag=TAG, window=WINDOW, page=first_page)
    assert [item.output_text for item in fetched.items] == ["Sibling answer."]


def dedupe_input() -> list[Any]:
    return reply(
        [
            row("o1", "t1", "2026-12-03T10:00:00Z", output="old", updated="2026-12-03T10:00:01Z"),
            row("o1", "t1", "2026-12-03T10:00:00Z", output="new", updated="2026-12-03T10:00:02Z"),
            row("o1", "t1", "2026-12-03T10:00:00Z", output="older", updated="2026-12-03T10:00:00Z"),
            row("o2", "t2", "2026-12-03T09:00:00Z", output="", updated="2026-12-03T09:30:00Z"),
            row("o3", "t2", "2026-12-03T08:00:00Z", output="kept", updated="2026-12-03T08:00:00Z"),
            row("o4", "t3", "2026-12-03T07:00:00Z", output="a", updated="2026-12-03T07:00:00Z"),
            row("o5", "t3", "2026-12-03T07:00:00Z", output="b", updated="2026-12-03T07:00:05Z"),
        ]
    ).data


@pytest.mark.parametrize(
    ("trace_id", "observation_id", "output"),
    [
        pytest.param("t1", "o1", "new", id="duplicate-rows-newest-update"),
        pytest.param("t2", "o3", "kept", id="sibling-with-output-wins"),
        pytest.param("t3", "o5", "b", id="siblings-newest-update-wins"),
    ],
)
def test_dedupe_picks_root(trace_id: str, observation_id: str, output: str) -> None:
    root = dedupe_roots(dedupe_input())[trace_id]
    assert root.id == observation_id
    assert root.output == output


def test_dedupe_first_seen_order() -> None:
    assert list(dedupe_roots(dedupe_input())) == ["t1", "t2", "t3"]


def raising(error: Exception) -> Any:
    def operation(**_: Any) -> Any:
        raise error

    return operation


@pytest.mark.parametrize(
    "status",
    [pytest.param(401, id="unauthorized"), pytest.param(403, id="forbidden")],
)
def test_auth_error_names_connection(status: int) -> None:
    with pytest.raises(AuthenticationError, match=r"HTTP \d+.*of the Langfuse connection"):
        call_langfuse(raising(ApiError(status_code=status, body={})), what="read observations")


@pytest.mark.parametrize(
    "status",
    [pytest.param(400, id="bad-request"), pytest.param(404, id="not-found")],
)
def test_bad_request_is_configuration(status: int) -> None:
    error = ApiError(status_code=status, body={"message": "bad filter"})
    with pytest.raises(ConfigurationError, match="bad filter"):
        call_langfuse(raising(error), what="read observations")


def test_budget_error_reraised_unchanged() -> None:
    error = ApiError(status_code=422, body="out of time")
    with pytest.raises(ApiError) as caught:
        call_langfuse(raising(error), what="read observations", retry_policy=FAST)
    assert caught.value is error


class Flaky:
    """Raise the listed errors on the first calls, then return ``"ok"``."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, **_: Any) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


RETRYABLE = [
    pytest.param(ApiError(status_code=500, body="boom"), id="http-500"),
    pytest.param(ApiError(status_code=524, body="timeout"), id="http-524"),
    pytest.param(ApiError(status_code=429, body="slow down"), id="http-429"),
    pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
    pytest.param(httpx.RemoteProtocolError("peer closed"), id="dropped-connection"),
]


@pytest.mark.parametrize("error", RETRYABLE)
def test_retryable_error_retried(error: Exception) -> None:
    operation = Flaky([error])
    assert call_langfuse(operation, what="read observations", retry_policy=FAST) == "ok"


@pytest.mark.parametrize("error", RETRYABLE)
def test_persistent_error_becomes_transient(error: Exception) -> None:
    with pytest.raises(TransientError, match="read observations failed after 3 attempt"):
        call_langfuse(Flaky([error] * 5), what="read observations", retry_policy=FAST)


def test_attempts_capped_by_policy() -> None:
    operation = Flaky([ApiError(status_code=503, body="")] * 5)
    with pytest.raises(TransientError):
        call_langfuse(operation, what="read observations", retry_policy=FAST)
    assert operation.calls == FAST.attempts


def test_wait_budget_stops_retries() -> None:
    policy = RetryPolicy(attempts=10, initial_wait_s=0.01, max_wait_s=0.01, max_total_wait_s=0.025)
    operation = Flaky([ApiError(status_code=503, body="")] * 10)
    with pytest.raises(TransientError):
        call_langfuse(operation, what="read observations", retry_policy=policy)
    assert operation.calls == 3


def test_retry_logged_without_secret(caplog: pytest.LogCaptureFixture) -> None:
    secret = secrets.token_hex(12)
    error = ApiError(status_code=502, body="bad gateway", headers={"x-echo": secret})
    with caplog.at_level(logging.WARNING):
        call_langfuse(Flaky([error]), what="read observations", retry_policy=FAST)
    assert "attempt 1 of 3 (HTTP 502" in caplog.text
    assert secret not in caplog.text


def test_wait_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=2, initial_wait_s=0.0, max_wait_s=0.2, max_total_wait_s=1.0)
    error = ApiError(status_code=429, body="", headers={"Retry-After": "0.15"})
    started = time.monotonic()
    call_langfuse(Flaky([error]), what="read observations", retry_policy=policy)
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ApiError(status_code=409, body=""), id="http-409"),
        pytest.param(ValueError("bug"), id="value-error"),
    ],
)
def test_other_errors_not_retried(error: Exception) -> None:
    operation = Flaky([error])
    with pytest.raises(type(error)):
        call_langfuse(operation, what="read observations", retry_policy=FAST)
    assert operation.calls == 1


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"attempts": 0}, id="no-attempts"),
        pytest.param({"sdk_max_retries": -1}, id="negative-sdk-retries"),
        pytest.param({"initial_wait_s": -1.0}, id="negative-wait"),
    ],
)
def test_invalid_retry_policy_rejected(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="Retry policy"):
        RetryPolicy(**values)


class BudgetedObservations(FilteringObservations):
    """Raise HTTP 422 for ranges longer than ``max_span``, like a server out of its time budget."""

    def __init__(self, rows: list[dict[str, Any]], max_span: timedelta) -> None:
        super().__init__(rows)
        self.max_span = max_span
        self.answered: list[tuple[datetime, datetime]] = []

    def get_many(self, **kwargs: Any) -> ObservationsV2Response:
        start, end = (parse_timestamp(c["value"]) for c in json.loads(kwargs["filter"])[2:])
        if end - start > self.max_span:
            raise ApiError(status_code=422, body={"message": "query out of time budget"})
        self.answered.append((start, end))
        return super().get_many(**kwargs)


class BudgetedApi:
    def __init__(self, rows: list[dict[str, Any]], max_span: timedelta) -> None:
        self.observations = BudgetedObservations(rows, max_span)


SPREAD_ROWS = [
    row(f"o{hour}", f"t{hour}", f"2026-12-0{3 + (5 + hour) // 24}T{(5 + hour) % 24:02d}:30:00Z")
    for hour in range(23, -1, -1)
]


def test_split_read_equals_whole() -> None:
    whole = list_window_traces(FilteringApi(SPREAD_ROWS), tag=TAG, window=WINDOW)
    budgeted = BudgetedApi(SPREAD_ROWS, timedelta(hours=5))
    assert list_window_traces(budgeted, tag=TAG, window=WINDOW) == whole


def test_split_ranges_tile_window() -> None:
    budgeted = BudgetedApi(SPREAD_ROWS, timedelta(hours=5))
    list_window_traces(budgeted, tag=TAG, window=WINDOW)
    ranges = sorted(budgeted.observations.answered)
    edges = [WINDOW.start + timedelta(hours=3 * step) for step in range(9)]
    assert ranges == list(itertools.pairwise(edges))


def test_split_fetch_equals_whole() -> None:
    refs = list_window_traces(FilteringApi(SPREAD_ROWS), tag=TAG, window=WINDOW)
    page = plan_pages(refs, page_size=24, max_traces=None).pages[0]
    whole = fetch_page(FilteringApi(SPREAD_ROWS), tag=TAG, window=WINDOW, page=page)
    budgeted = BudgetedApi(SPREAD_ROWS, timedelta(hours=5))
    assert fetch_page(budgeted, tag=TAG, window=WINDOW, page=page) == whole


def test_split_stops_at_minimum_span() -> None:
    budgeted = BudgetedApi(SPREAD_ROWS, timedelta(0))
    with pytest.raises(TransientError, match="minimum span of 3600 s"):
        list_window_traces(budgeted, tag=TAG, window=WINDOW, min_split_span=timedelta(hours=1))


def test_walk_propagates_auth_error() -> None:
    with pytest.raises(AuthenticationError, match="Langfuse connection"):
        walk([ApiError(status_code=401, body={})])


def test_call_passes_arguments() -> None:
    assert call_langfuse(lambda **kwargs: kwargs, what="echo", a=1) == {"a": 1}


HOST = "http://127.0.0.1:3000"


def langfuse_settings(**overrides: Any) -> LangfuseSettings:
    values = {"host": HOST, "public_key": "public-id", "secret_key": secrets.token_hex(12)}
    values.update(overrides)
    return LangfuseSettings(**values)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        pytest.param({"host": "127.0.0.1:3000"}, "host .* is invalid", id="host-without-scheme"),
        pytest.param({"host": "ftp://127.0.0.1"}, "host .* is invalid", id="host-other-scheme"),
        pytest.param({"public_key": ""}, "keys are missing", id="empty-public-key"),
        pytest.param({"secret_key": ""}, "keys are missing", id="empty-secret-key"),
    ],
)
def test_langfuse_settings_rejected(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        langfuse_settings(**overrides)


def test_langfuse_repr_hides_secret() -> None:
    secret = secrets.token_hex(12)
    assert secret not in repr(langfuse_settings(secret_key=secret))


def judge_settings(**overrides: Any) -> JudgeSettings:
    values: dict[str, Any] = {"api_key": secrets.token_hex(12)}
    values.update(overrides)
    return JudgeSettings(**values)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        pytest.param({"api_key": ""}, "API key is missing", id="empty-api-key"),
        pytest.param({"model": ""}, "model is empty", id="empty-model"),
        pytest.param({"base_url": "127.0.0.1:8000/v1"}, "base URL", id="base-url-no-scheme"),
        pytest.param({"base_url": ""}, "base URL", id="base-url-empty"),
    ],
)
def test_judge_settings_rejected(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        judge_settings(**overrides)


def test_judge_default_base_url() -> None:
    assert judge_settings().base_url is None


def test_judge_repr_hides_key() -> None:
    key = secrets.token_hex(12)
    assert key not in repr(judge_settings(api_key=key))
