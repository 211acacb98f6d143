"""Offline judge: an OpenAI-compatible chat-completions server that is not a language model.

This server is a deterministic stand-in so that the evaluation pipeline (the tone classifier
and deepeval's GEval "joyfulness" metric) can run without network access or an API account.
It builds each reply from word lists and character counts (`stack.lexicon`), so the same
request always gets the same content. Its tone labels and scores describe surface features of
the text and are not judgments of tone or quality.

Run it with::

    LOCAL_JUDGE_API_KEY=... python -m stack.judge_server --host 127.0.0.1 --port 3031

Options and environment:

- `LOCAL_JUDGE_API_KEY` (required): the Bearer key clients must send. Without it the server
  exits with code 2. The key is never logged.
- `--rpm N` or `LOCAL_JUDGE_RPM`: requests-per-minute cap on chat completions, enforced per
  second (at most N / 60 requests at once, refilled at N / 60 per second); 0 (the default)
  means no cap. Beyond it the reply is a 429 in OpenAI's rate-limit shape with
  `retry-after-ms` and `retry-after` headers.
- `--model NAME` or `LOCAL_JUDGE_MODEL`: the model listed by `GET /v1/models` (default
  `gpt-4.1-mini`). Replies echo whatever model the request names.

Routes: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions` (also
`/chat/completions`), `GET|DELETE /_judge/stats`, `GET|POST|DELETE /_judge/script`, and the
`/_stack/` fault and latency admin routes of `stack.faults`.

Requests are sorted into kinds, each with its own deterministic reply:

- `tone`: the tone classifier (`response_format` json_schema named `tone_classification`, or
  a system prompt mentioning "tone classifier"). The text is the last `<output>...</output>`
  of the last user message; the reply is `{"tones": [...]}` with the labels of the schema's
  enum ranked by `stack.lexicon.rank_tones`.
- `geval_score`: deepeval GEval's score prompt ("Evaluation Steps:" and a `score` key). The
  "Actual Output:" section is scored with `stack.lexicon.joy_score`; the reply is
  `{"reason": ..., "score": N}` with N the score rounded to an integer. The 0-10 score is
  rescaled to the range the prompt names ("an integer between 0 and 5" for a rubric) and
  becomes 0 or 1 for GEval's strict prompt. With `logprobs: true` the score token's
  `top_logprobs` contain every digit of the range, with probabilities from a normal curve
  (sigma 0.7) around the continuous score. deepeval's probability-weighted score then equals
  the continuous lexicon score, except near the ends of the range where the cut-off curve
  pulls it inwards.
- `geval_steps`: GEval's step-generation prompt ("Evaluation Criteria:" and a `steps` key);
  the reply is three fixed steps built from the criteria text.
- `other`: anything else gets a short fixed reply.

Whenever the request carries a json_schema `response_format`, the reply content is an
object shaped by that schema. Properties whose names match the recognised kind's fields get
that kind's values. All others get placeholders: the first enum value, the minimum number, a
short string, the minimum array length.

Scripted replies (for tests only) replace the heuristic reply of chosen requests, so tests can
send the judges malformed or hostile replies through the real SDKs::

    POST /_judge/script {"replies": [{"kind": "tone", "content": "Sure! Joyful.",
                                      "finish_reason": "length", "logprobs": false,
                                      "refusal": null}]}

- Replies wait in one first-in, first-out queue. A chat completion takes the oldest queued
  reply whose `kind` equals the request's kind (one of `KINDS`) or is `any`. A request that
  matches none gets its normal heuristic reply.
- `content` (string or null, default "") is served verbatim as the message content, with no
  schema fitting. `finish_reason` defaults to "stop". `refusal` (default null) fills
  `message.refusal`. `logprobs` (default true) allows token logprobs when the request asks
  for them; false serves `logprobs: null` even then. When the content is JSON with a numeric
  `score` written as a whole token, that token's alternatives are the digits 0-10 on the
  same normal curve as a heuristic reply, centred on the scripted score, so a score of 11 gets
  a curve whose weighted mean is close to 10.
- `POST` returns `{"queued": N}` (replies waiting), `GET` returns `{"replies": [...]}`, and
  `DELETE` clears the queue and returns `{"cleared": N}`. A body that is not a list of such
  objects gets a 400 and queues nothing.
- Scripted replies count in `/_judge/stats` like the others (by the request's kind, with
  their token estimates) and also in `scripted`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from stack.faults import install_faults
from stack.lexicon import TONES, JoyResult, joy_score, rank_tones

logger = logging.getLogger(__name__)

API_KEY_ENV = "LOCAL_JUDGE_API_KEY"
RPM_ENV = "LOCAL_JUDGE_RPM"
MODEL_ENV = "LOCAL_JUDGE_MODEL"
DEFAULT_MODEL = "gpt-4.1-mini"
DEFAULT_PORT = 3031
KINDS: tuple[str, ...] = ("tone", "geval_score", "geval_steps", "other")
RPM_BURST_S = 1.0
"""Seconds of the requests-per-minute cap that may arrive at once."""
SCORE_SIGMA = 0.7
MAX_TOP_LOGPROBS = 20
FILLER_TOKENS: tuple[str, ...] = (" ", "\n", '"', ",", ".", "}", "-", ":", "a", "the")
GEVAL_PARAM_LABELS: tuple[str, ...] = (
    "Input",
    "Actual Output",
    "Expected Output",
    "Context",
    "Retrieval Context",
    "Metadata",
    "Tags",
    "Expected Tools",
    "Tools Called",
)
SINGULAR: dict[str, str] = {
    "exclamation marks": "exclamation mark",
    "playful words": "playful word",
    "questions": "question",
    "analogies": "analogy",
    "numbers or units": "number or unit",
    "urgent words": "urgent word",
}
_TOKEN_RE = re.compile(r"\w+|\s+|[^\w\s]")
_OUTPUT_RE = re.compile(r"<output>(.*?)</output>", re.DOTALL)
_SCORE_RANGE_RE = re.compile(r"an integer between (\d+) and (\d+)")


# --------------------------------------------------------------------------- state


@dataclass
class JudgeStats:
    """Counters of served chat completions.

    Attributes:
        requests: Replies served, by request kind.
        prompt_tokens: Sum of estimated prompt tokens.
        completion_tokens: Sum of estimated completion tokens.
        rate_limited: Requests rejected by the requests-per-minute cap.
        scripted: Replies served from the `/_judge/script` queue.
    """

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rate_limited: int = 0
    scripted: int = 0

    def reset(self) -> None:
        """Set every counter back to zero."""
        self.requests = dict.fromkeys(KINDS, 0)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.rate_limited = 0
        self.scripted = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the counters in the shape of `GET /_judge/stats`.

        Returns:
            The counters as a JSON-ready dict.
        """
        return {
            "requests": dict(self.requests),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "rate_limited": self.rate_limited,
            "scripted": self.scripted,
        }


