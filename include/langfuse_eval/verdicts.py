"""The result of judging one trace, shared by both judges, and the text limits they apply."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import openai

from include.langfuse_eval.concurrency import AdaptiveLimit, current_limit
from include.langfuse_eval.errors import AuthenticationError, PermanentError, TransientError

RATE_LIMIT_BUDGET_S = 600.0
"""Maximum time one trace may keep waiting on the judge's rate limit before its task fails."""
RATE_LIMIT_MAX_WAIT_S = 30.0
"""Cap on one wait after a rate-limited call."""

MAX_JUDGE_TOKENS = 6_000
"""Maximum tokens of output text sent to a judge, by :func:`estimate_tokens`, marker included."""

log = logging.getLogger(__name__)

CODE_FENCE = re.compile(r"^```[a-z]*\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)
"""A reply wrapped in a Markdown code fence, with any language tag."""

MAX_JUDGE_CHARS = 24_000
"""Maximum characters of output text sent to a judge, marker excluded.

At the defaults the token budget binds first, since :func:`estimate_tokens` counts at least one
token per 3 characters.
"""

TRUNCATION_MARKER = "\n[... output truncated for evaluation ...]"

UNITS_PER_TOKEN = 3
"""Cost units in one estimated token: an ASCII character costs 1 unit."""

_NON_ASCII = re.compile("[^\x00-\x7f]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Verdict:
    """One judge's result for one trace: a score value, or an error and no value."""

    trace_id: str
    name: str
    value: float | str | None = None
    comment: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        """Whether the verdict carries a value to write."""
        return self.error is None and self.value is not None

    def to_dict(self) -> dict[str, Any]:
        """Serialize for XCom."""
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Verdict:
        """Parse the form written by :meth:`to_dict`."""
        return cls(**value)


def _char_units(char: str) -> int:
    if char.isascii():
        return 1
    return UNITS_PER_TOKEN * 2 if ord(char) > 0xFFFF else UNITS_PER_TOKEN


def _text_units(text: str) -> int:
    # 1 unit per character, 2 more per non-ASCII one and 3 more again past the BMP.
    return len(text) + 2 * len(_NON_ASCII.findall(text)) + 3 * len(_ASTRAL.findall(text))


def estimate_tokens(text: str) -> int:
    """Estimate the tokens of a text, erring high.

    NOTE: this is an estimate, not a tokenizer. tiktoken is not a dependency, and it downloads
    its encoding files on first use, which a worker without network access cannot do. The
    estimate counts 1 token per 3 ASCII characters, an assumed figure meant to stay below what
    the o200k_base and cl100k_base encodings average on English prose. It counts 1 token per
    other character of the Basic Multilingual Plane and 2 per character past it, such as most
    emoji.
    """
    return -(-_text_units(text) // UNITS_PER_TOKEN)


def _token_cut(text: str, budget_units: int) -> int:
    """Return the length of the longest prefix of ``text`` that costs at most ``budget_units``."""
    if text.isascii():
        return max(0, min(len(text), budget_units))
    used = 0
    for index, char in enumerate(text):
        used += _char_units(char)
        if used > budget_units:
            return index
    return len(text)


def truncate_for_judge(
    text: str, max_chars: int = MAX_JUDGE_CHARS, *, max_tokens: int = MAX_JUDGE_TOKENS
) -> tuple[str, bool]:
    """Cut a text to the judges' limits with a visible marker.

    A text within both limits is kept whole. A longer one keeps its longest prefix that has at
    most ``max_chars`` characters and that, with the marker, has at most ``max_tokens``
    estimated tokens, and the marker follows it.

    Returns:
        The text to send and whether it was cut.
    """
    budget_units = max_tokens * UNITS_PER_TOKEN
    if len(text) <= max_chars and _text_units(text) <= budget_units:
        return text, False
    cut = _token_cut(text, budget_units - _text_units(TRUNCATION_MARKER))
    return text[: min(cut, max_chars)] + TRUNCATION_MARKER, True


async def gather_bounded(
    items: Sequence[T],
    judge: Callable[[T], Awaitable[R]],
    max_concurrency: int,
    limit: AdaptiveLimit | None = None,
) -> list[R]:
    """Run ``judge`` on every item with at most ``max_concurrency`` calls in flight.

    With ``limit``, that adaptive limit bounds the calls in flight instead, and each call
    finds it through :data:`include.langfuse_eval.concurrency.current_limit`, so its HTTP
    replies can move it. The results keep the order of ``items``. The first exception cancels
    the calls still pending and propagates.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}.")
    bound: AdaptiveLimit | asyncio.Semaphore = (
        limit if limit is not None else asyncio.Semaphore(max_concurrency)
    )
    results: list[Any] = [None] * len(items)
    # One shared iterator feeds a fixed set of workers, so at most ``max_concurrency``
    # coroutines ever wait on the bound, however long the page is. Waking every waiter of a
    # thousand-item page on each reply cost more CPU than the calls themselves.
    positions = iter(range(len(items)))

    async def worker() -> None:
        current_limit.set(limit)
        for position in positions:
            async with bound:
                results[position] = await _waiting_out_rate_limits(judge, items[position])

    workers = [asyncio.ensure_future(worker()) for _ in range(min(max_concurrency, len(items)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    return results


def _retry_after_s(error: openai.RateLimitError) -> float:
    """Return the wait that a 429 reply requests, from ``retry-after-ms`` or ``retry-after``."""
    headers = error.response.headers if error.response is not None else {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) * scale)
        except (KeyError, TypeError, ValueError):
            continue
    return 0.0


async def _waiting_out_rate_limits(judge: Callable[[T], Awaitable[R]], item: T) -> R:
    """Judge one item, waiting and calling again for as long as the judge returns 429.

    A 429 that the OpenAI SDK's own retries could not get past means the deployment sends
    faster than the judge's rate limit, not that the item failed. The call waits the time
    that the reply requests, stretched by jitter and doubling on each further 429 so that many
    waiting calls do not return at once. Its slot stays taken meanwhile. An exhausted quota is
    not waited for (see :func:`permanent_judge_errors`).

    Raises:
        TransientError: The item kept being rate limited for :data:`RATE_LIMIT_BUDGET_S`.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return await judge(item)
        except openai.RateLimitError as error:
            if _is_quota_error(error):
                raise
            attempt += 1
            elapsed = time.monotonic() - started
            if elapsed >= RATE_LIMIT_BUDGET_S:
                raise TransientError(
                    f"The judge kept returning 429 for {elapsed:.0f} s: lower the judge "
                    "pool's slots or judge_concurrency, or raise the judge's rate limit."
                ) from error
            wait_s = max(_retry_after_s(error), 0.05 * 2 ** min(attempt, 10))
            wait_s = min(RATE_LIMIT_MAX_WAIT_S, wait_s * random.uniform(1.0, 2.0))
            await asyncio.sleep(wait_s)


async def judge_adaptively(
    items: Sequence[T], judge: Callable[[T], Awaitable[R]], max_concurrency: int, name: str
) -> list[R]:
    """Run one judge over a page with an adaptive limit of ``max_concurrency`` calls.

    The calls in flight adapt between 1 and ``max_concurrency``: they halve on a 429 reply
    and climb again while replies succeed.
    """
    limit = AdaptiveLimit(max_concurrency)
    verdicts = await gather_bounded(items, judge, max_concurrency, limit)
    if limit.rate_limited:
        log.info(
            "%s judge: %d rate-limited replies, concurrency ended at %d of %d",
            name,
            limit.rate_limited,
            int(limit.limit),
            max_concurrency,
        )
    return verdicts


def json_objects(text: str) -> list[Any]:
    """Return the JSON values that start with ``{`` in a text, outermost only, in order."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = text.find("{")
    while position >= 0:
        try:
            value, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        found.append(value)
        position = text.find("{", end)
    return found


def _is_quota_error(error: openai.RateLimitError) -> bool:
    body = error.body if isinstance(error.body, dict) else {}
    return error.code == "insufficient_quota" or body.get("code") == "insufficient_quota"


@contextmanager
def permanent_judge_errors() -> Iterator[None]:
    """Turn a rejected judge key and an exhausted quota into errors that no retry fixes.

    Other OpenAI errors propagate unchanged, so Airflow's task retry handles them.
    """
    try:
        yield
    except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
        raise AuthenticationError(
            f"The judge endpoint rejected the API key (HTTP {error.status_code}): check the "
            "password and host of the OpenAI connection."
        ) from error
    except openai.RateLimitError as error:
        if _is_quota_error(error):
            raise PermanentError(
                "The judge account has no quota left (insufficient_quota): add credit or "
                "use another key in the OpenAI connection."
            ) from error
        raise
