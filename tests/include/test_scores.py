"""Tests of the score requests, their deterministic ids and the synchronous batch write."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from langfuse.api import CreateScoreBatchResponse, CreateScoreBatchResults
from langfuse.api.core.api_error import ApiError
from langfuse.api.core.pydantic_utilities import parse_obj_as
from langfuse.api.scores.types.create_score_request import CreateScoreRequest
from langfuse.api.scores.types.create_scores_response import CreateScoresResponse
from langfuse.api.scores.types.score_subject_v3 import (
    ScoreSubjectV3_Observation,
    ScoreSubjectV3_Session,
    ScoreSubjectV3_Trace,
)

from include.langfuse_eval.errors import AuthenticationError, ScoreWriteRejected
from include.langfuse_eval.planning import TraceItem
from include.langfuse_eval.scores import (
    MAX_COMMENT_CHARS,
    SCORE_BATCH_SIZE,
    TRACE_ID_QUERY_CHARS,
    RunContext,
    build_score_requests,
    describe_rejection,
    read_trace_scores,
    score_id,
    score_trace_id,
    trace_id_chunks,
    write_scores,
)
from include.langfuse_eval.verdicts import Verdict

CONTEXT = RunContext(
    evaluator_version="2026.12.1",
    judge_model="judge-model",
    dag_run_id="scheduled__2026-12-03T05:00:00+00:00",
    window_start="2026-12-03T05:00:00.000Z",
    window_end="2026-12-04T05:00:00.000Z",
)

ITEM = TraceItem(
    trace_id="trace-a",
    observation_id="obs-a",
    start_time="2026-12-03T23:59:59.999Z",
    environment="production",
    input_text="Question?",
    output_text="Answer!",
)


def item(trace_id: str = "trace-a", **overrides: Any) -> TraceItem:
    values = {**ITEM.__dict__, "trace_id": trace_id, **overrides}
    return TraceItem(**values)


def tone(trace_id: str = "trace-a", value: Any = "joyful", **overrides: Any) -> Verdict:
    fields = {"comment": "Dominant tones.", "metadata": {"tones": ["joyful"]}, **overrides}
    return Verdict(trace_id=trace_id, name="tone", value=value, **fields)


def joy(trace_id: str = "trace-a", value: Any = 0.75, **overrides: Any) -> Verdict:
    return Verdict(trace_id=trace_id, name="joyfulness", value=value, **overrides)


def only_request(verdict: Verdict, trace: TraceItem = ITEM, context: RunContext = CONTEXT) -> Any:
    requests = build_score_requests([trace], [verdict], context)
    assert len(requests) == 1
    return requests[0]


def test_score_id_deterministic() -> None:
    assert score_id("trace-a", "tone") == score_id("trace-a", "tone")


def test_score_id_is_uuid5() -> None:
    assert uuid.UUID(score_id("trace-a", "tone")).version == 5


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(("trace-a", "tone"), ("trace-a", "joyfulness"), id="by-name"),
        pytest.param(("trace-a", "tone"), ("trace-b", "tone"), id="by-trace"),
    ],
)
def test_score_id_differs(left: tuple[str, str], right: tuple[str, str]) -> None:
    assert score_id(*left) != score_id(*right)


def test_id_ignores_evaluator_version() -> None:
    newer = RunContext(**{**CONTEXT.__dict__, "evaluator_version": "2027.1.0"})
    assert only_request(tone(), context=newer).id == only_request(tone()).id


def test_request_id_is_score_id() -> None:
    assert only_request(joy()).id == score_id("trace-a", "joyfulness")


def test_tone_is_categorical() -> None:
    request = only_request(tone())
    assert request.data_type == "CATEGORICAL"
    assert request.value == "joyful"


def test_joyfulness_is_numeric() -> None:
    request = only_request(joy(value=0.75))
    assert request.data_type == "NUMERIC"
    assert request.value == 0.75


def test_joyfulness_value_float() -> None:
    assert isinstance(only_request(joy(value=1)).value, float)


def test_request_names_trace() -> None:
    assert only_request(tone()).trace_id == "trace-a"


def test_timestamp_is_trace_start() -> None:
    expected = datetime(2026, 12, 3, 23, 59, 59, 999_000, tzinfo=UTC)
    assert only_request(tone()).timestamp == expected


def test_timestamp_same_utc_day() -> None:
    trace = item(start_time="2026-12-04T00:30:00+02:00")
    assert only_request(tone(), trace=trace).timestamp.astimezone(UTC).date().isoformat() == (
        "2026-12-03"
    )


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        pytest.param("production", "production", id="named"),
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
    ],
)
def test_environment_passed(environment: str | None, expected: str | None) -> None:
    assert only_request(tone(), trace=item(environment=environment)).environment == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("evaluator_version", "2026.12.1", id="evaluator-version"),
        pytest.param("judge_model", "judge-model", id="judge-model"),
        pytest.param("dag_run_id", "scheduled__2026-12-03T05:00:00+00:00", id="dag-run-id"),
        pytest.param("window_start", "2026-12-03T05:00:00.000Z", id="window-start"),
        pytest.param("window_end", "2026-12-04T05:00:00.000Z", id="window-end"),
        pytest.param("tones", ["joyful"], id="verdict-metadata"),
    ],
)
def test_metadata_fields(key: str, expected: Any) -> None:
    assert only_request(tone()).metadata[key] == expected


def test_error_verdict_no_request() -> None:
    assert build_score_requests([ITEM], [tone(error="judge failed")], CONTEXT) == []


@pytest.mark.parametrize(
    "verdict",
    [
        pytest.param(joy(value=math.nan), id="nan"),
        pytest.param(joy(value=math.inf), id="inf"),
        pytest.param(joy(value=-math.inf), id="minus-inf"),
        pytest.param(joy(value=-0.1), id="below-zero"),
        pytest.param(joy(value=1.1), id="above-one"),
        pytest.param(joy(value=True), id="bool"),
        pytest.param(joy(value=None), id="none"),
        pytest.param(joy(value="0.5"), id="numeric-string"),
        pytest.param(tone(value=""), id="tone-empty"),
        pytest.param(tone(value=0.5), id="tone-number"),
        pytest.param(tone(value=None), id="tone-none"),
    ],
)
def test_invalid_value_no_request(verdict: Verdict) -> None:
    assert build_score_requests([ITEM], [verdict], CONTEXT) == []


@pytest.mark.parametrize(
    "value",
    [pytest.param(0.0, id="zero"), pytest.param(1.0, id="one"), pytest.param(1, id="int-one")],
)
def test_bounds_values_written(value: float) -> None:
    assert len(build_score_requests([ITEM], [joy(value=value)], CONTEXT)) == 1


@pytest.mark.parametrize(
    ("verdict", "match"),
    [
        pytest.param(
            Verdict(trace_id="trace-a", name="kindness", value=0.5),
            "'kindness' has no data type",
            id="unknown-name",
        ),
        pytest.param(tone(trace_id="trace-x"), "trace-x has no trace", id="unknown-trace"),
    ],
)
def test_bad_verdict_raises(verdict: Verdict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_score_requests([ITEM], [verdict], CONTEXT)


def test_comment_truncated() -> None:
    comment = only_request(tone(comment="x" * (MAX_COMMENT_CHARS + 50))).comment
    assert comment == "x" * MAX_COMMENT_CHARS


def test_short_comment_kept() -> None:
    assert only_request(tone(comment="Short.")).comment == "Short."


def test_requests_follow_verdicts() -> None:
    items = [item("trace-a"), item("trace-b")]
    verdicts = [tone("trace-b"), joy("trace-a"), tone("trace-a", error="failed")]
    requests = build_score_requests(items, verdicts, CONTEXT)
    assert [(r.trace_id, r.name) for r in requests] == [
        ("trace-b", "tone"),
        ("trace-a", "joyfulness"),
    ]


def accepted() -> Any:
    """Parse a 202 reply body the way the SDK does."""
    return parse_obj_as(CreateScoresResponse, {"message": "Accepted"})


def test_accepted_reply_model() -> None:
    assert isinstance(accepted(), CreateScoreBatchResponse)


class FakeScores:
    """Record every batch and return the listed replies in order, then 202 replies."""

    def __init__(self, replies: list[Any] | None = None) -> None:
        self.replies = list(replies or [])
        self.batches: list[list[CreateScoreRequest]] = []

    def create(self, *, request: list[CreateScoreRequest], **_: Any) -> Any:
        self.batches.append(list(request))
        next_reply = self.replies.pop(0) if self.replies else accepted()
        if isinstance(next_reply, Exception):
            raise next_reply
        return next_reply


class FakeApi:
    def __init__(self, replies: list[Any] | None = None) -> None:
        self.scores = FakeScores(replies)


def many_requests(count: int) -> list[CreateScoreRequest]:
    items = [item(f"trace-{index}") for index in range(count)]
    verdicts = [joy(f"trace-{index}") for index in range(count)]
    return build_score_requests(items, verdicts, CONTEXT)


def test_write_batches_by_size() -> None:
    api = FakeApi()
    write_scores(api, many_requests(2 * SCORE_BATCH_SIZE + 5))
    assert [len(batch) for batch in api.scores.batches] == [SCORE_BATCH_SIZE, SCORE_BATCH_SIZE, 5]


def test_write_sends_every_score() -> None:
    api = FakeApi()
    scores = many_requests(SCORE_BATCH_SIZE + 1)
    write_scores(api, scores)
    assert [score for batch in api.scores.batches for score in batch] == scores


def test_write_counts_requests() -> None:
    assert write_scores(FakeApi(), many_requests(SCORE_BATCH_SIZE + 1)).requests == 2


def test_write_counts_per_name() -> None:
    items = [item("trace-a"), item("trace-b")]
    verdicts = [tone("trace-a"), joy("trace-a"), joy("trace-b")]
    scores = build_score_requests(items, verdicts, CONTEXT)
    assert write_scores(FakeApi(), scores).written == {"tone": 1, "joyfulness": 2}


def test_write_nothing_no_request() -> None:
    api = FakeApi()
    write_scores(api, [])
    assert api.scores.batches == []


def rejection() -> Any:
    """Parse a 207 reply body the way the SDK does."""
    return parse_obj_as(
        CreateScoresResponse,
        {
            "accepted": 1,
            "rejected": 2,
            "errors": [{"message": "value out of range"}, {"message": "unknown trace"}],
        },
    )


def test_rejection_reply_model() -> None:
    assert isinstance(rejection(), CreateScoreBatchResults)


def test_rejection_names_errors() -> None:
    with pytest.raises(ScoreWriteRejected, match="value out of range; unknown trace"):
        write_scores(FakeApi([rejection()]), many_requests(3))


def test_rejection_gives_counts() -> None:
    with pytest.raises(ScoreWriteRejected, match=r"rejected 2 of 3 scores"):
        write_scores(FakeApi([rejection()]), many_requests(3))


def test_rejection_still_sends_later_batches() -> None:
    api = FakeApi([rejection()])
    with pytest.raises(ScoreWriteRejected):
        write_scores(api, many_requests(SCORE_BATCH_SIZE + 1))
    assert len(api.scores.batches) == 2


def indexed_rejection() -> Any:
    """Parse a 207 reply whose errors give the position of each rejected score."""
    return parse_obj_as(
        CreateScoresResponse,
        {
            "accepted": 2,
            "rejected": 1,
            "errors": [{"message": "scores[1]: score 'joyfulness': value out of range"}],
        },
    )


def test_rejection_names_trace_and_score() -> None:
    with pytest.raises(ScoreWriteRejected, match="trace trace-1 score 'joyfulness'"):
        write_scores(FakeApi([indexed_rejection()]), many_requests(3))


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("scores[7]: out of range", id="index-beyond-batch"),
        pytest.param("no position here", id="no-index"),
    ],
)
def test_rejection_keeps_plain_message(message: str) -> None:
    assert describe_rejection(many_requests(2), message) == message


def test_rejection_lists_at_most_twenty() -> None:
    errors = [{"message": f"scores[{index}]: rejected"} for index in range(25)]
    reply = parse_obj_as(CreateScoresResponse, {"accepted": 0, "rejected": 25, "errors": errors})
    with pytest.raises(ScoreWriteRejected, match="and 5 more"):
        write_scores(FakeApi([reply]), many_requests(25))


def test_invalid_batch_size_rejected() -> None:
    with pytest.raises(ValueError, match="batch size"):
        write_scores(FakeApi(), many_requests(1), batch_size=0)


def test_write_passes_timeout() -> None:
    api = FakeApi()
    recorded: list[Any] = []
    original = api.scores.create

    def create(**kwargs: Any) -> Any:
        recorded.append(kwargs["request_options"])
        return original(**kwargs)

    api.scores.create = create  # type: ignore[method-assign]
    write_scores(api, many_requests(1), timeout_s=0.5)
    assert recorded[0]["timeout_in_seconds"] == 0.5


def test_zero_rejected_counts_written() -> None:
    reply = CreateScoreBatchResults(accepted=3, rejected=0, errors=[])
    assert write_scores(FakeApi([reply]), many_requests(3)).written == {"joyfulness": 3}


def test_write_splits_batch_refused_as_too_large() -> None:
    too_large = ApiError(status_code=413, body={"message": "Request Entity Too Large"})
    api = FakeApi([too_large, too_large])
    scores = many_requests(8)
    report = write_scores(api, scores, batch_size=8)
    assert [len(batch) for batch in api.scores.batches] == [8, 4, 2, 2, 4]
    assert [score for batch in api.scores.batches[2:] for score in batch] == scores
    assert report.written == {"joyfulness": 8}
    assert report.requests == 5


def test_write_single_score_too_large_is_named() -> None:
    too_large = ApiError(status_code=413, body={})
    with pytest.raises(ScoreWriteRejected, match="trace trace-0 as too large"):
        write_scores(FakeApi([too_large]), many_requests(1))


def test_trace_id_chunks_fit_the_query_budget() -> None:
    ids = [f"{index:032x}" for index in range(450)]
    chunks = trace_id_chunks(ids)
    assert [len(chunk) for chunk in chunks] == [200, 200, 50]
    assert [trace_id for chunk in chunks for trace_id in chunk] == ids
    assert all(len(quote(",".join(chunk), safe="")) <= TRACE_ID_QUERY_CHARS for chunk in chunks)
    # An id longer than the budget still goes out, alone.
    assert trace_id_chunks(["x" * 50, "y"], budget=10) == [["x" * 50], ["y"]]


def test_write_auth_error_mapped() -> None:
    with pytest.raises(AuthenticationError, match="write scores"):
        write_scores(FakeApi([ApiError(status_code=401, body={})]), many_requests(1))


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        pytest.param(ScoreSubjectV3_Trace(id="trace-a"), "trace-a", id="trace"),
        pytest.param(
            ScoreSubjectV3_Observation(id="obs-a", trace_id="trace-b"), "trace-b", id="observation"
        ),
        pytest.param(ScoreSubjectV3_Observation(id="obs-a"), None, id="observation-no-trace"),
        pytest.param(ScoreSubjectV3_Session(id="session-a"), None, id="session"),
        pytest.param(None, None, id="no-subject"),
    ],
)
def test_score_trace_id(subject: Any, expected: str | None) -> None:
    class Score:
        def __init__(self) -> None:
            self.subject = subject

    assert score_trace_id(Score()) == expected


class FakeScoreReads:
    """Serve v3 score pages keyed by (trace ids, cursor) and record the requests."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def get_many(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        trace_ids = kwargs["trace_id"].split(",")
        if kwargs["cursor"] is None:
            data = [ScoreRead(ScoreSubjectV3_Trace(id=trace_ids[0]))]
            return PageRead(data, cursor="next")
        data = [ScoreRead(ScoreSubjectV3_Observation(id="obs", trace_id=trace_ids[-1]))]
        return PageRead(data, cursor=None)


