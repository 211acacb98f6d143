"""Tests of the judge text limit, the bounded gather and the verdict form."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from include.langfuse_eval.verdicts import (
    MAX_JUDGE_CHARS,
    MAX_JUDGE_TOKENS,
    TRUNCATION_MARKER,
    Verdict,
    estimate_tokens,
    gather_bounded,
    truncate_for_judge,
)

# Estimated tokens of the marker: 42 ASCII characters at 3 per token.
MARKER_TOKENS = 14


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("short", ("short", False), id="short"),
        pytest.param("", ("", False), id="empty"),
        pytest.param("x" * 10, ("x" * 10, False), id="exactly-max"),
        pytest.param("x" * 11, ("x" * 10 + TRUNCATION_MARKER, True), id="one-over"),
        pytest.param("🎉" * 12, ("🎉" * 10 + TRUNCATION_MARKER, True), id="emoji-by-character"),
    ],
)
def test_truncate_for_judge(text: str, expected: tuple[str, bool]) -> None:
    assert truncate_for_judge(text, max_chars=10) == expected


def test_truncate_default_limit() -> None:
    text, _ = truncate_for_judge("y" * (MAX_JUDGE_CHARS * 2))
    assert text == "y" * (MAX_JUDGE_TOKENS - MARKER_TOKENS) * 3 + TRUNCATION_MARKER


def test_marker_tokens_match() -> None:
    assert estimate_tokens(TRUNCATION_MARKER) == MARKER_TOKENS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", 0, id="empty"),
        pytest.param("abc", 1, id="three-ascii"),
        pytest.param("abcd", 2, id="four-ascii-rounds-up"),
        pytest.param("é", 1, id="accented-letter"),
        pytest.param("日本語", 3, id="cjk"),
        pytest.param("🎉", 2, id="emoji"),
        pytest.param("ab🎉", 3, id="mixed"),
    ],
)
def test_estimate_tokens_cases(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("x" * 60, ("x" * 60, False), id="exactly-budget"),
        pytest.param("x" * 61, ("x" * (60 - 42) + TRUNCATION_MARKER, True), id="one-over"),
        pytest.param("é" * 21, ("é" * 6 + TRUNCATION_MARKER, True), id="non-ascii-costs-more"),
        pytest.param("🎉" * 11, ("🎉" * 3 + TRUNCATION_MARKER, True), id="emoji-costs-two"),
        pytest.param("ab" + "🎉" * 20, ("ab" + "🎉" * 2 + TRUNCATION_MARKER, True), id="mixed"),
    ],
)
def test_truncate_by_tokens(text: str, expected: tuple[str, bool]) -> None:
    assert truncate_for_judge(text, max_tokens=20) == expected


def test_tighter_char_limit_wins() -> None:
    assert truncate_for_judge("x" * 100, max_chars=5, max_tokens=20) == (
        "xxxxx" + TRUNCATION_MARKER,
        True,
    )


def test_tiny_budget_keeps_marker() -> None:
    assert truncate_for_judge("x" * 100, max_tokens=1) == (TRUNCATION_MARKER, True)


class Tracker:
    """An async judge that records how many calls run at once."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.in_flight = 0
        self.peak = 0
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.fail_on = fail_on

    async def judge(self, item: int) -> str:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            # Sleep 0 to 4 ms by item, so calls finish in another order than they start.
            await asyncio.sleep(0.001 * (item % 5))
            if item == self.fail_on:
                raise RuntimeError(f"judge failed on {item}")
            await asyncio.sleep(0.001)
            self.finished.append(item)
            return f"verdict-{item}"
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        finally:
            self.in_flight -= 1


def run(items: list[int], tracker: Tracker, max_concurrency: int) -> list[str]:
    return asyncio.run(gather_bounded(items, tracker.judge, max_concurrency))


def test_gather_keeps_order() -> None:
    items = list(range(20))
    assert run(items, Tracker(), 4) == [f"verdict-{item}" for item in items]


@pytest.mark.parametrize(
    ("count", "max_concurrency"),
    [
        pytest.param(30, 1, id="serial"),
        pytest.param(30, 3, id="three"),
        pytest.param(5, 10, id="more-slots-than-items"),
    ],
)
def test_gather_bounds_in_flight(count: int, max_concurrency: int) -> None:
    tracker = Tracker()
    run(list(range(count)), tracker, max_concurrency)
    assert tracker.peak <= max_concurrency


def test_gather_uses_all_slots() -> None:
    tracker = Tracker()
    run(list(range(30)), tracker, 3)
    assert tracker.peak == 3


def test_gather_empty_items() -> None:
    assert run([], Tracker(), 2) == []


def test_gather_propagates_exception() -> None:
    with pytest.raises(RuntimeError, match="judge failed on 3"):
        run(list(range(20)), Tracker(fail_on=3), 2)


def test_gather_cancels_pending_calls() -> None:
    tracker = Tracker(fail_on=0)
    with pytest.raises(RuntimeError):
        run(list(range(20)), tracker, 20)
    assert tracker.cancelled


def test_gather_skips_unstarted_items() -> None:
    tracker = Tracker(fail_on=0)
    with pytest.raises(RuntimeError):
        run(list(range(20)), tracker, 1)
    assert tracker.finished == []


@pytest.mark.parametrize(
    "max_concurrency", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")]
)
def test_gather_rejects_bad_bound(max_concurrency: int) -> None:
    with pytest.raises(ValueError, match="max_concurrency must be at least 1"):
        run([1], Tracker(), max_concurrency)


def test_verdict_ok_with_value() -> None:
    assert Verdict(trace_id="t", name="tone", value="joyful").ok


@pytest.mark.parametrize(
    "verdict",
    [
        pytest.param(Verdict(trace_id="t", name="tone"), id="no-value"),
        pytest.param(Verdict(trace_id="t", name="tone", value="joyful", error="x"), id="error"),
    ],
)
def test_verdict_not_ok(verdict: Verdict) -> None:
    assert not verdict.ok


def test_verdict_json_round_trip() -> None:
    verdict = Verdict(
        trace_id="t",
        name="joyfulness",
        value=0.5,
        comment="Fun.",
        metadata={"truncated": False},
        calls=1,
        prompt_tokens=10,
        completion_tokens=3,
    )
    data: dict[str, Any] = json.loads(json.dumps(verdict.to_dict()))
    assert Verdict.from_dict(data) == verdict
