"""The baseline: a notebook-style loop over the window, one trace at a time.

It walks the v2 observations page by page with the SDK's ``api.observations.get_many``, as a
first script usually does. For each trace it sends one tone chat completion and builds a new
GEval with criteria only, so GEval generates its evaluation steps again for every trace (one
extra call). Each score is written with its own ``api.scores.create``, without a score id. The
tone call uses the project's tone prompt, so that the prompt tokens compare.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

from deepeval.metrics import GEval
from deepeval.models import OpenAIModel
from deepeval.test_case import LLMTestCase, SingleTurnParams
from langfuse.api import LangfuseAPI
from langfuse.api.scores.types.create_score_request import CreateScoreRequest
from openai import OpenAI

from bench.report import Outcome
from include.langfuse_eval.joyfulness import CRITERIA
from include.langfuse_eval.settings import JudgeSettings, LangfuseSettings
from include.langfuse_eval.tone import MAX_REPLY_TOKENS, RESPONSE_FORMAT, build_messages
from include.langfuse_eval.window import Window, isoformat_utc

log = logging.getLogger(__name__)

PAGE_LIMIT = 50
"""The SDK's default page size of ``get_many``."""


def window_filter(tag: str, window: Window) -> str:
    """Build the v2 filter of the window's tagged root observations."""
    return json.dumps(
        [
            {"type": "arrayOptions", "column": "traceTags", "operator": "all of", "value": [tag]},
            {"type": "boolean", "column": "isRootObservation", "operator": "=", "value": True},
            {
                "type": "datetime",
                "column": "startTime",
                "operator": ">=",
                "value": isoformat_utc(window.start, "microseconds"),
            },
            {
                "type": "datetime",
                "column": "startTime",
                "operator": "<",
                "value": isoformat_utc(window.end, "microseconds"),
            },
        ]
    )


def run_baseline(
    langfuse: LangfuseSettings, judge: JudgeSettings, *, tag: str, window: Window, sample: int
) -> Outcome:
    """Evaluate the newest ``sample`` traces of the window one at a time.

    Args:
        langfuse: The Langfuse server and keys.
        judge: The judge endpoint and model.
        tag: Trace tag of the evaluated traces.
        window: The window to evaluate.
        sample: How many traces to evaluate before stopping.

    Returns:
        The evaluated trace ids and the errors by type.
    """
    api = LangfuseAPI(
        base_url=langfuse.host, username=langfuse.public_key, password=langfuse.secret_key
    )
    client = OpenAI(api_key=judge.api_key, base_url=judge.base_url)
    model = OpenAIModel(
        model=judge.model, base_url=judge.base_url, api_key=judge.api_key, temperature=0
    )
    query = window_filter(tag, window)
    evaluated: list[str] = []
    errors: Counter[str] = Counter()
    pages = 0
    cursor: str | None = None
    while len(evaluated) < sample:
        page = api.observations.get_many(
            fields="core,basic,io",
            limit=PAGE_LIMIT,
            filter=query,
            cursor=cursor,
            request_options={"timeout_in_seconds": 60},
        )
        pages += 1
        for observation in page.data:
            if len(evaluated) >= sample:
                break
            if not observation.output:
                continue
            try:
                completion = client.chat.completions.create(
                    model=judge.model,
                    messages=build_messages(observation.output),  # type: ignore[arg-type]
                    temperature=0,
                    max_tokens=MAX_REPLY_TOKENS,
                    response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
                )
                tone = json.loads(completion.choices[0].message.content or "{}")["tones"][0]
                metric = GEval(
                    name="joyfulness",
                    criteria=CRITERIA,
                    evaluation_params=[SingleTurnParams.ACTUAL_OUTPUT],
                    model=model,
                )
                metric.measure(
                    LLMTestCase(input=observation.input or "", actual_output=observation.output),
                    _show_indicator=False,
                )
                api.scores.create(
                    request=[
                        CreateScoreRequest(
                            trace_id=observation.trace_id,
                            name="tone",
                            value=tone,
                            data_type="CATEGORICAL",
                        )
                    ]
                )
                api.scores.create(
                    request=[
                        CreateScoreRequest(
                            trace_id=observation.trace_id,
                            name="joyfulness",
                            value=float(metric.score or 0.0),
                            data_type="NUMERIC",
                            comment=metric.reason,
                        )
                    ]
                )
            except Exception as error:  # A notebook loop logs the error and goes on.
                errors[type(error).__name__] += 1
                log.warning("Baseline failed on trace %s: %s", observation.trace_id, error)
            evaluated.append(observation.trace_id)
        cursor = getattr(page.meta, "cursor", None)
        if not cursor:
            break
    client.close()
    return Outcome(evaluated_ids=evaluated, extra={"pages": pages, "errors": dict(errors)})
