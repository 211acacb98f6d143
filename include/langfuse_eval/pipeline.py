"""The steps of one evaluation run as plain functions, one per DAG task.

Each step takes settings objects and JSON-ready values and returns JSON-ready values, so the
DAG can pass them through XCom and tests can call them without Airflow.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from include.langfuse_eval.errors import TransientError
from include.langfuse_eval.observations import TraceRef, list_window_traces
from include.langfuse_eval.planning import FetchedPage, PageSpec, Plan, fetch_page, plan_pages
from include.langfuse_eval.redaction import redact
from include.langfuse_eval.rescoring import JudgingPlan, plan_judging, read_existing_scores
from include.langfuse_eval.scores import RunContext, build_score_requests, write_scores
from include.langfuse_eval.settings import JudgeSettings, LangfuseSettings
from include.langfuse_eval.tone import SCORE_NAME as TONE
from include.langfuse_eval.tone import ToneJudge
from include.langfuse_eval.verdicts import Verdict
from include.langfuse_eval.window import Window

log = logging.getLogger(__name__)


@contextmanager
def naming_host(settings: LangfuseSettings) -> Iterator[None]:
    """Add the Langfuse host to a transient error, so a wrong host is easy to spot."""
    try:
        yield
    except TransientError as error:
        raise TransientError(
            f"{error} Langfuse host: {settings.host}. If this repeats, check the host of the "
            "Langfuse connection."
        ) from error


JOYFULNESS = "joyfulness"
EVALUATORS = (TONE, JOYFULNESS)


def plan_run(
    langfuse: LangfuseSettings,
    *,
    tag: str,
    window: Window,
    page_size: int,
    max_traces: int | None,
    evaluators: Sequence[str] = EVALUATORS,
    evaluator_version: str | None = None,
    force: bool = False,
) -> tuple[Plan, int]:
    """List the window's tagged traces and split them into pages.

    With ``max_traces`` set, traces that every selected judge already scored with
    ``evaluator_version`` are dropped before the cap is applied, so scored traces do not use
    up the cap that late or deferred traces need.

    Returns:
        The plan, with ``traces_found`` counting every trace of the window, and the number of
        traces dropped as already scored.
    """
    api = langfuse.api()
    with naming_host(langfuse):
        traces = list_window_traces(api, tag=tag, window=window)
        candidates, already_scored = traces, 0
        if max_traces is not None and evaluator_version is not None and not force:
            candidates, already_scored = drop_scored_traces(
                api, traces, evaluators, evaluator_version, needed=max_traces
            )
    plan = replace(
        plan_pages(candidates, page_size=page_size, max_traces=max_traces),
        traces_found=len(traces),
    )
    log.info(
        "Window %s to %s: %d traces found, %d already scored, %d planned in %d pages of up to %d",
        window.to_dict()["start"],
        window.to_dict()["end"],
        plan.traces_found,
        already_scored,
        plan.traces_planned,
        len(plan.pages),
        plan.page_size,
    )
    return plan, already_scored


def drop_scored_traces(
    api: Any,
    traces: list[TraceRef],
    evaluators: Sequence[str],
    evaluator_version: str,
    *,
    needed: int,
    chunk_size: int = 50,
) -> tuple[list[TraceRef], int]:
    """Drop, newest first, the traces that every judge already scored, until ``needed`` remain.

    Traces past the point where ``needed`` unscored ones were found are kept unchecked; the
    cap drops them anyway.
    """
    kept: list[TraceRef] = []
    dropped = 0
    for offset in range(0, len(traces), chunk_size):
        if len(kept) >= needed:
            return kept + traces[offset:], dropped
        chunk = traces[offset : offset + chunk_size]
        versions = read_existing_scores(api, [ref.trace_id for ref in chunk]).versions
        for ref in chunk:
            scored = versions.get(ref.trace_id, {})
            if all(scored.get(name, "") == evaluator_version for name in evaluators):
                dropped += 1
            else:
                kept.append(ref)
    return kept, dropped


@dataclass
class PageWork:
    """A fetched page and, per judge, the trace ids still to judge."""

    page: FetchedPage
    judging: JudgingPlan
    redactions: dict[str, int] = field(default_factory=dict)
    score_timestamps: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Serialize for XCom."""
        return {
            "page": self.page.to_dict(),
            "judging": self.judging.to_dict(),
            "redactions": self.redactions,
            "score_timestamps": self.score_timestamps,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> PageWork:
        """Parse the form written by :meth:`to_dict`."""
        return cls(
            page=FetchedPage.from_dict(value["page"]),
            judging=JudgingPlan.from_dict(value["judging"]),
            redactions=dict(value.get("redactions") or {}),
            score_timestamps=dict(value.get("score_timestamps") or {}),
        )


def fetch(
    langfuse: LangfuseSettings,
    *,
    tag: str,
    window: Window,
    page: PageSpec,
    evaluators: list[str],
    evaluator_version: str,
    force: bool = False,
    redact_text: bool = True,
    defer_after: datetime | None = None,
) -> PageWork:
    """Fetch one page's traces, extract the texts, and skip what is already scored.

    Only the output text travels on to the judges, because both judge the output alone. With
    ``redact_text``, secrets and email addresses in it are replaced before it leaves this step,
    so they reach no judge, log, XCom value or score comment.

    The existing scores come from the v3 scores API, which can lag writes by minutes on
    Langfuse Cloud. A trace judged again because of that lag gets the same score ids, so its
    scores are replaced, not duplicated.
    """
    api = langfuse.api()
    with naming_host(langfuse):
        fetched = fetch_page(api, tag=tag, window=window, page=page, defer_after=defer_after)
    redactions: Counter[str] = Counter()
    items = []
    for item in fetched.items:
        output_text = item.output_text
        if redact_text:
            output_text, counts = redact(output_text)
            redactions.update(counts)
        items.append(replace(item, output_text=output_text, input_text=None))
    fetched.items = items
    if redactions:
        log.info("Page %d: redacted %s in output texts", page.index, dict(redactions))
    trace_ids = [item.trace_id for item in fetched.items]
    with naming_host(langfuse):
        existing = read_existing_scores(api, trace_ids) if trace_ids else None
    judging = plan_judging(
        trace_ids,
        evaluators=evaluators,
        existing=existing.versions if existing else {},
        evaluator_version=evaluator_version,
        force=force,
    )
    return PageWork(
        page=fetched,
        judging=judging,
        redactions=dict(redactions),
        score_timestamps=existing.timestamps if existing else {},
    )


async def _judge_async(
    evaluator: str, settings: JudgeSettings, page: FetchedPage, max_concurrency: int
) -> list[Verdict]:
    if evaluator == TONE:
        client = settings.async_client()
        async with client:
            return await ToneJudge(client, settings.model).judge_all(page.items, max_concurrency)
    # deepeval is imported only where it runs: it is slow to import and DAG parsing needs none.
    from include.langfuse_eval.joyfulness import JoyfulnessJudge, build_judge_model

    model = build_judge_model(settings)
    try:
        return await JoyfulnessJudge(model).judge_all(page.items, max_concurrency)
    finally:
        await model.async_http_client.aclose()


def judge(
    evaluator: str, settings: JudgeSettings, work: PageWork, *, max_concurrency: int
) -> list[Verdict]:
    """Run one judge concurrently over the page's traces that still need it.

    Returns one verdict per judged trace.
    """
    if evaluator not in EVALUATORS:
        raise ValueError(f"Unknown evaluator {evaluator!r}: use one of {list(EVALUATORS)}.")
    pending = set(work.judging.pending.get(evaluator, []))
    items = [item for item in work.page.items if item.trace_id in pending]
    if not items:
        log.info("Page %d: no trace needs %s", work.page.index, evaluator)
        return []
    page = FetchedPage(index=work.page.index, items=items, skipped=work.page.skipped)
    verdicts = asyncio.run(_judge_async(evaluator, settings, page, max_concurrency))
    errors = sum(1 for verdict in verdicts if not verdict.ok)
    log.info(
        "Page %d: %s judged %d traces, %d judge errors",
        page.index,
        evaluator,
        len(verdicts),
        errors,
    )
    return verdicts


@dataclass
class PageReport:
    """Outcome counts of one page, for the run summary."""

    index: int
    traces_owned: int
    evaluated: int
    skipped: dict[str, int] = field(default_factory=dict)
    already_scored: dict[str, int] = field(default_factory=dict)
    judged: dict[str, int] = field(default_factory=dict)
    redactions: dict[str, int] = field(default_factory=dict)
    scores_written: dict[str, int] = field(default_factory=dict)
    judge_errors: dict[str, int] = field(default_factory=dict)
    judge_calls: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tones: dict[str, int] = field(default_factory=dict)
    joyfulness_values: list[float] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Serialize for XCom."""
        return asdict(self)


def push(
    langfuse: LangfuseSettings,
    *,
    work: PageWork,
    traces_owned: int,
    verdicts: list[Verdict],
    context: RunContext,
    dry_run: bool,
) -> PageReport:
    """Write a page's scores, or only count them on a dry run, and report the page."""
    page = work.page
    requests = build_score_requests(page.items, verdicts, context, timestamps=work.score_timestamps)
    report = PageReport(
        index=page.index,
        traces_owned=traces_owned,
        evaluated=len(page.items),
        skipped={reason: len(ids) for reason, ids in page.skipped.items()},
        already_scored={name: len(ids) for name, ids in work.judging.already_scored.items() if ids},
        redactions=work.redactions,
        dry_run=dry_run,
    )
    for verdict in verdicts:
        report.judged[verdict.name] = report.judged.get(verdict.name, 0) + 1
        report.judge_calls[verdict.name] = report.judge_calls.get(verdict.name, 0) + verdict.calls
        report.prompt_tokens += verdict.prompt_tokens
        report.completion_tokens += verdict.completion_tokens
        if not verdict.ok:
            report.judge_errors[verdict.name] = report.judge_errors.get(verdict.name, 0) + 1
        elif verdict.name == TONE:
            report.tones[str(verdict.value)] = report.tones.get(str(verdict.value), 0) + 1
        elif verdict.name == JOYFULNESS:
            report.joyfulness_values.append(float(verdict.value))  # type: ignore[arg-type]

    if dry_run:
        log.info("Page %d: dry run, %d scores not written", page.index, len(requests))
        return report
    with naming_host(langfuse):
        written = write_scores(langfuse.api(), requests)
    report.scores_written = written.written
    log.info("Page %d: wrote scores %s", page.index, written.written)
    return report


def summarize(
    *,
    traces_found: int,
    traces_planned: int,
    pages: int,
    reports: list[dict[str, Any]],
    already_scored_at_planning: int = 0,
) -> dict[str, Any]:
    """Add up the page reports into the run summary."""
    skipped: Counter[str] = Counter()
    already_scored: Counter[str] = Counter()
    judged: Counter[str] = Counter()
    redactions: Counter[str] = Counter()
    written: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    tones: Counter[str] = Counter()
    joyfulness: list[float] = []
    prompt_tokens = completion_tokens = evaluated = 0
    for report in reports:
        skipped.update(report["skipped"])
        already_scored.update(report["already_scored"])
        judged.update(report["judged"])
        redactions.update(report["redactions"])
        written.update(report["scores_written"])
        errors.update(report["judge_errors"])
        calls.update(report["judge_calls"])
        tones.update(report["tones"])
        joyfulness.extend(report["joyfulness_values"])
        prompt_tokens += report["prompt_tokens"]
        completion_tokens += report["completion_tokens"]
        evaluated += report["evaluated"]
    return {
        "traces_found": traces_found,
        "traces_planned": traces_planned,
        "already_scored_at_planning": already_scored_at_planning,
        "over_max_traces": traces_found - traces_planned - already_scored_at_planning,
        "pages": pages,
        "pages_reported": len(reports),
        "evaluated": evaluated,
        "skipped": dict(sorted(skipped.items())),
        "deferred": skipped.get("deferred", 0),
        "already_scored": dict(sorted(already_scored.items())),
        "judged": dict(sorted(judged.items())),
        "redactions": dict(sorted(redactions.items())),
        "scores_written": dict(sorted(written.items())),
        "judge_errors": dict(sorted(errors.items())),
        "judge_error_ratio": round(sum(errors.values()) / sum(judged.values()), 4)
        if judged
        else 0.0,
        "tone_distribution": dict(tones.most_common()),
        "mean_joyfulness": round(sum(joyfulness) / len(joyfulness), 4) if joyfulness else None,
        "judge_calls": dict(sorted(calls.items())),
        "judge_calls_total": sum(calls.values()),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "dry_run": any(report["dry_run"] for report in reports),
    }
