"""Tests of the local Langfuse server, through the real Langfuse SDK over HTTP."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from langfuse import Langfuse, propagate_attributes
from langfuse.api import (
    CreateScoreBatchResponse,
    CreateScoreBatchResults,
    CreateScoreRequest,
    HealthResponse,
    ObservationsV2Response,
    Projects,
)
from langfuse.api.client import LangfuseAPI
from langfuse.api.commons.errors.error import Error
from langfuse.api.commons.errors.unauthorized_error import UnauthorizedError
from langfuse.api.core.api_error import ApiError
from langfuse.api.scores.types.get_scores_v3response import GetScoresV3Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from stack import seed
from stack.process import (
    REPO_ROOT,
    ServerStartError,
    free_port,
    start_server,
    stop_pidfile,
    write_pidfile,
)

if TYPE_CHECKING:
    from conftest import LocalLangfuse

LONG = {"timeout_in_seconds": 30}
NO_RETRY = {"timeout_in_seconds": 30, "max_retries": 0}
BASE_TIME = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)


def unique_tag() -> str:
    """Return a tag no other test uses, so filters isolate each test's data."""
    return f"t-{uuid.uuid4().hex[:12]}"


def tags_filter(*tags: str, operator: str = "all of") -> list[dict[str, Any]]:
    """Return a v2 filter condition on trace tags."""
    return [{"type": "arrayOptions", "column": "traceTags", "operator": operator, "value": tags}]


def root_filter() -> dict[str, Any]:
    """Return the v2 filter condition that keeps root observations."""
    return {"type": "boolean", "column": "isRootObservation", "operator": "=", "value": True}


def attribute(key: str, value: Any) -> KeyValue:
    """Build an OTLP attribute from a string, a bool or a list of strings."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, list):
        items = [AnyValue(string_value=item) for item in value]
        return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=items)))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_span(
    start: datetime,
    tags: list[str],
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    output: str = "out",
) -> dict[str, Any]:
    """Describe a root span for `otlp_body`."""
    return {
        "trace_id": trace_id or secrets.token_hex(16),
        "span_id": span_id or secrets.token_hex(8),
        "start": start,
        "tags": tags,
        "output": output,
    }


def otlp_body(spans: list[dict[str, Any]]) -> bytes:
    """Serialize spans made by `make_span` as an OTLP ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for spec in spans:
        span = scope_spans.spans.add()
        span.trace_id = bytes.fromhex(spec["trace_id"])
        span.span_id = bytes.fromhex(spec["span_id"])
        span.name = "app"
        start_ns = int(spec["start"].timestamp() * 1_000_000) * 1000
        span.start_time_unix_nano = start_ns
        span.end_time_unix_nano = start_ns + 5_000_000
        span.attributes.extend(
            [
                attribute("langfuse.trace.tags", spec["tags"]),
                attribute("langfuse.observation.input", '{"q": 1}'),
                attribute("langfuse.observation.output", spec["output"]),
            ]
        )
    return request.SerializeToString()


def post_spans(
    server: LocalLangfuse, http: httpx.Client, spans: list[dict[str, Any]], *, compress: bool
) -> httpx.Response:
    """Post spans to the OTLP endpoint with Basic auth, gzipped or not."""
    body = otlp_body(spans)
    headers = {"Content-Type": "application/x-protobuf"}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    reply = http.post(
        "/api/public/otel/v1/traces",
        content=body,
        headers=headers,
        auth=(server.public_key, server.secret_key),
    )
    reply.raise_for_status()
    return reply


def walk(langfuse: Langfuse, limit: int, **kwargs: Any) -> tuple[list[str], int, int]:
    """Follow cursors to the end; return the ids, the page count and the empty page count."""
    ids: list[str] = []
    pages = 0
    empty = 0
    cursor = None
    while True:
        page = langfuse.api.observations.get_many(
            limit=limit, cursor=cursor, request_options=LONG, **kwargs
        )
        pages += 1
        empty += 0 if page.data else 1
        ids.extend(item.id for item in page.data)
        cursor = page.meta.cursor
        if cursor is None:
            return ids, pages, empty
        assert pages < 200, "cursor walk does not end"


