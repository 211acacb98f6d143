"""Tests of the evaluation window and timestamp parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from include.langfuse_eval.errors import ConfigurationError
from include.langfuse_eval.window import Window, isoformat_utc, parse_timestamp

START = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
END = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)
WINDOW = Window(start=START, end=END)
PLUS_ONE = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("start", "end", "match"),
    [
        pytest.param(START.replace(tzinfo=None), END, "start .* has no timezone", id="naive-start"),
        pytest.param(START, END.replace(tzinfo=None), "end .* has no timezone", id="naive-end"),
        pytest.param(START, START, "is not before its end", id="empty-window"),
        pytest.param(END, START, "is not before its end", id="reversed-window"),
        pytest.param(
            datetime(2026, 12, 3, 6, 0, tzinfo=PLUS_ONE),
            datetime(2026, 12, 3, 5, 0, tzinfo=UTC),
            "is not before its end",
            id="equal-across-offsets",
        ),
    ],
)
def test_window_rejected(start: datetime, end: datetime, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Window(start=start, end=end)


def test_window_start_in_utc() -> None:
    window = Window(start=datetime(2026, 12, 3, 6, 0, tzinfo=PLUS_ONE), end=END)
    assert window.start == START
    assert window.start.tzinfo == UTC


def test_window_end_in_utc() -> None:
    window = Window(start=START, end=datetime(2026, 12, 4, 6, 0, tzinfo=PLUS_ONE))
    assert window.end.tzinfo == UTC


def test_window_dict_form() -> None:
    assert WINDOW.to_dict() == {
        "start": "2026-12-03T05:00:00.000000Z",
        "end": "2026-12-04T05:00:00.000000Z",
    }


def test_window_round_trip() -> None:
    assert Window.from_dict(WINDOW.to_dict()) == WINDOW


def test_window_json_round_trip() -> None:
    assert Window.from_dict(json.loads(json.dumps(WINDOW.to_dict()))) == WINDOW


def test_microsecond_window_round_trip() -> None:
    window = Window(start=START + timedelta(microseconds=250), end=END)
    assert Window.from_dict(window.to_dict()) == window


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(START, True, id="start-included"),
        pytest.param(END, False, id="end-excluded"),
        pytest.param(END - timedelta(microseconds=1), True, id="just-before-end"),
        pytest.param(START - timedelta(microseconds=1), False, id="just-before-start"),
        pytest.param(datetime(2026, 12, 3, 12, 0, tzinfo=UTC), True, id="middle"),
        pytest.param(datetime(2026, 12, 4, 6, 0, tzinfo=PLUS_ONE), False, id="end-as-offset"),
    ],
)
def test_window_contains(moment: datetime, expected: bool) -> None:
    assert WINDOW.contains(moment) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2026-12-03T05:00:00Z", START, id="zulu"),
        pytest.param("2026-12-03T05:00:00+00:00", START, id="utc-offset"),
        pytest.param("2026-12-03T06:00:00+01:00", START, id="positive-offset"),
        pytest.param("2026-12-03T00:00:00-05:00", START, id="negative-offset"),
        pytest.param(
            "2026-12-03T05:00:00.123456Z", START.replace(microsecond=123_456), id="microseconds"
        ),
    ],
)
def test_parse_timestamp_accepts(value: str, expected: datetime) -> None:
    assert parse_timestamp(value) == expected


def test_parse_timestamp_returns_utc() -> None:
    assert parse_timestamp("2026-12-03T06:00:00+01:00").tzinfo == UTC


@pytest.mark.parametrize(
    ("value", "match"),
    [
        pytest.param("2026-12-03T05:00:00", "has no timezone", id="naive"),
        pytest.param("2026-12-03", "has no timezone", id="date-only"),
        pytest.param("yesterday", "is invalid", id="garbage"),
        pytest.param("", "is invalid", id="empty"),
        pytest.param("2026-13-03T05:00:00Z", "is invalid", id="bad-month"),
    ],
)
def test_parse_timestamp_rejects(value: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_timestamp(value)


@pytest.mark.parametrize(
    ("timespec", "expected"),
    [
        pytest.param("milliseconds", "2026-12-03T05:00:00.123Z", id="milliseconds"),
        pytest.param("microseconds", "2026-12-03T05:00:00.123456Z", id="microseconds"),
    ],
)
def test_isoformat_utc(timespec: str, expected: str) -> None:
    moment = datetime(2026, 12, 3, 6, 0, 0, 123_456, tzinfo=PLUS_ONE)
    assert isoformat_utc(moment, timespec) == expected
