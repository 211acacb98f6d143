"""The result of judging one trace, shared by both judges, and the text limits they apply."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

MAX_JUDGE_CHARS = 24_000
"""Longest output text sent to a judge, about 6,000 tokens at 4 characters per token."""

TRUNCATION_MARKER = "\n[... output truncated for evaluation ...]"

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


def truncate_for_judge(text: str, max_chars: int = MAX_JUDGE_CHARS) -> tuple[str, bool]:
    """Cut a text to ``max_chars`` characters with a visible marker.

    Returns:
        The text to send and whether it was cut.
    """
    if len(text) <= max_chars:
        return text, False
    return text[:max_chars] + TRUNCATION_MARKER, True


async def gather_bounded(
    items: Sequence[T], judge: Callable[[T], Awaitable[R]], max_concurrency: int
) -> list[R]:
    """Run ``judge`` on every item with at most ``max_concurrency`` calls in flight.

    The results keep the order of ``items``. The first exception cancels the calls still
    pending and propagates.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}.")
    semaphore = asyncio.Semaphore(max_concurrency)

    async def run_one(item: T) -> R:
        async with semaphore:
            return await judge(item)

    tasks = [asyncio.ensure_future(run_one(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