def score(trace_id: str, name: str = "quality", value: float | str = 0.5, **kwargs: Any) -> Any:
    """Build an SDK score request."""
    return CreateScoreRequest(trace_id=trace_id, name=name, value=value, **kwargs)


@pytest.fixture(scope="module")
def window_tag(langfuse_server: LocalLangfuse, http: httpx.Client) -> str:
    """Seed six roots at BASE_TIME plus -1 ms, 0, 1 h, 2 h, 24 h - 1 ms and 24 h."""
    tag = unique_tag()
    offsets = [
        timedelta(milliseconds=-1),
        timedelta(0),
        timedelta(hours=1),
        timedelta(hours=2),
        timedelta(hours=24, milliseconds=-1),
        timedelta(hours=24),
    ]
    spans = [make_span(BASE_TIME + offset, [tag]) for offset in offsets]
    post_spans(langfuse_server, http, spans, compress=False)
    return tag


def test_health_parses(langfuse: Langfuse) -> None:
    health = langfuse.api.health.health()

    assert isinstance(health, HealthResponse)
    assert health.status == "OK"
    assert health.version == "4.0.0-local"


def test_projects_and_auth_check(langfuse: Langfuse) -> None:
    projects = langfuse.api.projects.get()

    assert isinstance(projects, Projects)
    assert len(projects.data) == 1
    assert langfuse.auth_check() is True


@pytest.mark.parametrize(
    ("public_ok", "secret_ok"),
    [
        pytest.param(True, False, id="wrong-secret"),
        pytest.param(False, True, id="wrong-public"),
        pytest.param(False, False, id="both-wrong"),
    ],
)
def test_wrong_keys_get_401(
    langfuse_server: LocalLangfuse, public_ok: bool, secret_ok: bool
) -> None:
    api = LangfuseAPI(
        base_url=langfuse_server.base_url,
        username=langfuse_server.public_key if public_ok else f"pk-{secrets.token_hex(4)}",
        password=langfuse_server.secret_key if secret_ok else f"sk-{secrets.token_hex(4)}",
    )

    with pytest.raises(UnauthorizedError):
        api.projects.get()
    with pytest.raises(UnauthorizedError):
        api.observations.get_many(limit=1)


def test_missing_auth_gets_401_json(http: httpx.Client) -> None:
    reply = http.get("/api/public/v2/observations")

    assert reply.status_code == 401
    assert "message" in reply.json()


def test_sdk_trace_lands_as_root(langfuse: Langfuse) -> None:
    tag = unique_tag()
    records = [
        {"input": {"question": "What is 2+2?"}, "output": "4"},
        {"input": "plain text input", "output": {"answer": [1, 2]}},
        {"input": "no output"},
    ]

    trace_ids = seed.seed_records(records, tag, client=langfuse, trace_name="demo-app")
    page = langfuse.api.observations.get_many(
        fields="core,basic,io,trace_context",
        filter=json.dumps([*tags_filter(tag), root_filter()]),
        request_options=LONG,
    )

    assert isinstance(page, ObservationsV2Response)
    assert all(len(trace_id) == 32 for trace_id in trace_ids)
    by_trace = {item.trace_id: item for item in page.data}
    assert set(by_trace) == set(trace_ids)
    first, second, third = (by_trace[trace_id] for trace_id in trace_ids)
    assert first.input == '{"question": "What is 2+2?"}'
    assert first.output == "4"
    assert second.input == "plain text input"
    assert second.output == '{"answer": [1, 2]}'
    assert third.output is None
    assert first.is_root_observation is True
    assert first.tags == [tag]
    assert first.trace_name == "demo-app"
    assert first.environment == "default"
    assert page.meta.cursor is None


