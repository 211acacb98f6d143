"""The joyfulness judge: deepeval's GEval on the actual output, with pinned evaluation steps.

With ``evaluation_steps`` given, GEval skips its step-generation call, so each trace costs one
judge call and every run applies the same rubric. A GEval instance stores its score and reason
on itself, so every trace gets its own instance, all sharing one judge model and one HTTP
client.

GEval itself accepts replies that must not become scores: Python's JSON parser reads ``NaN``
and ``Infinity``, and with logprobs the weighted mean of the digit tokens can pull a raw score
of 11 back into [0, 1]. So the HTTP hook keeps the raw score reply, and it is checked here
before GEval's score is used:

- The content must contain one JSON object (alone, fenced, or the only one in other text)
  with a string ``reason`` and a ``score`` that is a finite JSON number from 0 to 10.
  ``null``, ``NaN``, ``Infinity``, 11, -1 and ``"7"`` are rejected, never clamped.
- When the logprobs contain the score's token, GEval's probability-weighted score is used,
  and it must lie in [0, 1]. Otherwise (no logprobs, or a score such as 7.5 that is not one
  token) GEval falls back to the raw score divided by 10. That fallback is kept as a
  normalisation, with ``score_source`` "raw" in the metadata, because the raw score passed
  the check above.
- A rejected reply, or one GEval cannot parse (not JSON, a missing key, a refusal, a cut-off
  reply), gets one retry: a fresh GEval whose score prompt starts with a stricter instruction
  (:class:`StrictGEvalTemplate`). When the retry is unusable too, the verdict is a judge error
  with no value and no score. Each completion that returned counts in ``Verdict.calls``.
"""

from __future__ import annotations

import os

# deepeval reads these when it is imported: no telemetry, no .env loading, no local files, and
# the OpenAI SDK (which honours Retry-After) does the retrying instead of deepeval's own loop.
os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "1")
os.environ.setdefault("DEEPEVAL_DISABLE_DOTENV", "1")
os.environ.setdefault("DEEPEVAL_FILE_SYSTEM", "READ_ONLY")
os.environ.setdefault("DEEPEVAL_SDK_RETRY_PROVIDERS", "openai")

import json
import logging
import math
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx
from deepeval.metrics import GEval
from deepeval.metrics.g_eval import GEvalTemplate
from deepeval.models import OpenAIModel
from deepeval.test_case import LLMTestCase, SingleTurnParams

