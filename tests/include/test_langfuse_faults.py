"""Fault tests of the Langfuse read and write paths against the local server over HTTP.

The local server (``stack.langfuse_server``) runs in a subprocess on a free port with random
keys. Its fault rules (``POST /_stack/faults``) reply to chosen requests with an error status,
delay them or drop the connection, and ``GET /_stack/stats`` counts the requests that reached
it, so each test checks both the outcome and the number of requests made. Reads go through
``list_window_traces`` and ``fetch_page``, writes through ``write_scores``, with the real SDK.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from langfuse.api import LangfuseAPI
from langfuse.api.scores.types.create_score_request import CreateScoreRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from include.langfuse_eval.errors import (
    AuthenticationError,
    ConfigurationError,
    ScoreWriteRejected,
    TransientError,
)
from include.langfuse_eval.observations import (
    CoreRow,
    TraceRef,
    build_filter,
    call_langfuse,
    get_core_page,
    list_window_traces,
    request_options,
)
from include.langfuse_eval.planning import FetchedPage, fetch_page, plan_pages
from include.langfuse_eval.scores import read_trace_scores, score_id, write_scores
from include.langfuse_eval.settings import LangfuseSettings, RetryPolicy
from include.langfuse_eval.window import Window
from stack.process import ServerProcess, free_port, start_server

TAG = f"faults-{secrets.token_hex(4)}"
WINDOW = Window(
    start=datetime(2026, 12, 3, 5, 0, tzinfo=UTC),
    end=datetime(2026, 12, 3, 5, 1, 4, tzinfo=UTC),
)
TRACE_COUNT = 16
"""Traces seeded 4 s apart across the 64 s window, so every split half contains some."""

READ = "GET /api/public/v2/observations"
WRITE = "POST /api/public/scores"
TIMEOUT_S = 0.3
"""Client read timeout of the tests. A ``delay_s`` longer than this times a request out."""

FAST = RetryPolicy(attempts=4, initial_wait_s=0.01, max_wait_s=0.05, sdk_max_retries=0)
"""Four calls with waits of a few milliseconds, and no retries inside the SDK."""


@dataclass(frozen=True)
class Server:
    """The running server, its keys and an HTTP client for its admin routes."""

    process: ServerProcess
    public_key: str
    secret_key: str
    admin: httpx.Client

    def api(self, *, secret_key: str | None = None) -> LangfuseAPI:
        """Build an SDK client through the package's settings."""
        settings = LangfuseSettings(
            host=self.process.base_url,
            public_key=self.public_key,
            secret_key=secret_key or self.secret_key,
            timeout_s=TIMEOUT_S,
        )
        return settings.api()

    def fault(self, **rule: Any) -> None:
        """Append one fault rule."""
        self.admin.post("/_stack/faults", json={"rules": [rule]}).raise_for_status()

    def requests(self, route: str) -> int:
        """Return how many requests of ``route`` ("METHOD path") reached the server."""
        return int(self.admin.get("/_stack/stats").json()["requests"].get(route, 0))


def _attribute(key: str, value: str | list[str]) -> KeyValue:
    if isinstance(value, list):
        values = [AnyValue(string_value=item) for item in value]
        return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=values)))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def seed_traces(server: Server) -> list[str]:
    """Post one tagged root span per trace over OTLP, newest first, and return the trace ids."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    trace_ids = []
    for index in range(TRACE_COUNT):
        trace_id = secrets.token_hex(16)
        start = WINDOW.end - timedelta(seconds=4 * index + 1)
        start_ns = int(start.timestamp()) * 1_000_000_000
        span = spans.add(
            trace_id=bytes.fromhex(trace_id),
            span_id=bytes.fromhex(secrets.token_hex(8)),
            name="app",
            start_time_unix_nano=start_ns,
            end_time_unix_nano=start_ns + 10_000_000,
        )
        span.attributes.extend(
            [
                _attribute("langfuse.trace.tags", [TAG]),
                _attribute("langfuse.observation.input", f"Question {index}?"),
                _attribute("langfuse.observation.output", f"Answer {index}!"),
            ]
        )
        trace_ids.append(trace_id)
    server.admin.post(
        "/api/public/otel/v1/traces",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        auth=(server.public_key, server.secret_key),
    ).raise_for_status()
    return trace_ids


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Start the local Langfuse server for this module and seed the window's traces."""
    state_dir = tmp_path_factory.mktemp("langfuse-faults")
    public_key = f"pk-lf-{secrets.token_hex(8)}"
    secret_key = f"sk-lf-{secrets.token_hex(16)}"
    process = start_server(
        "stack.langfuse_server",
        free_port(),
        {"LOCAL_LANGFUSE_PUBLIC_KEY": public_key, "LOCAL_LANGFUSE_SECRET_KEY": secret_key},
        state_dir / "server.log",
        args=["--db", str(state_dir / "langfuse.db")],
    )
    try:
        with httpx.Client(base_url=process.base_url, timeout=10.0) as admin:
            running = Server(process, public_key, secret_key, admin)
            seed_traces(running)
            yield running
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def clean_server(server: Server) -> Iterator[None]:
    """Start each test with zeroed counters and leave no fault rules behind."""
    server.admin.delete("/_stack/stats").raise_for_status()
    yield
    server.admin.delete("/_stack/faults").raise_for_status()
    server.admin.delete("/_stack/reject_scores").raise_for_status()


