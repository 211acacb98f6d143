"""The adaptive limit on judge calls in flight: halve on 429, climb on success, stay bounded."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from include.langfuse_eval import concurrency, verdicts
from include.langfuse_eval.concurrency import AdaptiveLimit, current_limit, observe_judge_reply
from include.langfuse_eval.errors import TransientError
from include.langfuse_eval.verdicts import gather_bounded


def reply(status: int, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("POST", f"http://127.0.0.1{path}"))


def test_rate_limit_halves_limit():
    limit = AdaptiveLimit(16)
    asyncio.run(limit.record_rate_limit())
    assert limit.limit == 8
    assert limit.rate_limited == 1


def test_burst_counts_as_one_signal():
    limit = AdaptiveLimit(16)

    async def burst() -> None:
        for _ in range(5):
            await limit.record_rate_limit()

    asyncio.run(burst())
    assert limit.limit == 8
    assert limit.rate_limited == 5
    assert limit.decreases == 1


def test_limit_never_below_minimum(monkeypatch):
    monkeypatch.setattr(concurrency, "DECREASE_COOLDOWN_S", 0.0)
    limit = AdaptiveLimit(4)

    async def many() -> None:
        for _ in range(10):
            await limit.record_rate_limit()

    asyncio.run(many())
    assert limit.limit == 1


def test_success_climbs_to_maximum():
    limit = AdaptiveLimit(8, initial=2)

    async def successes() -> None:
        for _ in range(200):
            await limit.record_success()

    asyncio.run(successes())
    assert limit.limit == 8


def test_success_climbs_additively():
    limit = AdaptiveLimit(8, initial=4)
    asyncio.run(limit.record_success())
    assert limit.limit == pytest.approx(4.25)


def test_in_flight_follows_limit():
    limit = AdaptiveLimit(6)
    peak = 0

    async def judge(index: int) -> int:
        nonlocal peak
        peak = max(peak, limit.in_flight)
        if index == 0:
            await limit.record_rate_limit()
        await asyncio.sleep(0.01)
        return index

    results = asyncio.run(gather_bounded(list(range(40)), judge, 6, limit))
    assert results == list(range(40))
    assert peak <= 6
    assert limit.in_flight == 0


def test_hook_finds_call_limit():
    limit = AdaptiveLimit(10)

    async def call() -> None:
        current_limit.set(limit)
        await observe_judge_reply(reply(429))
        await observe_judge_reply(reply(200))
        await observe_judge_reply(reply(429, path="/v1/models"))

    asyncio.run(call())
    assert limit.rate_limited == 1
    assert limit.limit == pytest.approx(5.2)


def test_hook_without_limit_ignored():
    asyncio.run(observe_judge_reply(reply(429)))
    assert current_limit.get() is None


def test_maximum_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        AdaptiveLimit(0)


def rate_limit_error(
    code: str = "rate_limit_exceeded", wait_ms: str = "1"
) -> openai.RateLimitError:
    response = httpx.Response(
        429,
        headers={"retry-after-ms": wait_ms},
        request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"),
    )
    body = {"message": "Rate limit reached", "type": "requests", "code": code}
    return openai.RateLimitError("Rate limit reached", response=response, body=body)


def test_rate_limited_item_waits_and_is_judged(monkeypatch):
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(verdicts.asyncio, "sleep", record_sleep)
    rate_limited_calls = {0: 3, 5: 1}

    async def judge(index: int) -> int:
        if rate_limited_calls.get(index, 0):
            rate_limited_calls[index] -= 1
            raise rate_limit_error(wait_ms="400")
        return index

    results = asyncio.run(gather_bounded(list(range(8)), judge, 4, AdaptiveLimit(4)))
    assert results == list(range(8))
    assert len(waits) == 4
    # Each wait is at least what the reply asked for, and jitter never exceeds twice that.
    assert all(0.4 <= wait <= verdicts.RATE_LIMIT_MAX_WAIT_S for wait in waits)


def test_quota_error_is_not_waited_for():
    async def judge(index: int) -> int:
        raise rate_limit_error(code="insufficient_quota")

    with pytest.raises(openai.RateLimitError, match="Rate limit"):
        asyncio.run(gather_bounded([1], judge, 1, AdaptiveLimit(1)))


def test_rate_limit_past_budget_fails_task(monkeypatch):
    monkeypatch.setattr(verdicts, "RATE_LIMIT_BUDGET_S", 0.0)

    async def judge(index: int) -> int:
        raise rate_limit_error()

    with pytest.raises(TransientError, match="kept returning 429"):
        asyncio.run(gather_bounded([1, 2], judge, 2, AdaptiveLimit(2)))