class ScoreRead:
    def __init__(self, subject: Any) -> None:
        self.subject = subject


class PageRead:
    def __init__(self, data: list[ScoreRead], cursor: str | None) -> None:
        self.data = data
        self.meta = type("Meta", (), {"cursor": cursor})()


class FakeReadApi:
    def __init__(self) -> None:
        self.scores = FakeScoreReads()


def read_scores(count: int, chunk_size: int) -> tuple[dict[str, list[Any]], FakeReadApi]:
    api = FakeReadApi()
    trace_ids = [f"trace-{index}" for index in range(count)]
    # Ids are 7 characters and each further one costs 3 for the encoded comma.
    budget = 7 * chunk_size + 3 * (chunk_size - 1)
    return read_trace_scores(api, trace_ids, query_chars=budget), api


def test_read_chunks_trace_ids() -> None:
    _, api = read_scores(5, chunk_size=2)
    chunks = [call["trace_id"] for call in api.scores.calls if call["cursor"] is None]
    assert chunks == ["trace-0,trace-1", "trace-2,trace-3", "trace-4"]


def test_read_follows_cursor() -> None:
    _, api = read_scores(1, chunk_size=2)
    assert [call["cursor"] for call in api.scores.calls] == [None, "next"]


def test_read_groups_by_trace() -> None:
    scores, _ = read_scores(3, chunk_size=2)
    assert {trace_id: len(found) for trace_id, found in scores.items()} == {
        "trace-0": 1,
        "trace-1": 1,
        "trace-2": 2,
    }


def test_read_limit_at_most_100() -> None:
    _, api = read_scores(3, chunk_size=2)
    assert all(call["limit"] <= 100 for call in api.scores.calls)
