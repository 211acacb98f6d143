"""
### Langfuse external evaluation

Every day at 05:00 this DAG judges the previous day's Langfuse traces that carry a tag and
writes two scores back onto each trace:

- `tone` (CATEGORICAL): the dominant tone of the output, from a fixed set of eight labels, with
  the three dominant tones in the comment and metadata.
- `joyfulness` (NUMERIC, 0 to 1): deepeval GEval on "whether the output is engaging and fun",
  with GEval's reason as the comment.

**Window.** A run covers its data interval, `[data_interval_start, data_interval_end)` on
trace start time: 05:00 to 05:00 in the DAG's timezone (`LANGFUSE_EVAL_TIMEZONE`, default
UTC). A manual run gets the last complete window before it; the `window_start` and
`window_end` params override the window.

**Flow.** `resolve_window` → `plan_pages` (a cheap pass listing trace ids) → one mapped
`evaluate_page` group per page (`fetch_page` → `judge_tone` and `judge_joyfulness` in
parallel → `push_scores`) → `summarize_run`, which fails the run if any page failed.

**Inputs.** Connections `langfuse_default` (host, public key as login, secret key as
password) and `openai_default` (API key as password, optional base URL as host, optional
`model` in the extra). Judge tasks run in the `langfuse_eval_judge` pool.

**Idempotence.** Score ids derive from trace id and score name, and each score's timestamp is
its trace's start time, so retries and backfills overwrite scores instead of adding them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    Param,
    dag,
    get_current_context,
    task,
    task_group,
)
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from langfuse_eval_connections import (
    LANGFUSE_CONN_ID,
    OPENAI_CONN_ID,
    judge_settings,
    langfuse_settings,
)
from langfuse_eval_provider.links import LangfuseTracesLink

from include.langfuse_eval import EVALUATOR_VERSION
from include.langfuse_eval.errors import PermanentError
from include.langfuse_eval.pipeline import (
    EVALUATORS,
    PageWork,
    fetch,
    judge,
    plan_run,
    push,
    summarize,
)
from include.langfuse_eval.planning import MAX_PAGE_SIZE, PageSpec
from include.langfuse_eval.scores import RunContext
from include.langfuse_eval.verdicts import Verdict
from include.langfuse_eval.window import Window, parse_timestamp

log = logging.getLogger(__name__)

DAG_ID = "langfuse_external_eval"
SCHEDULE_CRON = "0 5 * * *"
TIMEZONE = os.environ.get("LANGFUSE_EVAL_TIMEZONE", "UTC")
JUDGE_POOL = "langfuse_eval_judge"
LANGFUSE_POOL = "langfuse_eval_api"
DEFAULT_TAG = "ext_eval_pipelines"
STATS_XCOM_KEY = "stats"

# Downstream DAGs can schedule on this asset, by URI or by name. Its events carry the run
# summary's counts, tag, window and dry_run flag in their extra.
# NOTE: a run with another tag param, or a dry run, emits an event on this asset too, because an
# outlet is fixed when the DAG is parsed. Consumers check the tag and dry_run in the extra.
SUMMARY_ASSET = Asset(
    name=f"{DAG_ID}_summary",
    uri=f"langfuse://{LANGFUSE_CONN_ID}/tags/{DEFAULT_TAG}",
    group="langfuse",
)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "llm-evaluation",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=30),
}

PARAMS = {
    "tag": Param(
        DEFAULT_TAG,
        type="string",
        minLength=1,
        title="Trace tag",
        description="Evaluate root observations whose trace carries this tag.",
    ),
    "page_size": Param(
        10,
        type="integer",
        minimum=1,
        maximum=MAX_PAGE_SIZE,
        title="Page size",
        description="Traces per mapped page; grown on large windows to keep pages under 512.",
    ),
    "max_traces": Param(
        50,
        type=["null", "integer"],
        minimum=1,
        title="Maximum traces",
        description="Maximum traces to evaluate per run, newest first; null evaluates all.",
    ),
    "evaluators": Param(
        list(EVALUATORS),
        type="array",
        items={"type": "string", "enum": list(EVALUATORS)},
        minItems=1,
        uniqueItems=True,
        title="Judges",
        description="Judges to run.",
    ),
    "window_start": Param(
        None,
        type=["null", "string"],
        format="date-time",
        title="Window start",
        description="Override of the window start (ISO 8601 with offset); needs window_end.",
    ),
    "window_end": Param(
        None,
        type=["null", "string"],
        format="date-time",
        title="Window end",
        description="Override of the window end, exclusive; needs window_start.",
    ),
    "dry_run": Param(
        False, type="boolean", title="Dry run", description="Judge the traces but write no scores."
    ),
    "force": Param(
        False,
        type="boolean",
        title="Judge again",
        description="Judge every trace again, even those already scored by this evaluator version.",
    ),
    "redact": Param(
        True,
        type="boolean",
        title="Redact secrets",
        description="Replace API-key-like tokens and email addresses before judging.",
    ),
    "lookback_hours": Param(
        2,
        type="number",
        minimum=0,
        maximum=168,
        title="Lookback hours",
        description="Hours to read before the window start, so late traces get scored once.",
    ),
    "defer_minutes": Param(
        60,
        type="number",
        minimum=0,
        maximum=1440,
        title="Defer minutes",
        description="Traces without output that started this close to the window end are "
        "deferred to the next run (keep lookback_hours longer), not skipped.",
    ),
    "max_judge_error_ratio": Param(
        0.2,
        type="number",
        minimum=0,
        maximum=1,
        title="Maximum judge-error ratio",
        description="Fail the run when more than this share of judged traces got a judge error.",
    ),
    "judge_concurrency": Param(
        8,
        type="integer",
        minimum=1,
        maximum=64,
        title="Judge concurrency",
        description="Judge calls in flight per judge task.",
    ),
}


def _fail_permanently(error: PermanentError) -> AirflowFailException:
    """Turn a permanent error into a failure that Airflow does not retry."""
    return AirflowFailException(
        f"{error} This DAG reads Langfuse through connection {LANGFUSE_CONN_ID!r} and the "
        f"judge through {OPENAI_CONN_ID!r}."
    )


def read_window(window: dict[str, str], params: dict[str, Any]) -> Window:
    """Widen the run's window backwards by the ``lookback_hours`` param for reading."""
    run_window = Window.from_dict(window)
    lookback = timedelta(hours=float(params["lookback_hours"]))
    return Window(run_window.start - lookback, run_window.end)


