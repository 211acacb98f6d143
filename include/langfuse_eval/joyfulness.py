"""The joyfulness judge: deepeval's GEval on the actual output, with pinned evaluation steps.

With ``evaluation_steps`` given, GEval skips its step-generation call, so each trace costs one
judge call and every run applies the same rubric. A GEval instance stores its score and reason
on itself, so every trace gets its own instance, all sharing one judge model and one HTTP
client.
"""

from __future__ import annotations

import os

# deepeval reads these when it is imported: no telemetry, no .env loading, no local files, and
# the OpenAI SDK (which honours Retry-After) does the retrying instead of deepeval's own loop.
os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "1")
os.environ.setdefault("DEEPEVAL_DISABLE_DOTENV", "1")
os.environ.setdefault("DEEPEVAL_FILE_SYSTEM", "READ_ONLY")
os.environ.setdefault("DEEPEVAL_SDK_RETRY_PROVIDERS", "openai")

import logging
import math
from contextvars import ContextVar
from typing import Any

import httpx
import openai
from deepeval.metrics import GEval
from deepeval.models import OpenAIModel
from deepeval.test_case import LLMTestCase, SingleTurnParams

from include.langfuse_eval.errors import AuthenticationError, PermanentError
from include.langfuse_eval.planning import TraceItem
from include.langfuse_eval.settings import JudgeSettings
from include.langfuse_eval.verdicts import (
    Verdict,
    gather_bounded,
    truncate_for_judge,
)

log = logging.getLogger(__name__)

SCORE_NAME = "joyfulness"
CRITERIA = "whether the output is engaging and fun"
RUBRIC_VERSION = "joyfulness_v1"
EVALUATION_STEPS = [
    "Read the actual output and note what makes it engaging: vivid images, playful wording, "
    "humour, surprising facts, enthusiasm and warmth towards the reader.",
    "Note what makes it dull or off-putting: flat lists of facts, unexplained jargon, a cold "
    "or curt voice, alarm without warmth, or no real content.",
    "Judge how engaging and fun the output is to read as a whole, not whether it is correct, "
    "complete or polite.",
    "Give a high score to an output that is clearly engaging and fun, a middle score to one "
    "that is pleasant but plain, and a low score to one that is dull, cold or empty.",
]

_current_verdict: ContextVar[Verdict | None] = ContextVar("current_verdict", default=None)


async def _record_usage(response: httpx.Response) -> None:
    """Count a successful chat completion and its tokens on the verdict being judged."""
    verdict = _current_verdict.get()
    if verdict is None or not response.request.url.path.endswith("/chat/completions"):
        return
    if response.status_code != 200:
        return
    await response.aread()
    try:
        usage = response.json().get("usage") or {}
    except ValueError:
        usage = {}
    verdict.calls += 1
    verdict.prompt_tokens += int(usage.get("prompt_tokens") or 0)
    verdict.completion_tokens += int(usage.get("completion_tokens") or 0)


class SharedClientOpenAIModel(OpenAIModel):
    """deepeval's OpenAI model, reusing one async client for every call.

    deepeval builds a new client on each call. Reusing one keeps a single connection pool per
    page and lets the HTTP hooks count calls and tokens.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async_client: Any = None

    def load_model(self, async_mode: bool = False) -> Any:
        """Return the shared async client, or a new sync client."""
        if not async_mode:
            return super().load_model(async_mode=False)
        if self._async_client is None:
            self._async_client = super().load_model(async_mode=True)
        return self._async_client


def build_judge_model(settings: JudgeSettings) -> SharedClientOpenAIModel:
    """Build the explicit deepeval judge model from the judge settings.

    An explicit model object keeps ``.deepeval`` and ``.env`` settings from switching the
    provider behind the DAG's back.
    """
    http_client = httpx.AsyncClient(
        timeout=settings.timeout_s, event_hooks={"response": [_record_usage]}
    )
    return SharedClientOpenAIModel(
        model=settings.model,
        base_url=settings.base_url,
        api_key=settings.api_key,
        temperature=0,
        async_http_client=http_client,
        max_retries=settings.max_retries,
        timeout=settings.timeout_s,
    )


def build_metric(model: SharedClientOpenAIModel) -> GEval:
    """Build a new GEval for one trace. Never share one instance across concurrent calls."""
    return GEval(
        name=SCORE_NAME,
        criteria=CRITERIA,
        evaluation_steps=EVALUATION_STEPS,
        evaluation_params=[SingleTurnParams.ACTUAL_OUTPUT],
        model=model,
        async_mode=True,
    )


class JoyfulnessJudge:
    """Score how engaging and fun outputs are, in [0, 1], with GEval.

    Args:
        model: The judge model, shared by all calls of a page.
    """

    def __init__(self, model: SharedClientOpenAIModel) -> None:
        self.model = model

    async def judge(self, item: TraceItem) -> Verdict:
        """Judge one trace. Unusable replies become a verdict with an error and no value."""
        text, truncated = truncate_for_judge(item.output_text)
        verdict = Verdict(trace_id=item.trace_id, name=SCORE_NAME)
        _current_verdict.set(verdict)
        metric = build_metric(self.model)
        test_case = LLMTestCase(input=item.input_text or "", actual_output=text)
        try:
            await metric.a_measure(test_case, _show_indicator=False)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            raise AuthenticationError(
                f"The judge endpoint rejected the API key (HTTP {error.status_code}): check the "
                "password and host of the OpenAI connection."
            ) from error
        except openai.RateLimitError as error:
            if error.code == "insufficient_quota":
                raise PermanentError(
                    "The judge account has no quota left (insufficient_quota): add credit or "
                    "use another key in the OpenAI connection."
                ) from error
            raise
        except (ValueError, KeyError, TypeError) as error:
            verdict.error = f"GEval could not score the reply: {error}"
            log.warning("Joyfulness judge error on trace %s: %s", item.trace_id, error)
            return verdict

        score = metric.score
        if not isinstance(score, (int, float)) or not math.isfinite(score) or not 0 <= score <= 1:
            verdict.error = f"GEval returned a score outside [0, 1]: {score!r}"
            log.warning("Joyfulness judge error on trace %s: %s", item.trace_id, verdict.error)
            return verdict
        verdict.value = float(score)
        verdict.comment = metric.reason
        verdict.metadata = {"rubric_version": RUBRIC_VERSION, "truncated": truncated}
        return verdict

    async def judge_all(self, items: list[TraceItem], max_concurrency: int) -> list[Verdict]:
        """Judge a page of traces concurrently, at most ``max_concurrency`` calls at once."""
        return await gather_bounded(items, self.judge, max_concurrency)
