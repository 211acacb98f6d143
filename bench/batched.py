"""The closest peer: langfuse SDK 5.2's ``Langfuse.run_batched_evaluation`` with our two judges.

The window's tagged root observations are selected with a v2 filter. The evaluators are the
project's tone judge and joyfulness judge (pinned GEval steps), as async functions so that
they do not block the SDK's concurrency. The SDK writes the scores through its background
queue with random ids, on the observation and its trace.
"""

from __future__ import annotations

import logging
from typing import Any

from langfuse import Evaluation, EvaluatorInputs, Langfuse

from bench.baseline import window_filter
from bench.report import Outcome
from include.langfuse_eval.extraction import extract_output
from include.langfuse_eval.joyfulness import JoyfulnessJudge, build_judge_model
from include.langfuse_eval.planning import TraceItem
from include.langfuse_eval.settings import JudgeSettings, LangfuseSettings
from include.langfuse_eval.tone import ToneJudge
from include.langfuse_eval.verdicts import Verdict
from include.langfuse_eval.window import Window, isoformat_utc

log = logging.getLogger(__name__)

DATA_TYPES = {"tone": "CATEGORICAL", "joyfulness": "NUMERIC"}


class _Judges:
    """The two judges, built on first use inside the SDK's event loop and shared by items."""

    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self._tone: ToneJudge | None = None
        self._joyfulness: JoyfulnessJudge | None = None

    @property
    def tone(self) -> ToneJudge:
        if self._tone is None:
            self._tone = ToneJudge(self.settings.async_client(), self.settings.model)
        return self._tone

    @property
    def joyfulness(self) -> JoyfulnessJudge:
        if self._joyfulness is None:
            self._joyfulness = JoyfulnessJudge(build_judge_model(self.settings))
        return self._joyfulness


def _item(output: str, metadata: dict[str, Any]) -> TraceItem:
    return TraceItem(
        trace_id=metadata["trace_id"],
        observation_id=metadata["observation_id"],
        start_time=metadata["start_time"],
        environment=None,
        input_text=None,
        output_text=output,
    )


def _evaluation(verdict: Verdict) -> Evaluation:
    if not verdict.ok:
        raise RuntimeError(verdict.error or f"No {verdict.name} value")
    return Evaluation(
        name=verdict.name,
        value=verdict.value,  # type: ignore[arg-type]
        comment=verdict.comment,
        metadata=verdict.metadata,
        data_type=DATA_TYPES[verdict.name],  # type: ignore[arg-type]
    )


def run_batched(
    langfuse: LangfuseSettings,
    judge: JudgeSettings,
    *,
    tag: str,
    window: Window,
    max_concurrency: int | None,
) -> Outcome:
    """Evaluate the window with ``run_batched_evaluation`` and flush the score queue.

    Args:
        langfuse: The Langfuse server and keys.
        judge: The judge endpoint and model.
        tag: Trace tag of the evaluated traces.
        window: The window to evaluate.
        max_concurrency: Items evaluated at once; None keeps the SDK's default.

    Returns:
        The evaluated trace ids and the SDK's result counters.
    """
    judges = _Judges(judge)
    evaluated: list[str] = []

    def mapper(*, item: Any) -> EvaluatorInputs:
        text, reason = extract_output(item.output)
        return EvaluatorInputs(
            input=item.input,
            output=text,
            metadata={
                "trace_id": item.trace_id,
                "observation_id": item.id,
                "start_time": isoformat_utc(item.start_time),
                "skip": reason.value if reason else None,
            },
        )

    async def tone(*, input: Any, output: Any, expected_output: Any, metadata: Any) -> Evaluation:
        evaluated.append(metadata["trace_id"])
        if output is None:
            raise ValueError(f"No output text: {metadata['skip']}")
        return _evaluation(await judges.tone.judge(_item(output, metadata)))

    async def joyfulness(
        *, input: Any, output: Any, expected_output: Any, metadata: Any
    ) -> Evaluation:
        if output is None:
            raise ValueError(f"No output text: {metadata['skip']}")
        return _evaluation(await judges.joyfulness.judge(_item(output, metadata)))

    client = Langfuse(
        public_key=langfuse.public_key,
        secret_key=langfuse.secret_key,
        base_url=langfuse.host,
        tracing_enabled=True,
    )
    options: dict[str, Any] = {}
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    try:
        result = client.run_batched_evaluation(
            mapper=mapper,
            evaluators=[tone, joyfulness],
            filter=window_filter(tag, window),
            **options,
        )
    finally:
        client.shutdown()
    extra = {
        "max_concurrency": max_concurrency or "default (5)",
        "items_fetched": result.total_items_fetched,
        "items_processed": result.total_items_processed,
        "items_failed": result.total_items_failed,
        "scores_created": result.total_scores_created,
        "evaluations_failed": result.total_evaluations_failed,
        "completed": result.completed,
    }
    log.info("run_batched_evaluation: %s", extra)
    return Outcome(evaluated_ids=sorted(set(evaluated)), extra=extra)