def test_sdk_child_spans_are_not_roots(langfuse: Langfuse) -> None:
    tag = unique_tag()

    with (
        propagate_attributes(tags=[tag], trace_name="nested"),
        langfuse.start_as_current_observation(name="root", input="in") as root,
        langfuse.start_as_current_observation(name="llm", as_type="generation", input="p"),
    ):
        root.update(output="done")
    langfuse.flush()
    every = langfuse.api.observations.get_many(
        filter=json.dumps(tags_filter(tag)), request_options=LONG
    )
    roots = langfuse.api.observations.get_many(
        filter=json.dumps([*tags_filter(tag), root_filter()]), request_options=LONG
    )

    assert sorted(item.type for item in every.data) == ["GENERATION", "SPAN"]
    assert [item.name for item in roots.data] == ["root"]
    assert roots.data[0].parent_observation_id is None


@pytest.mark.parametrize(
    ("fields", "present", "absent"),
    [
        pytest.param("core", ["trace_id", "start_time", "type"], ["name", "input"], id="core"),
        pytest.param(None, ["name", "is_root_observation", "level"], ["input"], id="default"),
        pytest.param("core,io", ["input", "output"], ["name", "tags"], id="io"),
        pytest.param("time", ["created_at", "updated_at"], ["name"], id="time"),
        pytest.param("metadata", ["metadata"], ["input"], id="metadata"),
        pytest.param("trace_context", ["tags"], ["input", "name"], id="trace-context"),
    ],
)
def test_field_groups(
    langfuse: Langfuse, window_tag: str, fields: str | None, present: list[str], absent: list[str]
) -> None:
    page = langfuse.api.observations.get_many(
        fields=fields, limit=1, filter=json.dumps(tags_filter(window_tag)), request_options=LONG
    )
    item = page.data[0]

    for name in present:
        assert getattr(item, name) is not None, name
    for name in absent:
        assert getattr(item, name) is None, name
    assert item.project_id


def test_unknown_field_group_rejected(langfuse: Langfuse) -> None:
    with pytest.raises(Error, match="unknown field groups"):
        langfuse.api.observations.get_many(fields="core,bogus", request_options=NO_RETRY)


@pytest.mark.parametrize(
    ("operator", "requested", "expected"),
    [
        pytest.param("all of", ["a", "b"], {"ab"}, id="all-of"),
        pytest.param("any of", ["a", "b"], {"a", "b", "ab"}, id="any-of"),
        pytest.param("none of", ["a"], {"b", "plain"}, id="none-of"),
    ],
)
def test_tag_filters(
    langfuse_server: LocalLangfuse,
    http: httpx.Client,
    langfuse: Langfuse,
    operator: str,
    requested: list[str],
    expected: set[str],
) -> None:
    tag = unique_tag()
    kinds = {"a": ["a"], "b": ["b"], "ab": ["a", "b"], "plain": []}
    spans = {kind: make_span(BASE_TIME, [tag, *extra]) for kind, extra in kinds.items()}
    post_spans(langfuse_server, http, list(spans.values()), compress=False)
    by_trace = {spec["trace_id"]: kind for kind, spec in spans.items()}
    conditions = [*tags_filter(tag), *tags_filter(*requested, operator=operator)]

    page = langfuse.api.observations.get_many(filter=json.dumps(conditions), request_options=LONG)

    assert {by_trace[item.trace_id] for item in page.data} == expected


def test_window_filter_is_half_open(langfuse: Langfuse, window_tag: str) -> None:
    end = BASE_TIME + timedelta(days=1)
    conditions = [
        *tags_filter(window_tag),
        {
            "type": "datetime",
            "column": "startTime",
            "operator": ">=",
            "value": BASE_TIME.isoformat(),
        },
        {"type": "datetime", "column": "startTime", "operator": "<", "value": end.isoformat()},
    ]

    page = langfuse.api.observations.get_many(filter=json.dumps(conditions), request_options=LONG)
    starts = [item.start_time for item in page.data]

    assert len(starts) == 4
    assert min(starts) == BASE_TIME
    assert max(starts) == end - timedelta(milliseconds=1)
    assert starts == sorted(starts, reverse=True)


