"""Tests of the page plan: how a window's traces are split into pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from include.langfuse_eval.errors import ConfigurationError
from include.langfuse_eval.planning import (
    MAX_PAGE_SIZE,
    MAX_PAGES,
    FetchedPage,
    PageSpec,
    TraceItem,
    effective_page_size,
    plan_pages,
)
from include.langfuse_eval.window import parse_timestamp

NEWEST = datetime(2026, 12, 3, 23, 59, 59, 999_999, tzinfo=UTC)


def newest_first(
    count: int, step: timedelta = timedelta(microseconds=7)
) -> list[tuple[str, datetime]]:
    """Return ``count`` trace refs, newest first, ``step`` apart."""
    return [(f"trace-{index:06d}", NEWEST - index * step) for index in range(count)]


def test_pages_split_by_size() -> None:
    plan = plan_pages(newest_first(25), page_size=10, max_traces=None)
    assert [len(page.trace_ids) for page in plan.pages] == [10, 10, 5]


def test_pages_indexed_in_order() -> None:
    plan = plan_pages(newest_first(25), page_size=10, max_traces=None)
    assert [page.index for page in plan.pages] == [0, 1, 2]


def test_first_page_holds_newest() -> None:
    refs = newest_first(25)
    plan = plan_pages(refs, page_size=10, max_traces=None)
    assert plan.pages[0].trace_ids == [trace_id for trace_id, _ in refs[:10]]


def test_every_trace_in_one_page() -> None:
    refs = newest_first(1234)
    plan = plan_pages(refs, page_size=100, max_traces=None)
    owned = [trace_id for page in plan.pages for trace_id in page.trace_ids]
    assert sorted(owned) == sorted(trace_id for trace_id, _ in refs)


@pytest.mark.parametrize(
    ("max_traces", "expected_ids"),
    [
        pytest.param(3, ["trace-000000", "trace-000001", "trace-000002"], id="cap-takes-newest"),
        pytest.param(None, [f"trace-{index:06d}" for index in range(8)], id="none-means-all"),
        pytest.param(100, [f"trace-{index:06d}" for index in range(8)], id="cap-above-count"),
    ],
)
def test_max_traces_cap(max_traces: int | None, expected_ids: list[str]) -> None:
    plan = plan_pages(newest_first(8), page_size=2, max_traces=max_traces)
    assert [trace_id for page in plan.pages for trace_id in page.trace_ids] == expected_ids


def test_plan_counts_found_and_planned() -> None:
    plan = plan_pages(newest_first(8), page_size=2, max_traces=3)
    assert plan.traces_found == 8
    assert plan.traces_planned == 3


@pytest.mark.parametrize(
    ("count", "page_size", "max_pages"),
    [
        pytest.param(100_000, 10, MAX_PAGES, id="large-day-default-cap"),
        pytest.param(100_000, 10, 3, id="large-day-small-cap"),
        pytest.param(5_121, 10, MAX_PAGES, id="just-over-cap"),
        pytest.param(1_000, 1, 7, id="prime-cap"),
    ],
)
def test_pages_within_max_pages(count: int, page_size: int, max_pages: int) -> None:
    plan = plan_pages(
        newest_first(count), page_size=page_size, max_traces=None, max_pages=max_pages
    )
    assert len(plan.pages) <= max_pages


def test_grown_pages_keep_all_traces() -> None:
    plan = plan_pages(newest_first(100_000), page_size=10, max_traces=None, max_pages=3)
    assert sum(len(page.trace_ids) for page in plan.pages) == 100_000


def test_small_day_keeps_page_size() -> None:
    plan = plan_pages(newest_first(50), page_size=10, max_traces=None)
    assert plan.page_size == 10


def test_effective_size_grows() -> None:
    assert effective_page_size(100_000, 10, 512) == 196


def test_page_bounds_bracket_starts() -> None:
    refs = newest_first(30, step=timedelta(seconds=1, microseconds=3))
    starts = dict(refs)
    plan = plan_pages(refs, page_size=7, max_traces=None)
    for page in plan.pages:
        own = [starts[trace_id] for trace_id in page.trace_ids]
        assert parse_timestamp(page.newest_start) == max(own), page.index
        assert parse_timestamp(page.oldest_start) == min(own), page.index


def test_page_bounds_keep_microseconds() -> None:
    page = plan_pages(newest_first(2), page_size=10, max_traces=None).pages[0]
    assert page.newest_start == "2026-12-03T23:59:59.999999Z"
    assert page.oldest_start == "2026-12-03T23:59:59.999992Z"


def test_unordered_starts_still_bracketed() -> None:
    refs = [
        ("b", NEWEST - timedelta(hours=2)),
        ("a", NEWEST),
        ("c", NEWEST - timedelta(hours=1)),
    ]
    page = plan_pages(refs, page_size=10, max_traces=None).pages[0]
    assert page.newest_start == "2026-12-03T23:59:59.999999Z"
    assert page.oldest_start == "2026-12-03T21:59:59.999999Z"


@pytest.mark.parametrize(
    ("page_size", "max_traces", "match"),
    [
        pytest.param(0, None, "Page size 0 is invalid", id="page-size-zero"),
        pytest.param(-5, None, "Page size -5 is invalid", id="page-size-negative"),
        pytest.param(MAX_PAGE_SIZE + 1, None, "Page size 1001 is invalid", id="page-size-too-big"),
        pytest.param(10, 0, "Maximum traces per run 0 is invalid", id="max-traces-zero"),
        pytest.param(10, -1, "Maximum traces per run -1 is invalid", id="max-traces-negative"),
    ],
)
def test_invalid_plan_settings(page_size: int, max_traces: int | None, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        plan_pages(newest_first(3), page_size=page_size, max_traces=max_traces)


def test_empty_input_zero_pages() -> None:
    plan = plan_pages([], page_size=10, max_traces=None)
    assert plan.pages == []
    assert plan.traces_found == 0
    assert plan.traces_planned == 0


def test_page_size_checked_when_empty() -> None:
    with pytest.raises(ConfigurationError, match="Page size 0 is invalid"):
        plan_pages([], page_size=0, max_traces=None)


PAGE = PageSpec(
    index=4,
    newest_start="2026-12-03T12:00:00.000001Z",
    oldest_start="2026-12-03T11:00:00.000000Z",
    trace_ids=["t-1", "t-2"],
)

FETCHED = FetchedPage(
    index=4,
    items=[
        TraceItem(
            trace_id="t-1",
            observation_id="o-1",
            start_time="2026-12-03T12:00:00.000Z",
            environment="production",
            input_text="Question?",
            output_text="Answer 🎉",
        )
    ],
    skipped={"not_found": ["t-2"]},
)


def test_page_spec_round_trip() -> None:
    assert PageSpec.from_dict(PAGE.to_dict()) == PAGE


def test_page_spec_json_round_trip() -> None:
    assert PageSpec.from_dict(json.loads(json.dumps(PAGE.to_dict()))) == PAGE


def test_fetched_page_round_trip() -> None:
    assert FetchedPage.from_dict(FETCHED.to_dict()) == FETCHED


def test_fetched_page_json_round_trip() -> None:
    assert FetchedPage.from_dict(json.loads(json.dumps(FETCHED.to_dict()))) == FETCHED
