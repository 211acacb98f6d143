"""Split a window's traces into pages, and fetch the traces that one page owns.

The planning pass lists trace ids only. Each page then owns an explicit list of trace ids and
records the start-time range that contains them, so its fetch reads just that range and keeps just
its own traces. Every trace belongs to exactly one page, whatever page sizes the server returns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from langfuse.api import LangfuseAPI

from include.langfuse_eval.errors import ConfigurationError
from include.langfuse_eval.extraction import SkipReason, extract_input, extract_output
from include.langfuse_eval.observations import (
    FETCH_FIELDS,
    MIN_SPLIT_SPAN,
    TraceRef,
    dedupe_roots,
    read_time_range,
)
from include.langfuse_eval.settings import DEFAULT_RETRY_POLICY, RetryPolicy
from include.langfuse_eval.window import Window, isoformat_utc, parse_timestamp

log = logging.getLogger(__name__)

MAX_PAGES = 512
"""Maximum pages per run. Airflow fails a task that maps over more than 1024 items."""

MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class PageSpec:
    """One page of a run: the trace ids it owns and the start-time range that contains them.

    The fetch starts at ``newest_start`` and walks back to ``oldest_start``, both inclusive,
    because the API returns the newest observations first.
    """

    index: int
    newest_start: str
    oldest_start: str
    trace_ids: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Serialize for XCom."""
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> PageSpec:
        """Parse the form written by :meth:`to_dict`."""
        return cls(
            index=int(value["index"]),
            newest_start=str(value["newest_start"]),
            oldest_start=str(value["oldest_start"]),
            trace_ids=[str(trace_id) for trace_id in value["trace_ids"]],
        )


@dataclass(frozen=True)
class Plan:
    """The pages of one run and the counts behind them."""

    pages: list[PageSpec]
    traces_found: int
    traces_planned: int
    page_size: int