def test_window_query_params(langfuse: Langfuse, window_tag: str) -> None:
    end = BASE_TIME + timedelta(days=1)

    page = langfuse.api.observations.get_many(
        filter=json.dumps(tags_filter(window_tag)),
        from_start_time=BASE_TIME,
        to_start_time=end,
        request_options=LONG,
    )

    assert len(page.data) == 4


def test_filter_start_time_overrides_query_params(langfuse: Langfuse, window_tag: str) -> None:
    conditions = [
        *tags_filter(window_tag),
        {
            "type": "datetime",
            "column": "startTime",
            "operator": ">",
            "value": BASE_TIME.isoformat(),
        },
    ]

    page = langfuse.api.observations.get_many(
        filter=json.dumps(conditions),
        from_start_time=BASE_TIME - timedelta(days=30),
        to_start_time=BASE_TIME,
        request_options=LONG,
    )

    assert len(page.data) == 4


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        pytest.param(
            {"type": "string", "column": "bogus", "operator": "=", "value": "x"},
            "not supported",
            id="unknown-column",
        ),
        pytest.param(
            {"type": "arrayOptions", "column": "traceTags", "operator": "contains", "value": []},
            "arrayOptions",
            id="unknown-operator",
        ),
        pytest.param(
            {"type": "datetime", "column": "startTime", "operator": ">=", "value": "yesterday"},
            "ISO 8601",
            id="bad-datetime",
        ),
    ],
)
def test_bad_filter_rejected(langfuse: Langfuse, condition: dict[str, Any], message: str) -> None:
    with pytest.raises(Error, match=message):
        langfuse.api.observations.get_many(filter=json.dumps([condition]), request_options=NO_RETRY)


@pytest.mark.parametrize(
    "limit",
    [pytest.param(1001, id="above-max"), pytest.param(0, id="zero")],
)
def test_bad_limit_rejected(langfuse: Langfuse, limit: int) -> None:
    with pytest.raises(Error, match="limit must be between 1 and 1000"):
        langfuse.api.observations.get_many(limit=limit, request_options=NO_RETRY)