from include.langfuse_eval.concurrency import observe_judge_reply
from include.langfuse_eval.errors import JudgeReplyError
from include.langfuse_eval.planning import TraceItem
from include.langfuse_eval.settings import JudgeSettings, tls_context
from include.langfuse_eval.verdicts import (
    CODE_FENCE,
    Verdict,
    json_objects,
    judge_adaptively,
    permanent_judge_errors,
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

MAX_ATTEMPTS = 2
"""The first GEval call and one retry with the stricter template."""
SCORE_MIN, SCORE_MAX = 0.0, 10.0
UNUSABLE_FINISH_REASONS = frozenset({"length", "content_filter"})
STRICT_INSTRUCTION = (
    "IMPORTANT: a previous answer to this request could not be used. Reply with exactly one "
    'JSON object and nothing else, in this shape: {"reason": "<one or two sentences>", '
    '"score": <a whole number from 0 to 10>}. Both keys are required. The score must be a '
    "plain number such as 7: not null, not text, not NaN, never below 0 or above 10. No code "
    "fence and no text before or after the object.\n\n"
)


class StrictGEvalTemplate(GEvalTemplate):
    """GEval's templates with the score prompt prefixed by :data:`STRICT_INSTRUCTION`."""

    @staticmethod
    def generate_evaluation_results(**kwargs: Any) -> str:
        """Render deepeval's score prompt with the stricter instruction in front."""
        return STRICT_INSTRUCTION + GEvalTemplate.generate_evaluation_results(**kwargs)


@dataclass
class _CallLog:
    """Record of the HTTP hook for one GEval attempt: the verdict to count on and the replies."""

    verdict: Verdict
    replies: list[dict[str, Any]] = field(default_factory=list)


_current_call: ContextVar[_CallLog | None] = ContextVar("current_call", default=None)


async def _record_usage(response: httpx.Response) -> None:
    """Count a successful chat completion and its tokens, and keep its body for the checks."""
    call = _current_call.get()
    if call is None or not response.request.url.path.endswith("/chat/completions"):
        return
    if response.status_code != 200:
        return
    await response.aread()
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    usage = body.get("usage") or {}
    call.verdict.calls += 1
    call.verdict.prompt_tokens += int(usage.get("prompt_tokens") or 0)
    call.verdict.completion_tokens += int(usage.get("completion_tokens") or 0)
    call.replies.append(body)


def _load_object(content: str) -> dict[str, Any]:
    """Load the one JSON object of a reply: alone, fenced, or the only one in other text.

    ``NaN`` and ``Infinity`` are read as the floats they name, so the score check can name
    them, rather than failing the parse.

    Raises:
        JudgeReplyError: No object, or more than one.
    """
    stripped = content.strip()
    fenced = CODE_FENCE.match(stripped)
    body = fenced.group(1) if fenced else stripped
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    objects = [candidate for candidate in json_objects(body) if isinstance(candidate, dict)]
    if len(objects) != 1:
        raise JudgeReplyError(f"The score reply is not one JSON object ({len(objects)} found).")
    return objects[0]


@dataclass(frozen=True)
class RawScore:
    """The checked score reply: the raw 0-10 score, the reason, and whether GEval weights it.

    Attributes:
        score: The raw score from the reply's JSON.
        reason: The reply's reason.
        weighted: Whether the logprobs contain the score's token as GEval writes it
            (``str(score)``), so GEval weights the score by the token's alternatives.
    """

    score: float
    reason: str
    weighted: bool


def check_score_reply(body: dict[str, Any] | None) -> RawScore:
    """Check GEval's raw score reply before its score is trusted.

    Args:
        body: The chat completion JSON of the score call.

    Returns:
        The raw score, the reason and whether GEval weights it by logprobs.

    Raises:
        JudgeReplyError: No reply, a refusal, a cut-off reply, no single JSON object, a
            missing or non-string reason, or a score that is not a finite number from 0 to
            10. The message quotes no reply text.
    """
    choices = (body or {}).get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        raise JudgeReplyError("The judge returned no score reply.")
    choice = choices[0]
    message = choice.get("message") or {}
    if message.get("refusal"):
        raise JudgeReplyError("The score reply is a refusal (message.refusal is set).")
    if choice.get("finish_reason") in UNUSABLE_FINISH_REASONS:
        raise JudgeReplyError(f"The score reply was cut off ({choice.get('finish_reason')}).")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise JudgeReplyError("The score reply is empty.")
    data = _load_object(content)
    missing = [key for key in ("score", "reason") if key not in data]
    if missing:
        raise JudgeReplyError(f"The score reply is missing {' and '.join(missing)}.")
    reason, score = data["reason"], data["score"]
    if not isinstance(reason, str) or not reason.strip():
        raise JudgeReplyError("The score reply's reason is empty or not a string.")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise JudgeReplyError(f"The score is not a number: {type(score).__name__}.")
    if not math.isfinite(score):
        raise JudgeReplyError(f"The score is not finite: {score}.")
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise JudgeReplyError(f"The score {score} is outside 0 to 10.")
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    score_token = str(score)
    weighted = isinstance(tokens, list) and any(
        isinstance(entry, dict) and entry.get("token") == score_token for entry in tokens
    )
    return RawScore(float(score), reason, weighted)


def checked_value(raw: RawScore, metric_score: Any) -> float:
    """Return GEval's score once it agrees with the checked raw reply.

    Raises:
        JudgeReplyError: The score is not a finite number in [0, 1], or, when not weighted,
            differs from the raw score divided by 10.
    """
    if (
        isinstance(metric_score, bool)
        or not isinstance(metric_score, int | float)
        or not math.isfinite(metric_score)
        or not 0.0 <= metric_score <= 1.0
    ):
        raise JudgeReplyError(f"GEval returned a score outside [0, 1]: {metric_score!r}")
    if not raw.weighted and not math.isclose(metric_score, raw.score / 10, abs_tol=1e-9):
        raise JudgeReplyError(
            "GEval's score differs from the raw score of a reply it could not weight."
        )
    return float(metric_score)


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
        timeout=settings.timeout_s,
        verify=tls_context(),
        event_hooks={"response": [_record_usage, observe_judge_reply]},
    )
    return SharedClientOpenAIModel(
        model=settings.model,
        base_url=settings.base_url,
        api_key=settings.api_key,
        temperature=0,
        async_http_client=http_client,
        # deepeval builds a sync client on construction that the async judge never calls;
        # this one shares the TLS context and opens no connection.
        http_client=httpx.Client(timeout=settings.timeout_s, verify=tls_context()),
        max_retries=settings.max_retries,
        timeout=settings.timeout_s,
    )