class RateLimiter:
    """Requests-per-minute cap, enforced per second as OpenAI quantises its limits.

    A bucket holds up to one second's share of the cap (``rpm / 60`` requests, at least one)
    and refills continuously at that rate, so a cap binds within a run of a few seconds, not
    only after a minute of traffic.
    """

    def __init__(self, rpm: int, burst_s: float = RPM_BURST_S) -> None:
        """Create a limiter.

        Args:
            rpm: Requests allowed per minute; 0 or less disables the cap.
            burst_s: Seconds of the cap that the bucket holds.
        """
        self.rpm = rpm
        self.rate = max(rpm, 0) / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self._tokens = self.capacity
        self._updated: float | None = None

    def acquire(self, now: float | None = None) -> float | None:
        """Take one request from the bucket if the cap allows it.

        Args:
            now: Monotonic time of the request; the current time when None.

        Returns:
            None when the request is allowed, else seconds until the bucket contains one again.
        """
        if self.rpm <= 0:
            return None
        now = time.monotonic() if now is None else now
        if self._updated is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        # The tolerance keeps float rounding from refusing a request at the exact refill time.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return None
        return max(0.001, (1.0 - self._tokens) / self.rate)

    @property
    def used(self) -> int:
        """Requests taken from the bucket that it has not refilled yet."""
        return int(self.capacity - self._tokens)


SCRIPT_KINDS: tuple[str, ...] = (*KINDS, "any")