@pytest.mark.parametrize(
    ("config", "limit", "expect_empty"),
    [
        pytest.param({}, 4, False, id="plain"),
        pytest.param({"max_page_rows": 3}, 10, False, id="max-page-rows"),
        pytest.param({"short_pages": True}, 7, False, id="short-pages"),
        pytest.param({"short_pages": True, "empty_page_every": 3}, 6, True, id="empty-pages"),
        pytest.param({"lookahead": False}, 5, True, id="no-lookahead"),
    ],
)
def test_cursor_walk_returns_every_row_once(
    langfuse_server: LocalLangfuse,
    http: httpx.Client,
    langfuse: Langfuse,
    config: dict[str, Any],
    limit: int,
    expect_empty: bool,
) -> None:
    tag = unique_tag()
    spans = [make_span(BASE_TIME + timedelta(seconds=i // 3), [tag]) for i in range(20)]
    post_spans(langfuse_server, http, spans, compress=False)
    http.post("/_stack/config", json=config).raise_for_status()

    ids, pages, empty = walk(langfuse, limit, filter=json.dumps(tags_filter(tag)))

    assert sorted(ids) == sorted(spec["span_id"] for spec in spans)
    assert len(ids) == len(set(ids))
    assert pages >= -(-20 // limit)
    assert (empty > 0) == expect_empty


def test_cursor_is_reusable(
    langfuse_server: LocalLangfuse, http: httpx.Client, langfuse: Langfuse
) -> None:
    tag = unique_tag()
    post_spans(
        langfuse_server, http, [make_span(BASE_TIME, [tag]) for _ in range(5)], compress=False
    )
    first = langfuse.api.observations.get_many(limit=2, filter=json.dumps(tags_filter(tag)))

    again = [
        langfuse.api.observations.get_many(
            limit=2, cursor=first.meta.cursor, filter=json.dumps(tags_filter(tag))
        )
        for _ in range(2)
    ]

    assert [item.id for item in again[0].data] == [item.id for item in again[1].data]


def test_sdk_page_iterator_follows_short_pages(
    langfuse_server: LocalLangfuse, http: httpx.Client, langfuse: Langfuse
) -> None:
    tag = unique_tag()
    spans = [make_span(BASE_TIME, [tag]) for _ in range(9)]
    post_spans(langfuse_server, http, spans, compress=False)
    http.post(
        "/_stack/config", json={"short_pages": True, "empty_page_every": 2}
    ).raise_for_status()

    pages = list(
        langfuse.iter_observation_pages(
            limit=5, filter=json.dumps(tags_filter(tag)), request_options=LONG
        )
    )
    ids = [item.id for page in pages for item in page.data]

    assert sorted(ids) == sorted(spec["span_id"] for spec in spans)
    assert any(not page.data for page in pages)


def test_gzip_otlp_reply_is_protobuf(
    langfuse_server: LocalLangfuse, http: httpx.Client, langfuse: Langfuse
) -> None:
    tag = unique_tag()

    reply = post_spans(langfuse_server, http, [make_span(BASE_TIME, [tag])], compress=True)
    page = langfuse.api.observations.get_many(fields="core,io", filter=json.dumps(tags_filter(tag)))

    assert reply.headers["content-type"] == "application/x-protobuf"
    ExportTraceServiceResponse().ParseFromString(reply.content)
    assert [item.input for item in page.data] == ['{"q": 1}']


def test_span_resent_is_upserted(
    langfuse_server: LocalLangfuse, http: httpx.Client, langfuse: Langfuse
) -> None:
    tag = unique_tag()
    spec = make_span(BASE_TIME, [tag], output="first")
    post_spans(langfuse_server, http, [spec], compress=True)

    post_spans(langfuse_server, http, [{**spec, "output": "second"}], compress=True)
    page = langfuse.api.observations.get_many(fields="core,io", filter=json.dumps(tags_filter(tag)))

    assert [item.output for item in page.data] == ["second"]


def test_scores_create_202_and_read_v3(langfuse: Langfuse) -> None:
    trace_id = secrets.token_hex(16)
    batch = [
        score(trace_id, "quality", 0.75, comment="good", metadata={"run": "r1"}),
        score(trace_id, "label", "positive", data_type="CATEGORICAL"),
        score(trace_id, "passed", 1, data_type="BOOLEAN"),
        score(trace_id, "notes", "free text", data_type="TEXT", observation_id="ab" * 8),
    ]

    reply = langfuse.api.scores.create(request=batch)
    read = langfuse.api.scores.get_many(trace_id=trace_id, fields="details,subject", limit=100)

    assert isinstance(reply, CreateScoreBatchResponse)
    assert reply.message == "Accepted"
    assert isinstance(read, GetScoresV3Response)
    by_name = {item.name: item for item in read.data}
    assert by_name["quality"].value == 0.75
    assert by_name["quality"].comment == "good"
    assert by_name["quality"].metadata == {"run": "r1"}
    assert by_name["label"].value == "positive"
    assert by_name["passed"].value is True
    assert by_name["quality"].subject.kind == "trace"
    assert by_name["notes"].subject.kind == "observation"
    assert by_name["notes"].subject.trace_id == trace_id
    assert read.meta.limit == 100


def test_scores_v3_filters_and_cursor(langfuse: Langfuse) -> None:
    trace_ids = [secrets.token_hex(16) for _ in range(3)]
    langfuse.api.scores.create(
        request=[score(trace_id, name, 0.1) for trace_id in trace_ids for name in ("x", "y")]
    )

    collected: list[str] = []
    cursor = None
    while True:
        page = langfuse.api.scores.get_many(
            trace_id=",".join(trace_ids[:2]), name="x,y", limit=3, cursor=cursor
        )
        collected.extend(item.id for item in page.data)
        cursor = page.meta.cursor
        if cursor is None:
            break
    only_y = langfuse.api.scores.get_many(trace_id=",".join(trace_ids), name="y")

    assert len(collected) == 4
    assert len(set(collected)) == 4
    assert {item.name for item in only_y.data} == {"y"}
    assert len(only_y.data) == 3
    assert only_y.data[0].comment is None


def test_scores_v3_limit_above_100_rejected(langfuse: Langfuse) -> None:
    with pytest.raises(Error, match="limit must be between 1 and 100"):
        langfuse.api.scores.get_many(limit=101, request_options=NO_RETRY)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param({"value": "high", "data_type": "NUMERIC"}, "finite number", id="numeric-str"),
        pytest.param({"value": 3.0, "data_type": "CATEGORICAL"}, "string value", id="cat-number"),
        pytest.param({"value": 0.5, "data_type": "BOOLEAN"}, "0 or 1", id="boolean-half"),
        pytest.param({"value": "x", "data_type": "CORRECTION"}, "dataType", id="correction"),
    ],
)
def test_scores_partial_reject_207(langfuse: Langfuse, bad: dict[str, Any], message: str) -> None:
    trace_id = secrets.token_hex(16)
    batch = [score(trace_id, "ok", 0.5), CreateScoreRequest(trace_id=trace_id, name="bad", **bad)]

    reply = langfuse.api.scores.create(request=batch)

    assert isinstance(reply, CreateScoreBatchResults)
    assert reply.accepted == 1
    assert reply.rejected == 1
    assert message in reply.errors[0].message


def test_scores_raw_nan_rejected(langfuse_server: LocalLangfuse, http: httpx.Client) -> None:
    trace_id = secrets.token_hex(16)
    nan_score = f'{{"traceId": "{trace_id}", "name": "bad", "value": NaN}}'
    body = f'[{nan_score}, {{"name": "orphan", "value": 1}}]'

    reply = http.post(
        "/api/public/scores",
        content=body,
        headers={"Content-Type": "application/json"},
        auth=(langfuse_server.public_key, langfuse_server.secret_key),
    )
    results = CreateScoreBatchResults.model_validate(reply.json())

    assert reply.status_code == 207
    assert (results.accepted, results.rejected) == (0, 2)
    assert "finite number" in results.errors[0].message
    assert "traceId, sessionId or datasetRunId" in results.errors[1].message


def test_reject_rule_gives_207_once(langfuse: Langfuse, http: httpx.Client) -> None:
    trace_id = secrets.token_hex(16)
    http.post("/_stack/reject_scores", json={"names": ["joyfulness"], "times": 1})
    batch = [score(trace_id, "joyfulness", 0.9), score(trace_id, "quality", 0.2)]

    first = langfuse.api.scores.create(request=batch)
    second = langfuse.api.scores.create(request=batch)

    assert isinstance(first, CreateScoreBatchResults)
    assert (first.accepted, first.rejected) == (1, 1)
    assert isinstance(second, CreateScoreBatchResponse)


def test_score_upsert_per_utc_day(langfuse: Langfuse) -> None:
    trace_id = secrets.token_hex(16)
    score_id = str(uuid.uuid4())
    day = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)

    for moment, value in ((day, 0.1), (day.replace(hour=1), 0.2)):
        langfuse.api.scores.create(
            request=[score(trace_id, value=value, id=score_id, timestamp=moment)]
        )
    same_day = langfuse.api.scores.get_many(trace_id=trace_id)
    langfuse.api.scores.create(
        request=[score(trace_id, value=0.3, id=score_id, timestamp=day + timedelta(hours=1))]
    )
    two_days = langfuse.api.scores.get_many(trace_id=trace_id)

    assert [item.value for item in same_day.data] == [0.2]
    assert sorted(item.value for item in two_days.data) == [0.2, 0.3]
    assert {item.id for item in two_days.data} == {score_id}


def test_fault_429_carries_retry_after(langfuse: Langfuse, http: httpx.Client) -> None:
    rule = {"path_prefix": "/api/public/v2/observations", "status": 429, "retry_after_s": 1.5}
    http.post("/_stack/faults", json={"rules": [{**rule, "times": 1}]}).raise_for_status()

    with pytest.raises(ApiError) as caught:
        langfuse.api.observations.get_many(limit=1, request_options=NO_RETRY)
    after = langfuse.api.observations.get_many(limit=1, request_options=NO_RETRY)

    assert caught.value.status_code == 429
    assert caught.value.headers["retry-after"] == "2"
    assert isinstance(after, ObservationsV2Response)


def test_fault_500_then_sdk_retry_succeeds(langfuse: Langfuse, http: httpx.Client) -> None:
    rule = {"method": "GET", "path_prefix": "/api/public/health", "status": 500, "times": 1}
    http.post("/_stack/faults", json={"rules": [rule]}).raise_for_status()
    http.delete("/_stack/stats").raise_for_status()

    health = langfuse.api.health.health()
    stats = http.get("/_stack/stats").json()

    assert health.status == "OK"
    assert stats["requests"] == {"GET /api/public/health": 2}
    assert stats["faults_served"] == 1


def test_latency_and_slow_rule_delay(langfuse: Langfuse, http: httpx.Client) -> None:
    http.post("/_stack/latency", json={"seconds": 0.2}).raise_for_status()
    slow = {"path_prefix": "/api/public/health", "delay_s": 0.3, "times": None}
    http.post("/_stack/faults", json={"rules": [slow]}).raise_for_status()

    started = time.monotonic()
    langfuse.api.health.health()
    elapsed = time.monotonic() - started

    assert elapsed >= 0.5


def test_drop_connection_breaks_reply(http: httpx.Client) -> None:
    rule = {"path_prefix": "/api/public/health", "drop_connection": True}
    http.post("/_stack/faults", json={"rules": [rule]}).raise_for_status()

    with pytest.raises(httpx.RemoteProtocolError):
        http.get("/api/public/health")
    assert http.get("/api/public/health").status_code == 200


def test_seed_cli_rejects_bad_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"input": "a"}\n{"output": "no input"}\n', encoding="utf-8")
    for name in seed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(seed.SeedFileError, match=r"bad\.jsonl:2: missing key 'input'"):
        seed.load_records(data)
    assert seed.main(["--file", str(data), "--tag", "x"]) == 2


