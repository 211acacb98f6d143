"""Adaptive concurrency for judge calls: back off on 429 replies, climb while the judge keeps up.

The limit on calls in flight follows additive increase, multiplicative decrease. Every
successful reply raises it by ``1 / limit``, about one more call per round of replies. A 429
halves it, at most once per cooldown, so that one burst of 429s counts as one signal. The
OpenAI SDK still waits for ``Retry-After`` and retries the rejected call itself. Across tasks
and runs, the Airflow pool of the judge tasks caps how many pages judge at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from types import TracebackType

import httpx

log = logging.getLogger(__name__)

DECREASE_COOLDOWN_S = 1.0
"""Shortest time between two decreases of the limit."""
DECREASE_FACTOR = 0.5
"""Factor that a 429 applies to the limit."""

current_limit: ContextVar[AdaptiveLimit | None] = ContextVar("current_limit", default=None)


class AdaptiveLimit:
    """An async limit on calls in flight that adapts to the judge's rate limit.

    Args:
        maximum: Highest limit, the ``judge_concurrency`` param.
        initial: Starting limit; the maximum when None.
        minimum: Lowest limit.
    """

    def __init__(self, maximum: int, initial: int | None = None, minimum: int = 1) -> None:
        if maximum < 1:
            raise ValueError(f"maximum must be at least 1, got {maximum}.")
        self.maximum = maximum
        self.minimum = max(1, min(minimum, maximum))
        self.limit = float(min(maximum, initial or maximum))
        self.in_flight = 0
        self.rate_limited = 0
        self.decreases = 0
        self._last_decrease = float("-inf")
        self._condition: asyncio.Condition | None = None

    @property
    def _cond(self) -> asyncio.Condition:
        # Created on first use, inside the event loop that runs the calls.
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    async def __aenter__(self) -> AdaptiveLimit:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    async def record_success(self) -> None:
        """Raise the limit by ``1 / limit`` after a successful reply."""
        async with self._cond:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            self._cond.notify_all()

    async def record_rate_limit(self) -> None:
        """Halve the limit after a 429 reply, at most once per cooldown."""
        async with self._cond:
            self.rate_limited += 1
            now = time.monotonic()
            if now - self._last_decrease < DECREASE_COOLDOWN_S:
                return
            self._last_decrease = now
            self.decreases += 1
            self.limit = max(float(self.minimum), self.limit * DECREASE_FACTOR)
            log.info("Judge rate limited: concurrency lowered to %d", int(self.limit))


async def observe_judge_reply(response: httpx.Response) -> None:
    """Feed a chat-completion reply's status to the limit of the calls that made it.

    An httpx response hook: it runs in the task of the call, so it finds that call's limit.
    """
    limit = current_limit.get()
    if limit is None or not response.request.url.path.endswith("/chat/completions"):
        return
    if response.status_code == 429:
        await limit.record_rate_limit()
    elif response.status_code == 200:
        await limit.record_success()