def build_metric(model: SharedClientOpenAIModel, *, strict: bool = False) -> GEval:
    """Build a new GEval for one attempt. Never share one instance across concurrent calls.

    Args:
        model: The shared judge model.
        strict: Use :class:`StrictGEvalTemplate`, for the retry.
    """
    return GEval(
        name=SCORE_NAME,
        criteria=CRITERIA,
        evaluation_steps=EVALUATION_STEPS,
        evaluation_params=[SingleTurnParams.ACTUAL_OUTPUT],
        model=model,
        async_mode=True,
        evaluation_template=StrictGEvalTemplate if strict else GEvalTemplate,
    )


class JoyfulnessJudge:
    """Score how engaging and fun outputs are, in [0, 1], with GEval.

    Args:
        model: The judge model, shared by all calls of a page.
    """

    def __init__(self, model: SharedClientOpenAIModel) -> None:
        self.model = model

    async def judge(self, item: TraceItem) -> Verdict:
        """Judge one trace, retrying an unusable reply once with the stricter template.

        Returns:
            A verdict with the score in [0, 1], or with an error and no value when the retry
            was unusable too. ``calls`` and the token counts cover every attempt.
        """
        text, truncated = truncate_for_judge(item.output_text)
        verdict = Verdict(trace_id=item.trace_id, name=SCORE_NAME)
        test_case = LLMTestCase(input=item.input_text or "", actual_output=text)
        problem = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            metric = build_metric(self.model, strict=attempt > 1)
            try:
                raw, value = await self._attempt(metric, test_case, verdict)
            except JudgeReplyError as error:
                problem = str(error)
                log.warning(
                    "Joyfulness judge reply unusable on trace %s, attempt %d of %d: %s",
                    item.trace_id,
                    attempt,
                    MAX_ATTEMPTS,
                    problem,
                )
                continue
            verdict.value = value
            verdict.comment = metric.reason or raw.reason
            verdict.metadata = {
                "rubric_version": RUBRIC_VERSION,
                "truncated": truncated,
                "attempts": attempt,
                "score_source": "logprobs" if raw.weighted else "raw",
            }
            return verdict
        verdict.error = f"No usable joyfulness reply after {MAX_ATTEMPTS} attempts: {problem}"
        log.warning("Joyfulness judge error on trace %s: %s", item.trace_id, verdict.error)
        return verdict

    async def _attempt(
        self, metric: GEval, test_case: LLMTestCase, verdict: Verdict
    ) -> tuple[RawScore, float]:
        """Run one GEval measurement and check its raw reply and score.

        Raises:
            JudgeReplyError: The reply or the score is unusable.
        """
        call = _CallLog(verdict)
        token = _current_call.set(call)
        failure: Exception | None = None
        try:
            with permanent_judge_errors():
                await metric.a_measure(test_case, _show_indicator=False)
        except (ValueError, KeyError, TypeError) as error:
            # deepeval raises these for content it cannot parse and for a null score.
            failure = error
        finally:
            _current_call.reset(token)
        raw = check_score_reply(call.replies[-1] if call.replies else None)
        if failure is not None:
            raise JudgeReplyError(
                f"GEval could not score the reply ({type(failure).__name__})."
            ) from failure
        return raw, checked_value(raw, metric.score)

    async def judge_all(self, items: list[TraceItem], max_concurrency: int) -> list[Verdict]:
        """Judge a page of traces concurrently, at most ``max_concurrency`` calls at once.

        The calls in flight adapt between 1 and ``max_concurrency``: they halve on a 429 reply
        and climb again while replies succeed.
        """
        return await judge_adaptively(items, self.judge, max_concurrency, SCORE_NAME)
