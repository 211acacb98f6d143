"""The tone judge: one chat completion names the three dominant tones of an output.

The few-shot prompt lives in a versioned template file beside this module. The reply is
requested as strict structured output and validated again here, because an
OpenAI-compatible endpoint may ignore the schema. A reply outside the allowed labels is a
judge error with no score, never a default label.
"""

from __future__ import annotations

import json
import logging
import re
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

import openai
from openai import AsyncOpenAI

from include.langfuse_eval.errors import AuthenticationError, JudgeReplyError, PermanentError
from include.langfuse_eval.planning import TraceItem
from include.langfuse_eval.verdicts import Verdict, gather_bounded, truncate_for_judge

log = logging.getLogger(__name__)

SCORE_NAME = "tone"
TONES = (
    "neutral",
    "confident",
    "joyful",
    "optimistic",
    "friendly",
    "urgent",
    "analytical",
    "respectful",
)
TONE_COUNT = 3
PROMPT_VERSION = "tone_v1"
PROMPT_FILE = Path(__file__).with_name("prompts") / f"{PROMPT_VERSION}.txt"
MAX_REPLY_TOKENS = 60

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "tone_classification",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "tones": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(TONES)},
                    "minItems": TONE_COUNT,
                    "maxItems": TONE_COUNT,
                }
            },
            "required": ["tones"],
            "additionalProperties": False,
        },
    },
}

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)


@cache
def system_prompt() -> str:
    """Render the versioned system prompt with the allowed labels."""
    template = Template(PROMPT_FILE.read_text(encoding="utf-8"))
    return template.substitute(allowed_tones=", ".join(TONES))


def build_messages(text: str) -> list[dict[str, str]]:
    """Build the chat messages that classify one output, delimited as data.

    A closing tag inside the text is broken up so the text cannot end the data block early.
    """
    escaped = re.sub(r"</\s*output\s*>", "</ output>", text, flags=re.IGNORECASE)
    return [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": f"<output>\n{escaped}\n</output>"},
    ]


def parse_reply(content: str | None) -> tuple[str, ...]:
    """Parse a tone reply into three distinct allowed labels, most dominant first.

    Raises:
        JudgeReplyError: The reply is not JSON of that shape or names a label outside the set.
    """
    if not content or not content.strip():
        raise JudgeReplyError("The tone reply is empty.")
    stripped = content.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        parsed = json.loads(stripped)
    except ValueError as error:
        raise JudgeReplyError(f"The tone reply is not JSON: {content[:120]!r}") from error
    tones = parsed.get("tones") if isinstance(parsed, dict) else None
    if not isinstance(tones, list) or not all(isinstance(tone, str) for tone in tones):
        raise JudgeReplyError(f"The tone reply has no list of labels: {content[:120]!r}")
    labels = tuple(tone.strip().lower() for tone in tones)
    unknown = [label for label in labels if label not in TONES]
    if unknown:
        raise JudgeReplyError(f"The tone reply names labels outside the allowed set: {unknown}")
    if len(labels) != TONE_COUNT or len(set(labels)) != TONE_COUNT:
        raise JudgeReplyError(f"The tone reply needs {TONE_COUNT} distinct labels: {labels}")
    return labels


class ToneJudge:
    """Classify the tone of outputs with one shared async OpenAI client.

    Args:
        client: The client for the judge endpoint, shared by all calls of a page.
        model: The judge model name.
    """

    def __init__(self, client: AsyncOpenAI, model: str) -> None:
        self.client = client
        self.model = model

    async def judge(self, item: TraceItem) -> Verdict:
        """Judge one trace. Reply errors become a verdict with an error and no value."""
        text, truncated = truncate_for_judge(item.output_text)
        verdict = Verdict(trace_id=item.trace_id, name=SCORE_NAME)
        try:
            completion = await self.client.chat.completions.create(
                model=self.model,
                messages=build_messages(text),  # type: ignore[arg-type]
                temperature=0,
                max_tokens=MAX_REPLY_TOKENS,
                response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            raise AuthenticationError(
                f"The judge endpoint rejected the API key (HTTP {error.status_code}): check the "
                "password and host of the OpenAI connection."
            ) from error
        except openai.RateLimitError as error:
            if _is_quota_error(error):
                raise PermanentError(
                    "The judge account has no quota left (insufficient_quota): add credit or "
                    "use another key in the OpenAI connection."
                ) from error
            raise
        verdict.calls = 1
        if completion.usage is not None:
            verdict.prompt_tokens = completion.usage.prompt_tokens
            verdict.completion_tokens = completion.usage.completion_tokens
        choice = completion.choices[0]
        try:
            if choice.finish_reason == "length":
                raise JudgeReplyError("The tone reply was cut off by the token limit.")
            tones = parse_reply(choice.message.content)
        except JudgeReplyError as error:
            verdict.error = str(error)
            log.warning("Tone judge error on trace %s: %s", item.trace_id, error)
            return verdict
        verdict.value = tones[0]
        verdict.comment = f"Dominant tones, in order: {', '.join(tones)}."
        verdict.metadata = {
            "tones": list(tones),
            "prompt_version": PROMPT_VERSION,
            "truncated": truncated,
        }
        return verdict

    async def judge_all(self, items: list[TraceItem], max_concurrency: int) -> list[Verdict]:
        """Judge a page of traces concurrently, at most ``max_concurrency`` calls at once."""
        return await gather_bounded(items, self.judge, max_concurrency)


def _is_quota_error(error: openai.RateLimitError) -> bool:
    body = error.body if isinstance(error.body, dict) else {}
    return error.code == "insufficient_quota" or body.get("code") == "insufficient_quota"