@dataclass(frozen=True)
class ScriptedReply:
    """One reply queued through `POST /_judge/script`.

    Attributes:
        kind: The request kind it replies to, or "any".
        content: The message content, served verbatim; None serves `content: null`.
        finish_reason: The choice's `finish_reason`.
        logprobs: Whether token logprobs may be served when the request enables them.
        refusal: The message's `refusal` text, if any.
    """

    kind: str
    content: str | None = ""
    finish_reason: str = "stop"
    logprobs: bool = True
    refusal: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> ScriptedReply:
        """Parse one entry of a script body.

        Args:
            value: One element of the body's `replies` list.

        Returns:
            The parsed reply.

        Raises:
            ValueError: The entry has an unknown key, kind or value type.
        """
        if not isinstance(value, dict):
            raise ValueError("each reply must be an object")
        unknown = sorted(set(value) - {"kind", "content", "finish_reason", "logprobs", "refusal"})
        if unknown:
            raise ValueError(f"unknown reply keys: {unknown}")
        kind = value.get("kind", "any")
        if kind not in SCRIPT_KINDS:
            raise ValueError(f"kind must be one of {list(SCRIPT_KINDS)}")
        content = value.get("content", "")
        refusal = value.get("refusal")
        finish_reason = value.get("finish_reason", "stop")
        logprobs = value.get("logprobs", True)
        if content is not None and not isinstance(content, str):
            raise ValueError("content must be a string or null")
        if refusal is not None and not isinstance(refusal, str):
            raise ValueError("refusal must be a string or null")
        if not isinstance(finish_reason, str) or not finish_reason:
            raise ValueError("finish_reason must be a non-empty string")
        if not isinstance(logprobs, bool):
            raise ValueError("logprobs must be true or false")
        return cls(kind, content, finish_reason, logprobs, refusal)

    def as_dict(self) -> dict[str, Any]:
        """Return the reply in the shape of a script body entry.

        Returns:
            The reply as a JSON-ready dict.
        """
        return {
            "kind": self.kind,
            "content": self.content,
            "finish_reason": self.finish_reason,
            "logprobs": self.logprobs,
            "refusal": self.refusal,
        }


class ReplyScript:
    """First-in, first-out queue of scripted replies, taken by matching requests."""

    def __init__(self) -> None:
        """Create an empty queue."""
        self._replies: list[ScriptedReply] = []

    def add(self, replies: Sequence[ScriptedReply]) -> int:
        """Queue replies after those already waiting.

        Args:
            replies: The replies, in the order they should be served.

        Returns:
            How many replies are waiting now.
        """
        self._replies.extend(replies)
        return len(self._replies)

    def take(self, kind: str) -> ScriptedReply | None:
        """Remove and return the oldest reply for a request kind.

        Args:
            kind: The request's kind, one of `KINDS`.

        Returns:
            The oldest reply whose kind is `kind` or "any", or None when none waits.
        """
        for index, reply in enumerate(self._replies):
            if reply.kind in (kind, "any"):
                return self._replies.pop(index)
        return None

    def clear(self) -> int:
        """Drop every waiting reply.

        Returns:
            How many replies were dropped.
        """
        dropped = len(self._replies)
        self._replies.clear()
        return dropped

    def pending(self) -> list[dict[str, Any]]:
        """Return the waiting replies, oldest first, as script body entries."""
        return [reply.as_dict() for reply in self._replies]


# --------------------------------------------------------------------------- helpers


def _message_text(content: Any) -> str:
    """Flatten a chat message content (a string or a list of parts) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return str(content)


def estimate_tokens(text: str) -> int:
    """Estimate a token count as about one token per four characters.

    Args:
        text: Any text.

    Returns:
        At least 1.
    """
    return max(1, math.ceil(len(text) / 4))


def _json_schema(body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """Return the name and schema of a json_schema `response_format`, if any."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None, None
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        return None, None
    schema = spec.get("schema")
    return spec.get("name"), schema if isinstance(schema, dict) else None