def defer_span(params: dict[str, Any]) -> timedelta:
    """Return how long before the window end a trace without output is deferred.

    It is capped at the lookback, because the next run reads back only that far.
    """
    minutes = min(float(params["defer_minutes"]), float(params["lookback_hours"]) * 60)
    return timedelta(minutes=minutes)


def resolve_run_window(context: dict[str, Any]) -> Window:
    """Pick the run's window: the params' override, else the run's data interval.

    A run without a logical date has no data interval in its context. It gets the window that
    a manual run at its ``run_after`` would get, the last complete one.
    """
    params = context["params"]
    start, end = params.get("window_start"), params.get("window_end")
    if start or end:
        if not (start and end):
            raise AirflowFailException(
                "Set both window_start and window_end, or neither to use the data interval."
            )
        return Window(parse_timestamp(start), parse_timestamp(end))

    interval_start = context.get("data_interval_start")
    interval_end = context.get("data_interval_end")
    if interval_start is None or interval_end is None:
        # The task's DAG carries the SDK timetable, which only describes the schedule; the
        # core timetable computes windows, the same conversion that DAG.test() makes.
        from airflow.serialization.encoders import coerce_to_core_timetable

        dag_run = context["dag_run"]
        timetable = coerce_to_core_timetable(context["dag"].timetable)
        interval = timetable.infer_manual_data_interval(run_after=dag_run.run_after)
        interval_start, interval_end = interval.start, interval.end
        log.info("Run %s has no logical date; using the last complete window", dag_run.run_id)
    if interval_start >= interval_end:
        raise AirflowFailException(
            f"The data interval {interval_start} to {interval_end} is empty: this DAG needs a "
            "05:00-to-05:00 interval timetable, or set window_start and window_end."
        )
    return Window(interval_start, interval_end)


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable(SCHEDULE_CRON, timezone=TIMEZONE),
    start_date=pendulum.datetime(2026, 1, 1, tz=TIMEZONE),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["langfuse", "llm-evaluation"],
    doc_md=__doc__,
)
def langfuse_external_eval() -> None:
    # Tasks that return a dict set multiple_outputs=False: Airflow would otherwise infer it from
    # the return type and store every key again as its own XCom.
    @task(multiple_outputs=False)
    def resolve_window() -> dict[str, str]:
        """Resolve the run's evaluation window."""
        params = dict(get_current_context()["params"])
        if float(params["defer_minutes"]) > float(params["lookback_hours"]) * 60:
            log.warning(
                "defer_minutes=%s is longer than lookback_hours=%s, and the next run reads back "
                "only that far: traces are deferred for %s minutes only",
                params["defer_minutes"],
                params["lookback_hours"],
                float(params["lookback_hours"]) * 60,
            )
        try:
            window = resolve_run_window(get_current_context())
        except PermanentError as error:
            raise _fail_permanently(error) from error
        log.info("Evaluating window %s with params %s", window.to_dict(), params)
        return window.to_dict()

    @task(pool=LANGFUSE_POOL)
    def plan_pages(window: dict[str, str]) -> list[dict[str, Any]]:
        """List the window's traces and split them into pages; push the counts as ``stats``."""
        context = get_current_context()
        params = context["params"]
        try:
            plan, already_scored = plan_run(
                langfuse_settings(),
                tag=params["tag"],
                window=read_window(window, params),
                page_size=params["page_size"],
                max_traces=params["max_traces"],
                evaluators=params["evaluators"],
                evaluator_version=EVALUATOR_VERSION,
                force=params["force"],
            )
        except PermanentError as error:
            raise _fail_permanently(error) from error
        stats = {
            "traces_found": plan.traces_found,
            "traces_planned": plan.traces_planned,
            "pages": len(plan.pages),
            "page_size": plan.page_size,
            "already_scored_at_planning": already_scored,
        }
        context["ti"].xcom_push(key=STATS_XCOM_KEY, value=stats)
        return [page.to_dict() for page in plan.pages]

    # The texts of the traces travel to the judges through XCom but are kept out of the logs.
    @task(pool=LANGFUSE_POOL, show_return_value_in_logs=False, multiple_outputs=False)
    def fetch_page(page: dict[str, Any], window: dict[str, str]) -> dict[str, Any]:
        """Fetch the page's traces and extract the texts to judge."""
        params = get_current_context()["params"]
        try:
            work = fetch(
                langfuse_settings(),
                tag=params["tag"],
                window=read_window(window, params),
                page=PageSpec.from_dict(page),
                evaluators=params["evaluators"],
                evaluator_version=EVALUATOR_VERSION,
                force=params["force"],
                redact_text=params["redact"],
                defer_after=Window.from_dict(window).end - defer_span(params),
            )
        except PermanentError as error:
            raise _fail_permanently(error) from error
        return work.to_dict()

    def run_judge(evaluator: str, fetched: dict[str, Any]) -> list[dict[str, Any]]:
        params = get_current_context()["params"]
        if evaluator not in params["evaluators"]:
            log.info("%s is not among the selected evaluators; nothing to judge", evaluator)
            return []
        try:
            verdicts = judge(
                evaluator,
                judge_settings(),
                PageWork.from_dict(fetched),
                max_concurrency=params["judge_concurrency"],
            )
        except PermanentError as error:
            raise _fail_permanently(error) from error
        return [verdict.to_dict() for verdict in verdicts]

    @task(pool=JUDGE_POOL, show_return_value_in_logs=False)
    def judge_tone(fetched: dict[str, Any]) -> list[dict[str, Any]]:
        """Classify the tone of each trace's output."""
        return run_judge("tone", fetched)

    @task(pool=JUDGE_POOL, show_return_value_in_logs=False)
    def judge_joyfulness(fetched: dict[str, Any]) -> list[dict[str, Any]]:
        """Score how engaging and fun each trace's output is."""
        return run_judge("joyfulness", fetched)

    @task(pool=LANGFUSE_POOL, multiple_outputs=False)
    def push_scores(
        page: dict[str, Any],
        fetched: dict[str, Any],
        tone: list[dict[str, Any]],
        joyfulness: list[dict[str, Any]],
        window: dict[str, str],
    ) -> dict[str, Any]:
        """Write the page's scores, or count them on a dry run."""
        context = get_current_context()
        params = context["params"]
        try:
            judge_model = judge_settings().model
            report = push(
                langfuse_settings(),
                work=PageWork.from_dict(fetched),
                traces_owned=len(page["trace_ids"]),
                verdicts=[Verdict.from_dict(verdict) for verdict in [*tone, *joyfulness]],
                context=RunContext(
                    evaluator_version=EVALUATOR_VERSION,
                    judge_model=judge_model,
                    dag_run_id=context["dag_run"].run_id,
                    window_start=window["start"],
                    window_end=window["end"],
                ),
                dry_run=params["dry_run"],
            )
        except PermanentError as error:
            raise _fail_permanently(error) from error
        return report.to_dict()

    @task_group
    def evaluate_page(page: dict[str, Any], window: dict[str, str]) -> Any:
        fetched = fetch_page(page=page, window=window)
        tone = judge_tone(fetched)
        joyfulness = judge_joyfulness(fetched)
        pushed = push_scores(
            page=page, fetched=fetched, tone=tone, joyfulness=joyfulness, window=window
        )
        for output in (fetched, pushed):
            output.operator.operator_extra_links = (LangfuseTracesLink(page_argument="page"),)
        return pushed

    @task(trigger_rule="all_done", retries=0, multiple_outputs=False, outlets=[SUMMARY_ASSET])
    def summarize_run(reports: Any) -> dict[str, Any]:
        """Count the run's outcomes, log them, and fail the run if a page failed.

        On success, the summary becomes the extra of the run's event on ``SUMMARY_ASSET``.
        """
        stats = get_current_context()["ti"].xcom_pull(task_ids="plan_pages", key=STATS_XCOM_KEY)
        if stats is None:
            raise AirflowFailException(
                "No page ran because resolve_window or plan_pages failed: see their logs."
            )
        # NOTE: Airflow 3.3.2 hands over a single dict, not a one-item list, when the mapped
        # group ran for one page only. So a mapping is treated as one report.
        collected = [reports] if isinstance(reports, Mapping) else list(reports or [])
        summary = summarize(
            traces_found=stats["traces_found"],
            traces_planned=stats["traces_planned"],
            pages=stats["pages"],
            reports=collected,
            already_scored_at_planning=stats.get("already_scored_at_planning", 0),
        )
        log.info("Run summary: %s", json.dumps(summary, sort_keys=True))
        reported = {report["index"] for report in collected}
        missing = sorted(set(range(stats["pages"])) - reported)
        if missing:
            raise AirflowException(
                f"{len(missing)} of {stats['pages']} pages failed (page indexes {missing}); "
                "their traces have no new scores. Clear the failed tasks to retry them."
            )
        max_ratio = get_current_context()["params"]["max_judge_error_ratio"]
        if summary["judge_error_ratio"] > max_ratio:
            raise AirflowException(
                f"{summary['judge_error_ratio']:.1%} of judged traces got a judge error, above "
                f"the max_judge_error_ratio of {max_ratio:.1%}: check the judge model and the "
                "judge errors in the judge task logs."
            )
        context = get_current_context()
        window = context["ti"].xcom_pull(task_ids="resolve_window")
        context["outlet_events"][SUMMARY_ASSET].extra = {
            **summary,
            "tag": context["params"]["tag"],
            "window_start": window["start"],
            "window_end": window["end"],
            "dag_run_id": context["dag_run"].run_id,
            "evaluator_version": EVALUATOR_VERSION,
        }
        return summary

    window = resolve_window()
    plan = plan_pages(window)
    reports = evaluate_page.partial(window=window).expand(page=plan)
    summary = summarize_run(reports=reports)
    summary.operator.operator_extra_links = (LangfuseTracesLink(window_task_id="resolve_window"),)


langfuse_external_eval()