@pytest.fixture(scope="module")
def baseline(server: Server) -> list[TraceRef]:
    """The window's traces as an unfaulted read lists them."""
    return list_window_traces(server.api(), tag=TAG, window=WINDOW, retry_policy=FAST)


def read(server: Server, policy: RetryPolicy = FAST) -> list[TraceRef]:
    """Run the planning read of the window."""
    return list_window_traces(server.api(), tag=TAG, window=WINDOW, retry_policy=policy)


def score_requests(trace_ids: list[str]) -> list[CreateScoreRequest]:
    """Build a tone and a joyfulness score for each trace, with the package's score ids."""
    stamp = WINDOW.start + timedelta(seconds=30)
    requests = []
    for trace_id in trace_ids:
        for name, value, data_type in (
            ("tone", "joyful", "CATEGORICAL"),
            ("joyfulness", 0.8, "NUMERIC"),
        ):
            requests.append(
                CreateScoreRequest(
                    id=score_id(trace_id, name),
                    trace_id=trace_id,
                    name=name,
                    value=value,
                    data_type=data_type,
                    timestamp=stamp,
                )
            )
    return requests


def write(server: Server, count: int = 1, policy: RetryPolicy = FAST) -> list[str]:
    """Write the two scores of each of ``count`` new traces, two a request, and return the ids."""
    trace_ids = [secrets.token_hex(16) for _ in range(count)]
    write_scores(server.api(), score_requests(trace_ids), batch_size=2, retry_policy=policy)
    return trace_ids


def score_counts(server: Server, trace_ids: list[str]) -> dict[str, Counter[str]]:
    """Count the stored scores of each trace by name."""
    stored = read_trace_scores(server.api(), trace_ids, retry_policy=FAST)
    return {
        trace_id: Counter(score.name for score in scores) for trace_id, scores in stored.items()
    }


def run_path(server: Server, path: str, policy: RetryPolicy = FAST) -> Any:
    """Run the read or the write path once."""
    return read(server, policy) if path == "read" else write(server, policy=policy)


ROUTES = {
    "read": ("GET", "/api/public/v2/observations", READ),
    "write": ("POST", "/api/public/scores", WRITE),
}


def route_fault(path: str, **rule: Any) -> dict[str, Any]:
    """Return a fault rule aimed at the route of a path."""
    method, prefix, _ = ROUTES[path]
    return {"method": method, "path_prefix": prefix, **rule}


def test_seeded_window_fully_listed(baseline: list[TraceRef]) -> None:
    assert len(baseline) == TRACE_COUNT


PATHS = [pytest.param("read", id="read"), pytest.param("write", id="write")]


@pytest.mark.parametrize("path", PATHS)
def test_rate_limit_waits_retry_after(server: Server, path: str) -> None:
    server.fault(**route_fault(path, status=429, retry_after_s=1, times=1))
    policy = RetryPolicy(attempts=1, sdk_max_retries=1)
    started = time.monotonic()
    run_path(server, path, policy)
    assert time.monotonic() - started >= 1.0
    assert server.requests(ROUTES[path][2]) == 2