def _messages_by_role(messages: Sequence[Any], role: str) -> list[str]:
    return [
        _message_text(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") == role
    ]


def classify_request(body: dict[str, Any]) -> str:
    """Sort a chat-completions request into one of `KINDS`.

    Args:
        body: The parsed request body.

    Returns:
        The request kind.
    """
    messages = body.get("messages") or []
    name, _ = _json_schema(body)
    system = "\n".join(
        _messages_by_role(messages, "system") + _messages_by_role(messages, "developer")
    )
    users = _messages_by_role(messages, "user")
    last_user = users[-1] if users else ""
    if name == "tone_classification":
        return "tone"
    if body.get("response_format") is None and "tone classifier" in system.lower():
        return "tone"
    has_score_key = any(k in last_user for k in ('"score"', "`score`", '`"score"`'))
    if "Evaluation Steps:" in last_user and has_score_key:
        return "geval_score"
    if name == "ReasonScore":
        return "geval_score"
    if ("Evaluation Criteria:" in last_user and '"steps"' in last_user) or name == "Steps":
        return "geval_steps"
    return "other"


def extract_tone_text(body: dict[str, Any]) -> str:
    """Return the text to classify: the last `<output>` block of the last user message.

    Args:
        body: The parsed request body.

    Returns:
        The enclosed text, or the whole last user message when it has no such block.
    """
    users = _messages_by_role(body.get("messages") or [], "user")
    last_user = users[-1] if users else ""
    blocks = _OUTPUT_RE.findall(last_user)
    return blocks[-1].strip("\n") if blocks else last_user


def extract_actual_output(prompt: str) -> str:
    """Return the "Actual Output:" section of a GEval score prompt.

    Args:
        prompt: The user message of a GEval score request.

    Returns:
        The section's text, or the test-case block (or whole prompt) when it is missing.
    """
    anchor = max(prompt.find("Evaluation Steps:"), 0)
    marker = "Actual Output:\n"
    start = prompt.find(marker, anchor)
    if start < 0:
        case_start = prompt.find("Test Case:\n", anchor)
        return prompt[case_start + len("Test Case:\n") :] if case_start >= 0 else prompt
    rest = prompt[start + len(marker) :]
    stops = [
        "\n\nParameters:\n",
        "\n**\nIMPORTANT",
        "\n\nAdditional Context:\n",
        *(f" \n\n{label}:\n" for label in GEVAL_PARAM_LABELS),
    ]
    positions = [p for p in (rest.find(stop) for stop in stops) if p >= 0]
    end = min(positions) if positions else len(rest)
    return rest[:end].rstrip(" \n")


def _extract_after(prompt: str, marker: str, stop: str) -> str:
    start = prompt.find(marker)
    if start < 0:
        return ""
    rest = prompt[start + len(marker) :]
    end = rest.find(stop)
    return (rest if end < 0 else rest[:end]).strip()


def _allowed_tones(schema: dict[str, Any] | None, prompt: str) -> tuple[list[str], int]:
    """Return the labels to choose from and how many to return."""
    if schema:
        tones = (schema.get("properties") or {}).get("tones") or {}
        items = tones.get("items") or {}
        enum = items.get("enum")
        count = int(tones.get("minItems") or tones.get("maxItems") or 3)
        if isinstance(enum, list) and enum:
            return [str(e) for e in enum], min(count, len(enum))
        return list(TONES), count
    line = _extract_after(prompt, "using only these labels:\n", "\n")
    labels = [label.strip() for label in line.split(",") if label.strip()]
    return (labels or list(TONES)), 3


# --------------------------------------------------------------------------- generators


@dataclass
class Reply:
    """Content of one reply before it is wrapped.

    Attributes:
        content: The assistant message text.
        fields: Values by property name, for fitting a json_schema.
        score_token: The token whose `top_logprobs` carry the score curve, if any.
        score_value: The continuous score the curve is centred on.
        score_range: Lowest and highest digit the curve spans: (0, 10) by default, (0, 1) in
            strict mode, or the range a GEval rubric names.
    """

    content: str
    fields: dict[str, Any] = field(default_factory=dict)
    score_token: str | None = None
    score_value: float = 0.0
    score_range: tuple[int, int] = (0, 10)


def tone_reply(body: dict[str, Any]) -> Reply:
    """Build the tone classifier's reply.

    Args:
        body: The parsed request body.

    Returns:
        The reply with `{"tones": [...]}`.
    """
    _, schema = _json_schema(body)
    system = "\n".join(_messages_by_role(body.get("messages") or [], "system"))
    allowed, count = _allowed_tones(schema, system)
    tones = rank_tones(extract_tone_text(body), allowed, count)
    fields = {"tones": tones}
    return Reply(content=json.dumps(fields), fields=fields)


def _joy_reason(result: JoyResult) -> str:
    if not result.signals:
        return (
            "Lexicon stand-in found no exclamation marks, emoji, playful words, questions "
            f"or analogies; lexicon score {result.value:.2f} of 10."
        )
    counted = ", ".join(
        f"{n} {name if n != 1 else SINGULAR.get(name, name)}" for name, n in result.signals.items()
    )
    return f"Lexicon stand-in counted {counted}; lexicon score {result.value:.2f} of 10."


def geval_score_reply(body: dict[str, Any]) -> Reply:
    """Build the reply to a GEval score prompt.

    Args:
        body: The parsed request body.

    Returns:
        The reply with `{"reason": ..., "score": N}`.
    """
    users = _messages_by_role(body.get("messages") or [], "user")
    prompt = users[-1] if users else ""
    result = joy_score(extract_actual_output(prompt))
    reason = _joy_reason(result)
    if "STRICTLY EITHER 1" in prompt:
        score = 1 if result.value >= 5.0 else 0
        value, low, high = float(score), 0, 1
    else:
        low, high = _score_range(prompt)
        value = low + result.value / 10.0 * (high - low)
        score = max(low, min(high, int(value + 0.5)))
    fields = {"reason": reason, "score": score}
    return Reply(
        content=json.dumps(fields),
        fields=fields,
        score_token=str(score),
        score_value=value,
        score_range=(low, high),
    )


def _score_range(prompt: str) -> tuple[int, int]:
    """Read the score range of a GEval score prompt ("an integer between 0 and 10")."""
    match = _SCORE_RANGE_RE.search(prompt)
    if match is None:
        return 0, 10
    low, high = int(match.group(1)), int(match.group(2))
    if not 0 <= low < high <= 10:
        return 0, 10
    return low, high


def geval_steps_reply(body: dict[str, Any]) -> Reply:
    """Build the reply to a GEval step-generation prompt.

    Args:
        body: The parsed request body.

    Returns:
        The reply with `{"steps": [...]}`.
    """
    users = _messages_by_role(body.get("messages") or [], "user")
    prompt = users[-1] if users else ""
    criteria = _extract_after(prompt, "Evaluation Criteria:\n", "\n\n") or "the criteria"
    params = _extract_after(prompt, "how you should judge the ", ", generate") or "output"
    criteria = criteria.rstrip(".")
    steps = [
        f"Read the {params} and note every passage that bears on this criterion: {criteria}.",
        f"Judge how strongly and how consistently the {params} meets the criterion, "
        "and note anything that works against it.",
        f"Give a high score when the {params} meets the criterion throughout and a low "
        "score when it does not.",
    ]
    fields = {"steps": steps}
    return Reply(content=json.dumps(fields), fields=fields)


def other_reply(body: dict[str, Any]) -> Reply:
    """Build the reply to an unrecognised request.

    Args:
        body: The parsed request body.

    Returns:
        A fixed reply naming the server as a stand-in.
    """
    users = _messages_by_role(body.get("messages") or [], "user")
    text = users[-1] if users else ""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    content = (
        "This is the offline judge, a deterministic stand-in that only answers the tone and "
        f"GEval prompts of this project (request digest {digest})."
    )
    return Reply(content=content, fields={"answer": content})


def scripted_reply(scripted: ScriptedReply) -> Reply:
    """Wrap a scripted content, finding the score token that logprobs should weight.

    Args:
        scripted: The queued reply.

    Returns:
        The reply. Its score token is set only when the content is JSON (possibly inside
        other text) with a numeric, non-boolean, finite `score` written as an integer.
    """
    content = scripted.content or ""
    score: Any = None
    start, end = content.find("{"), content.rfind("}")
    if 0 <= start < end:
        try:
            parsed = json.loads(content[start : end + 1])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            score = parsed.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return Reply(content=content)
    token = json.dumps(score)
    if not token.lstrip("-").isdigit():
        return Reply(content=content)
    return Reply(content=content, score_token=token, score_value=float(score))


# --------------------------------------------------------------------------- schema filler


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, dict) else {}