def test_seed_cli_sends_file(
    tmp_path: Path, langfuse_server: LocalLangfuse, langfuse: Langfuse
) -> None:
    tag = unique_tag()
    data = tmp_path / "demo.jsonl"
    lines = [{"input": {"n": i}, "output": f"answer {i}"} for i in range(3)]
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    env = {
        "LANGFUSE_PUBLIC_KEY": langfuse_server.public_key,
        "LANGFUSE_SECRET_KEY": langfuse_server.secret_key,
        "LANGFUSE_BASE_URL": langfuse_server.base_url,
        "PATH": "/usr/bin:/bin",
    }

    run = subprocess.run(
        [sys.executable, "-m", "stack.seed", "--file", str(data), "--tag", tag],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    page = langfuse.api.observations.get_many(
        fields="core,io", filter=json.dumps([*tags_filter(tag), root_filter()])
    )

    assert run.returncode == 0, run.stderr
    assert "sent 3 records" in run.stdout
    assert langfuse_server.secret_key not in run.stdout + run.stderr
    assert sorted(item.output for item in page.data) == ["answer 0", "answer 1", "answer 2"]


def test_server_without_keys_fails_to_start(tmp_path: Path) -> None:
    env = {"LOCAL_LANGFUSE_PUBLIC_KEY": "", "LOCAL_LANGFUSE_SECRET_KEY": ""}

    with pytest.raises(ServerStartError, match="missing environment variables"):
        start_server(
            "stack.langfuse_server",
            free_port(),
            env,
            tmp_path / "server.log",
            args=["--db", str(tmp_path / "db.sqlite")],
        )


def test_stop_pidfile_stops_process(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pidfile = tmp_path / "sleeper.pid"
    write_pidfile(pidfile, child.pid)

    stopped = stop_pidfile(pidfile, grace_s=2.0)

    assert stopped is True
    child.wait(timeout=5)
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)
    assert not pidfile.exists()
    assert stop_pidfile(pidfile) is False