TRANSIENT_FAULTS = [
    pytest.param({"status": 500}, id="http-500"),
    pytest.param({"status": 502}, id="http-502"),
    pytest.param({"status": 503}, id="http-503"),
    pytest.param({"status": 524}, id="http-524"),
    pytest.param({"delay_s": 1.0}, id="read-timeout"),
    pytest.param({"drop_connection": True}, id="dropped-connection"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
def test_transient_burst_then_success(server: Server, path: str, fault: dict[str, Any]) -> None:
    server.fault(**route_fault(path, times=2, **fault))
    run_path(server, path)
    assert server.requests(ROUTES[path][2]) == 3


def test_burst_read_matches_baseline(server: Server, baseline: list[TraceRef]) -> None:
    server.fault(**route_fault("read", status=503, times=3))
    assert read(server) == baseline


PERSISTENT_FAULTS = [
    pytest.param({"status": 503}, "HTTP 503", id="http-503"),
    pytest.param({"delay_s": 1.0}, "ReadTimeout", id="read-timeout"),
    # A dropped connection surfaces as either error, depending on when the client reads.
    pytest.param(
        {"drop_connection": True}, "(RemoteProtocolError|ReadError)", id="dropped-connection"
    ),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("fault", "named"), PERSISTENT_FAULTS)
def test_persistent_fault_raises_transient(
    server: Server, path: str, fault: dict[str, Any], named: str
) -> None:
    server.fault(**route_fault(path, times=None, **fault))
    with pytest.raises(TransientError, match=f"{path} .*after 4 attempt.*{named}"):
        run_path(server, path)
    assert server.requests(ROUTES[path][2]) == FAST.attempts


def test_sdk_and_task_retries_combine(server: Server) -> None:
    # The SDK's own retry waits about 1 s after the first 503, then gives up on the second.
    server.fault(**route_fault("read", status=503, times=2))
    policy = RetryPolicy(attempts=2, initial_wait_s=0.01, sdk_max_retries=1)
    read(server, policy)
    assert server.requests(READ) == 3


@pytest.mark.parametrize("path", PATHS)
def test_wrong_key_fails_at_once(server: Server, path: str) -> None:
    api = server.api(secret_key=f"sk-lf-{secrets.token_hex(16)}")
    with pytest.raises(AuthenticationError, match="Langfuse connection"):
        if path == "read":
            list_window_traces(api, tag=TAG, window=WINDOW)
        else:
            write_scores(api, score_requests([secrets.token_hex(16)]))
    assert server.requests(ROUTES[path][2]) == 1


def test_forbidden_fails_at_once(server: Server) -> None:
    server.fault(**route_fault("read", status=403, times=None))
    with pytest.raises(AuthenticationError, match="HTTP 403"):
        read(server)
    assert server.requests(READ) == 1


BUDGET_FAULTS = [
    pytest.param([{"status": 422, "times": 1}], 3, id="whole-window-once"),
    pytest.param([{"status": 422, "times": 3}], 7, id="three-levels-deep"),
    pytest.param([{"times": 1}, {"status": 422, "times": 1}], 4, id="later-page-and-split"),
]


@pytest.mark.parametrize(("rules", "requests"), BUDGET_FAULTS)
def test_budget_split_plan_matches(
    server: Server, baseline: list[TraceRef], rules: list[dict[str, Any]], requests: int
) -> None:
    server.admin.post("/_stack/config", json={"max_page_rows": 10}).raise_for_status()
    try:
        for rule in rules:
            server.fault(**route_fault("read", **rule))
        assert read(server) == baseline
        assert server.requests(READ) == requests
    finally:
        server.admin.post("/_stack/config", json={}).raise_for_status()


def fetch_all(server: Server, baseline: list[TraceRef]) -> FetchedPage:
    page = plan_pages(baseline, page_size=TRACE_COUNT, max_traces=None).pages[0]
    return fetch_page(server.api(), tag=TAG, window=WINDOW, page=page, retry_policy=FAST)


def test_budget_split_fetch_matches(server: Server, baseline: list[TraceRef]) -> None:
    whole = fetch_all(server, baseline)
    server.fault(**route_fault("read", status=422, times=3))
    assert fetch_all(server, baseline) == whole


def test_budget_split_fetch_complete(server: Server, baseline: list[TraceRef]) -> None:
    server.fault(**route_fault("read", status=422, times=3))
    fetched = fetch_all(server, baseline)
    assert sorted(item.trace_id for item in fetched.items) == sorted(
        ref.trace_id for ref in baseline
    )


def test_budget_stops_at_one_second(server: Server) -> None:
    server.fault(**route_fault("read", status=422, times=None))
    with pytest.raises(TransientError, match="minimum span of 1 s"):
        read(server)
    # 64 s, 32 s, 16 s, 8 s, 4 s, 2 s and 1 s: the newest half of each, then the error.
    assert server.requests(READ) == 7


def test_rejected_scores_named_by_trace(server: Server) -> None:
    server.admin.post("/_stack/reject_scores", json={"names": ["tone"], "times": 1})
    trace_ids = [secrets.token_hex(16) for _ in range(2)]
    with pytest.raises(ScoreWriteRejected) as caught:
        write_scores(server.api(), score_requests(trace_ids), batch_size=4, retry_policy=FAST)
    assert f"trace {trace_ids[0]} score 'tone'" in str(caught.value)
    assert f"trace {trace_ids[1]} score 'tone'" in str(caught.value)


def test_rejected_scores_rewritten_once(server: Server) -> None:
    server.admin.post("/_stack/reject_scores", json={"names": ["tone"], "times": 1})
    trace_ids = [secrets.token_hex(16) for _ in range(3)]
    requests = score_requests(trace_ids)
    with pytest.raises(ScoreWriteRejected):
        write_scores(server.api(), requests, batch_size=2, retry_policy=FAST)
    write_scores(server.api(), requests, batch_size=2, retry_policy=FAST)
    expected = Counter({"tone": 1, "joyfulness": 1})
    assert score_counts(server, trace_ids) == {trace_id: expected for trace_id in trace_ids}


def test_retried_write_keeps_one_score(server: Server) -> None:
    server.fault(**route_fault("write", delay_s=1.0, times=1))
    trace_ids = write(server, count=1)
    # The server still handles the timed-out request, and its late write replaces itself.
    time.sleep(1.0)
    assert score_counts(server, trace_ids) == {trace_ids[0]: Counter({"tone": 1, "joyfulness": 1})}


def test_core_page_reads_the_rows_the_sdk_parses(server: Server) -> None:
    api = server.api()
    filter_json = build_filter(TAG, start_at_or_after=WINDOW.start, end_before=WINDOW.end)
    options = request_options(None, FAST)
    sdk_page = api.observations.get_many(
        fields="core", limit=3, filter=filter_json, request_options=options
    )
    core_page = get_core_page(
        api, fields="core", limit=3, cursor=None, filter=filter_json, request_options=options
    )
    assert len(core_page.data) == 3
    assert core_page.data == [
        CoreRow(row.id, row.trace_id, row.start_time) for row in sdk_page.data
    ]
    assert core_page.meta.cursor == sdk_page.meta.cursor


def test_core_page_errors_are_the_sdks(server: Server, baseline: list[TraceRef]) -> None:
    filter_json = build_filter(TAG, start_at_or_after=WINDOW.start, end_before=WINDOW.end)
    with pytest.raises(AuthenticationError, match="HTTP 401"):
        call_langfuse(
            partial(get_core_page, server.api(secret_key="sk-lf-wrong")),
            what="read observations",
            retry_policy=FAST,
            fields="core",
            limit=10,
            cursor=None,
            filter=filter_json,
            request_options=request_options(None, FAST),
        )
    server.fault(path_prefix="/api/public/v2/observations", status=503, times=1)
    # The 503 is retried like any SDK call, and the read ends with every trace.
    assert read(server) == baseline
    assert server.admin.get("/_stack/stats").json()["faults_served"] == 1


@pytest.mark.parametrize("path", ["read", "write"])
def test_https_to_plain_server_fails_at_once(server: Server, path: str) -> None:
    settings = LangfuseSettings(
        host=server.process.base_url.replace("http://", "https://"),
        public_key=server.public_key,
        secret_key=server.secret_key,
        timeout_s=TIMEOUT_S,
    )
    api = settings.api()

    with pytest.raises(ConfigurationError, match="TLS handshake") as caught:
        if path == "read":
            list_window_traces(api, tag=TAG, window=WINDOW, retry_policy=FAST)
        else:
            write_scores(api, score_requests([secrets.token_hex(16)]), retry_policy=FAST)

    assert "http:// for a server without TLS" in str(caught.value)
    # The handshake failed before any request reached the server, and it was not retried.
    assert server.admin.get("/_stack/stats").json()["requests"] == {}