def fill_schema(
    schema: dict[str, Any], root: dict[str, Any] | None = None, name: str = "value", depth: int = 0
) -> Any:
    """Build a deterministic value that satisfies a JSON schema.

    Handles `$ref`, `anyOf`/`oneOf`/`allOf`, `const`, `enum`, objects (every property),
    arrays (the minimum item count, at least one), strings, numbers, booleans and null.

    Args:
        schema: The schema to satisfy.
        root: The root schema, for `$ref`; `schema` itself when None.
        name: Property name, used in placeholder strings.
        depth: Nesting depth, to stop runaway recursion.

    Returns:
        A JSON-ready value.
    """
    root = schema if root is None else root
    if depth > 12:
        return None
    if "$ref" in schema:
        return fill_schema(_resolve_ref(schema["$ref"], root), root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if o.get("type") != "null"), options[0])
            return fill_schema(chosen, root, name, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return fill_schema(merged, root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    elif kind is None and "items" in schema:
        kind = "array"
    elif kind is None:
        kind = "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {key: fill_schema(sub, root, key, depth + 1) for key, sub in properties.items()}
    if kind == "array":
        items = schema.get("items") or {}
        count = max(int(schema.get("minItems") or 0), 1)
        if schema.get("maxItems") is not None:
            count = min(count, int(schema["maxItems"]))
        enum = items.get("enum") if isinstance(items, dict) else None
        if isinstance(enum, list) and enum:
            return [enum[i % len(enum)] for i in range(count)]
        return [fill_schema(items, root, f"{name} {i + 1}", depth + 1) for i in range(count)]
    if kind in ("integer", "number"):
        return _fill_number(schema, kind)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _fill_string(schema, name)


def _fill_number(schema: dict[str, Any], kind: str) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value: float = 0
    if low is not None:
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    elif high is not None and high < 0:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return math.ceil(value) if kind == "integer" else float(value)


def _fill_string(schema: dict[str, Any], name: str) -> str:
    formats = {
        "date-time": "1970-01-01T00:00:00Z",
        "date": "1970-01-01",
        "time": "00:00:00Z",
        "uri": "http://127.0.0.1/",
        "email": "judge@localhost",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }
    text = formats.get(str(schema.get("format")), f"{name} placeholder")
    min_length = int(schema.get("minLength") or 0)
    if len(text) < min_length:
        text = text + "x" * (min_length - len(text))
    if schema.get("maxLength") is not None:
        text = text[: int(schema["maxLength"])]
    return text


def fit_to_schema(reply: Reply, schema: dict[str, Any]) -> str:
    """Return reply content shaped by a json_schema, keeping the reply's own fields.

    Args:
        reply: The kind-specific reply.
        schema: The request's json_schema.

    Returns:
        JSON text of an object that follows the schema.
    """
    filled = fill_schema(schema)
    if isinstance(filled, dict):
        properties = schema.get("properties") or {}
        for key in properties:
            if key in reply.fields:
                filled[key] = reply.fields[key]
        if list(properties) == list(reply.fields):
            return reply.content
    return json.dumps(filled)


# --------------------------------------------------------------------------- logprobs


def tokenize(text: str) -> list[str]:
    """Split reply text into tokens: words and digit runs, whitespace runs, single symbols.

    Args:
        text: The reply text.

    Returns:
        Tokens that join back to `text`.
    """
    return _TOKEN_RE.findall(text)


def score_curve(
    value: float, low: int = 0, high: int = 10, sigma: float = SCORE_SIGMA
) -> list[tuple[str, float]]:
    """Return digit tokens with log probabilities from a normal curve around `value`.

    Args:
        value: Centre of the curve.
        low: Lowest digit of the curve.
        high: Highest digit of the curve.
        sigma: Standard deviation of the curve.

    Returns:
        `(token, logprob)` pairs, most probable first, ties by closeness to the rounded
        value. The probabilities sum to 0.999, leaving a little for filler tokens.
    """
    digits = range(low, high + 1)
    weights = [math.exp(-((k - value) ** 2) / (2 * sigma**2)) for k in digits]
    total = sum(weights)
    pairs = [
        (str(k), math.log(0.999 * w / total) if w > 0 else -100.0)
        for k, w in zip(digits, weights, strict=True)
    ]
    centre = max(low, min(high, int(value + 0.5)))
    pairs.sort(key=lambda pair: (-pair[1], abs(int(pair[0]) - centre)))
    return pairs


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def build_logprobs(reply: Reply, content: str, top_logprobs: int) -> dict[str, Any]:
    """Build `choices[0].logprobs` for a reply.

    Every token has log probability 0 and itself as its only alternative, except the last
    occurrence of the score token, whose alternatives are the score curve.

    Args:
        reply: The reply, for the score token and value.
        content: The final content text.
        top_logprobs: Alternatives requested per token (0-20).

    Returns:
        A dict with `content` (token entries) and `refusal` (None).
    """
    tokens = tokenize(content)
    score_index = -1
    if reply.score_token is not None:
        for index in range(len(tokens) - 1, -1, -1):
            if tokens[index] == reply.score_token:
                score_index = index
                break
    n = max(0, min(int(top_logprobs or 0), MAX_TOP_LOGPROBS))
    entries: list[dict[str, Any]] = []
    for index, token in enumerate(tokens):
        if index == score_index:
            curve = score_curve(reply.score_value, *reply.score_range)
            chosen = dict(curve).get(token, 0.0)
            alternatives = [_entry(tok, lp) for tok, lp in curve]
            fillers = [t for t in FILLER_TOKENS if t not in dict(curve)]
            for offset, filler in enumerate(fillers):
                alternatives.append(_entry(filler, -12.0 - offset))
            entry = _entry(token, chosen)
            entry["top_logprobs"] = alternatives[:n]
        else:
            entry = _entry(token, 0.0)
            entry["top_logprobs"] = [_entry(token, 0.0)] if n else []
        entries.append(entry)
    return {"content": entries, "refusal": None}


# --------------------------------------------------------------------------- app


def _error(
    status: int, message: str, err_type: str, code: str | None, **headers: str
) -> JSONResponse:
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


GENERATORS = {
    "tone": tone_reply,
    "geval_score": geval_score_reply,
    "geval_steps": geval_steps_reply,
    "other": other_reply,
}


def create_app(api_key: str, rpm: int = 0, model: str = DEFAULT_MODEL) -> FastAPI:
    """Create the judge app.

    Args:
        api_key: The Bearer key clients must send.
        rpm: Requests-per-minute cap on chat completions; 0 for none.
        model: Model id listed by `GET /v1/models`.

    Returns:
        The FastAPI app. `app.state.judge_stats` contains the counters, `app.state.script`
        the scripted-reply queue and `app.state.faults` the fault state.

    Raises:
        ValueError: If `api_key` is empty.
    """
    if not api_key:
        raise ValueError(f"{API_KEY_ENV} must be set to a non-empty key")
    app = FastAPI(title="Offline judge (deterministic stand-in)", docs_url=None, redoc_url=None)
    stats = JudgeStats()
    limiter = RateLimiter(rpm)
    script = ReplyScript()
    app.state.judge_stats = stats
    app.state.rate_limiter = limiter
    app.state.script = script
    install_faults(app)
    serial = {"n": 0}
    expected = f"Bearer {api_key}".encode()

    def authorised(request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization")
        if not header:
            logger.warning("rejected %s: missing Authorization header", request.url.path)
            return _error(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                "invalid_request_error",
                None,
            )
        if not hmac.compare_digest(header.encode(), expected):
            logger.warning("rejected %s: invalid API key", request.url.path)
            return _error(
                401,
                f"Incorrect API key provided. The offline judge expects the key in {API_KEY_ENV}.",
                "invalid_request_error",
                "invalid_api_key",
            )
        return None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> Any:
        denied = authorised(request)
        if denied is not None:
            return denied
        return {"object": "list", "data": [_model_entry(model)]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request) -> Any:
        denied = authorised(request)
        if denied is not None:
            return denied
        return _model_entry(model_id)

    @app.get("/_judge/stats")
    async def get_stats() -> dict[str, Any]:
        return stats.as_dict()

    @app.delete("/_judge/stats")
    async def reset_stats() -> dict[str, Any]:
        stats.reset()
        return stats.as_dict()

    @app.get("/_judge/script")
    async def get_script() -> dict[str, Any]:
        return {"replies": script.pending()}

    @app.post("/_judge/script")
    async def add_script(request: Request) -> Any:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            logger.warning("rejected %s: invalid JSON body (%s)", request.url.path, exc)
            return _error(400, "The script body is not valid JSON.", "invalid_request_error", None)
        entries = body.get("replies") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            logger.warning("rejected %s: missing 'replies' list", request.url.path)
            return _error(
                400,
                "Missing 'replies': send {'replies': [...]}.",
                "invalid_request_error",
                "invalid_script",
            )
        try:
            replies = [ScriptedReply.from_json(entry) for entry in entries]
        except ValueError as exc:
            logger.warning("rejected %s: invalid scripted reply (%s)", request.url.path, exc)
            return _error(
                400, f"Invalid scripted reply: {exc}.", "invalid_request_error", "invalid_script"
            )
        queued = script.add(replies)
        logger.info("queued %d scripted replies, %d waiting", len(replies), queued)
        return {"queued": queued}

    @app.delete("/_judge/script")
    async def clear_script() -> dict[str, int]:
        return {"cleared": script.clear()}

    async def chat_completions(request: Request) -> Any:
        denied = authorised(request)
        if denied is not None:
            return denied

        wait_s = limiter.acquire()
        if wait_s is not None:
            stats.rate_limited += 1
            logger.warning(
                "rejected %s: requests-per-minute cap %d reached, retry in %.3f s",
                request.url.path,
                limiter.rpm,
                wait_s,
            )
            return _rate_limited(limiter, wait_s)

        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            logger.warning("rejected %s: invalid JSON body (%s)", request.url.path, exc)
            return _error(400, "The request body is not valid JSON.", "invalid_request_error", None)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            logger.warning("rejected %s: missing 'messages' list", request.url.path)
            return _error(
                400,
                "Missing 'messages': send a list of chat messages.",
                "invalid_request_error",
                "missing_messages",
            )
        if body.get("stream"):
            logger.warning("rejected %s: streaming requested", request.url.path)
            return _error(
                400,
                "The offline judge does not stream: send 'stream': false.",
                "invalid_request_error",
                "unsupported_parameter",
            )

        serial["n"] += 1
        scripted = script.take(classify_request(body))
        reply_body = complete(body, serial["n"], scripted=scripted)
        kind = reply_body.pop("_kind")
        usage = reply_body["usage"]
        stats.requests[kind] += 1
        if scripted is not None:
            stats.scripted += 1
        stats.prompt_tokens += usage["prompt_tokens"]
        stats.completion_tokens += usage["completion_tokens"]

        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request shape: kind=%s model=%s keys=%s schema=%s content_types=%s",
                kind,
                body.get("model"),
                sorted(body),
                _json_schema(body)[0],
                [type(m.get("content")).__name__ for m in body["messages"] if isinstance(m, dict)],
            )
        logger.info(
            "served %s%s request %s: prompt_tokens=%d completion_tokens=%d",
            "scripted " if scripted is not None else "",
            kind,
            reply_body["id"],
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        return JSONResponse(reply_body, headers={"x-request-id": reply_body["id"]})

    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/chat/completions", chat_completions, methods=["POST"])
    return app


def _model_entry(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "local-judge"}


def _rate_limited(limiter: RateLimiter, wait_s: float) -> JSONResponse:
    wait_ms = max(1, math.ceil(wait_s * 1000))
    return _error(
        429,
        f"Rate limit reached for requests per minute (RPM) on the offline judge: limit "
        f"{limiter.rpm}, used {limiter.used}, requested 1. Please try again in {wait_s:.3f}s.",
        "requests",
        "rate_limit_exceeded",
        **{
            "retry-after-ms": str(wait_ms),
            "retry-after": str(max(1, math.ceil(wait_s))),
            "x-ratelimit-limit-requests": str(limiter.rpm),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{wait_s:.3f}s",
        },
    )


def _int_field(body: dict[str, Any], key: str, default: int) -> int:
    """Read an integer request field, using `default` when it is missing or not a number."""
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def complete(
    body: dict[str, Any], serial: int = 0, scripted: ScriptedReply | None = None
) -> dict[str, Any]:
    """Build the reply to one chat-completions request body.

    Args:
        body: The parsed request body.
        serial: Sequence number of the request, mixed into the reply id.
        scripted: A queued reply to serve instead of the heuristic one.

    Returns:
        The chat.completion JSON, with an extra `_kind` key naming the request kind.
    """
    kind = classify_request(body)
    _, schema = _json_schema(body)
    finish_reason, refusal, logprobs_allowed = "stop", None, True
    content: str | None
    if scripted is not None:
        reply = scripted_reply(scripted)
        content = scripted.content
        finish_reason, refusal = scripted.finish_reason, scripted.refusal
        logprobs_allowed = scripted.logprobs
    else:
        reply = GENERATORS[kind](body)
        content = fit_to_schema(reply, schema) if schema is not None else reply.content
    messages = body.get("messages") or []
    prompt_text = "\n".join(
        _message_text(m.get("content")) for m in messages if isinstance(m, dict)
    )
    prompt_tokens = estimate_tokens(prompt_text)
    completion_tokens = estimate_tokens(content or "")
    digest = hashlib.sha256(f"{serial}\n{prompt_text}".encode()).hexdigest()[:24]
    want_logprobs = bool(body.get("logprobs")) and logprobs_allowed
    choice_count = max(1, min(_int_field(body, "n", 1), 8))
    top_logprobs = _int_field(body, "top_logprobs", 0)
    choices = []
    for index in range(choice_count):
        choice: dict[str, Any] = {
            "index": index,
            "message": {
                "role": "assistant",
                "content": content,
                "refusal": refusal,
                "annotations": [],
            },
            "finish_reason": finish_reason,
            "logprobs": None,
        }
        if want_logprobs:
            choice["logprobs"] = build_logprobs(reply, content or "", top_logprobs)
        choices.append(choice)
    return {
        "_kind": kind,
        "id": f"chatcmpl-local{digest}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or DEFAULT_MODEL),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens * choice_count,
            "total_tokens": prompt_tokens + completion_tokens * choice_count,
        },
        "system_fingerprint": "fp_local_judge",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server from the command line.

    Args:
        argv: Arguments after the program name; `sys.argv[1:]` when None.

    Returns:
        The exit code (2 when the key is missing or an option is bad).
    """
    parser = argparse.ArgumentParser(
        prog="python -m stack.judge_server",
        description="Offline judge: deterministic OpenAI-compatible stand-in (not an LLM).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 3031)")
    parser.add_argument(
        "--rpm",
        type=int,
        default=None,
        help=f"requests-per-minute cap, 0 for none (default ${RPM_ENV} or 0)",
    )
    parser.add_argument(
        "--model",
        default=os.environ.get(MODEL_ENV, DEFAULT_MODEL),
        help=f"model id listed by /v1/models (default ${MODEL_ENV} or {DEFAULT_MODEL})",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    api_key = os.environ.get(API_KEY_ENV, "")
    if not api_key.strip():
        logger.error("missing %s: set it to the key clients must send, then restart", API_KEY_ENV)
        return 2
    rpm_text = str(args.rpm) if args.rpm is not None else os.environ.get(RPM_ENV, "0") or "0"
    try:
        rpm = int(rpm_text)
    except ValueError:
        logger.error(
            "invalid requests-per-minute cap %r: expected an integer (0 for none)", rpm_text
        )
        return 2
    app = create_app(api_key, rpm=rpm, model=args.model)
    logger.info(
        "offline judge on http://%s:%d (model %s, rpm cap %s)",
        args.host,
        args.port,
        args.model,
        rpm or "off",
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