def effective_page_size(trace_count: int, page_size: int, max_pages: int = MAX_PAGES) -> int:
    """Grow the page size so that ``trace_count`` traces fit in at most ``max_pages`` pages."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ConfigurationError(f"Page size {page_size} is invalid: use 1 to {MAX_PAGE_SIZE}.")
    return max(page_size, math.ceil(trace_count / max_pages))


def _as_ref(trace: TraceRef | tuple[str, datetime]) -> TraceRef:
    if isinstance(trace, TraceRef):
        return trace
    trace_id, start = trace
    return TraceRef(trace_id=trace_id, newest_start=start, oldest_start=start)


def plan_pages(
    traces: Sequence[TraceRef | tuple[str, datetime]],
    *,
    page_size: int,
    max_traces: int | None,
    max_pages: int = MAX_PAGES,
) -> Plan:
    """Split ``(trace id, start time)`` pairs, newest first, into pages.

    Args:
        traces: The window's traces in the order the API returned them, newest first, as
            :class:`TraceRef` or ``(trace id, start time)`` pairs.
        page_size: Requested traces per page; grown when the window would need more pages
            than ``max_pages``.
        max_traces: Cap on traces per run, applied to the newest traces first; None for all.
        max_pages: Maximum number of pages.
    """
    if max_traces is not None and max_traces < 1:
        raise ConfigurationError(
            f"Maximum traces per run {max_traces} is invalid: use a positive number or null."
        )
    refs = [_as_ref(trace) for trace in traces]
    planned = refs if max_traces is None else refs[:max_traces]
    if len(planned) < len(refs):
        log.warning(
            "%d of %d traces are over max_traces=%d and are not evaluated in this run",
            len(refs) - len(planned),
            len(refs),
            max_traces,
        )
    size = effective_page_size(len(planned), page_size, max_pages)
    pages = []
    for index, offset in enumerate(range(0, len(planned), size)):
        chunk = planned[offset : offset + size]
        pages.append(
            PageSpec(
                index=index,
                newest_start=isoformat_utc(max(ref.newest_start for ref in chunk), "microseconds"),
                oldest_start=isoformat_utc(min(ref.oldest_start for ref in chunk), "microseconds"),
                trace_ids=[ref.trace_id for ref in chunk],
            )
        )
    return Plan(pages=pages, traces_found=len(traces), traces_planned=len(planned), page_size=size)


@dataclass(frozen=True)
class TraceItem:
    """A trace ready for the judges: ids, time, environment and the texts they read."""

    trace_id: str
    observation_id: str
    start_time: str
    environment: str | None
    input_text: str | None
    output_text: str


@dataclass
class FetchedPage:
    """The judgeable traces of one page and the traces it skipped, by reason."""

    index: int
    items: list[TraceItem] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Serialize for XCom."""
        return {
            "index": self.index,
            "items": [asdict(item) for item in self.items],
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> FetchedPage:
        """Parse the form written by :meth:`to_dict`."""
        return cls(
            index=int(value["index"]),
            items=[TraceItem(**item) for item in value["items"]],
            skipped={reason: list(ids) for reason, ids in value["skipped"].items()},
        )


def fetch_page(
    api: LangfuseAPI,
    *,
    tag: str,
    window: Window,
    page: PageSpec,
    timeout_s: float | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    min_split_span: timedelta = MIN_SPLIT_SPAN,
    defer_after: datetime | None = None,
) -> FetchedPage:
    """Read the traces that a page owns, with their input and output, and extract the texts.

    A trace whose root observation is gone is skipped as ``not_found``. A trace without output
    text is skipped with the reason from :func:`extract_output`. If it started at or after
    ``defer_after``, it is ``deferred`` instead, because its output may still be on its way.
    The read splits its time range when the server runs out of its time budget (HTTP 422),
    see :func:`include.langfuse_eval.observations.read_time_range`.

    Args:
        api: The SDK client.
        tag: Trace tag of the evaluated traces.
        window: The run's window.
        page: The page to fetch.
        timeout_s: Read timeout of each request; the client's timeout when None.
        retry_policy: Retries of each request, see
            :func:`include.langfuse_eval.observations.call_langfuse`.
        min_split_span: Shortest range that a 422 reply splits.
        defer_after: Start time from which a trace without output is deferred, not skipped;
            None defers nothing.
    """
    newest = min(parse_timestamp(page.newest_start), window.end)
    oldest = max(parse_timestamp(page.oldest_start), window.start)
    owned = set(page.trace_ids)
    fetched_rows = read_time_range(
        api,
        tag=tag,
        start=oldest,
        end=newest,
        end_inclusive=True,
        fields=FETCH_FIELDS,
        timeout_s=timeout_s,
        retry_policy=retry_policy,
        min_split_span=min_split_span,
    )
    rows = [
        observation
        for observation in fetched_rows
        if observation.trace_id in owned and window.contains(observation.start_time)
    ]
    roots = dedupe_roots(rows)
    # A trace's scores carry its oldest root start as their timestamp, so a root that arrives
    # later, even on another UTC day, keeps the score's upsert key unchanged.
    oldest_start: dict[str, datetime] = {}
    for observation in rows:
        known = oldest_start.get(observation.trace_id)
        if known is None or observation.start_time < known:
            oldest_start[observation.trace_id] = observation.start_time

    fetched = FetchedPage(index=page.index)
    for trace_id in page.trace_ids:
        root = roots.get(trace_id)
        if root is None:
            fetched.skipped.setdefault(SkipReason.NOT_FOUND.value, []).append(trace_id)
            log.warning("Trace %s was planned but not found on fetch; skipped", trace_id)
            continue
        output_text, reason = extract_output(root.output)
        if output_text is None:
            assert reason is not None
            no_output = reason in (SkipReason.MISSING_OUTPUT, SkipReason.EMPTY_OUTPUT)
            if no_output and defer_after is not None and root.start_time >= defer_after:
                reason = SkipReason.DEFERRED
            fetched.skipped.setdefault(reason.value, []).append(trace_id)
            log.warning("Trace %s skipped: %s", trace_id, reason.value)
            continue
        fetched.items.append(
            TraceItem(
                trace_id=trace_id,
                observation_id=root.id,
                start_time=isoformat_utc(oldest_start[trace_id], "microseconds"),
                environment=root.environment,
                input_text=extract_input(root.input),
                output_text=output_text,
            )
        )
    log.info(
        "Page %d: %d traces owned, %d to judge, %d skipped",
        page.index,
        len(page.trace_ids),
        len(fetched.items),
        sum(len(ids) for ids in fetched.skipped.values()),
    )
    return fetched
