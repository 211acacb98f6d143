"""Take the text that a judge reads out of a trace's raw input and output.

The v2 observations API returns input and output as raw strings. A string output arrives as
itself, anything else as JSON, and an ``@observe()`` function's input as the JSON of
``{"args": [...], "kwargs": {...}}``. The JSON is decoded when it parses, again while the result
is a string that contains JSON (a double-encoded value), then the text is taken from a plain string,
a dict with an obvious text field, a chat message list, or an OpenAI Responses output list.

An output whose text is only a JSON number or boolean is skipped as ``unsupported_output``: it
has no tone to judge, and the API sends a number output and a digits-only string output alike.

Every text returned is cleaned so it can be encoded as UTF-8: lone surrogates, which
``json.loads`` accepts from escapes such as ``\\ud800``, become U+FFFD, and control characters
other than tab, newline and carriage return are dropped.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any

TEXT_KEYS = (
    "content",
    "text",
    "output",
    "output_text",
    "answer",
    "response",
    "completion",
    "message",
    "result",
    "choices",
    "refusal",
)
"""Dict keys that hold the text, tried in this order.

``output_text`` is the joined text of an OpenAI Responses result, ``choices`` the list of a
Chat Completions result and ``refusal`` the text of a refusal part.
"""

MAX_NESTING = 8
"""Deepest nesting of dicts and lists that extraction descends into."""

MAX_DECODES = 3
"""Maximum JSON decodes applied to one raw value, so a double-encoded value is read too."""

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_JSON_SCALARS = frozenset({"true", "false"})
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class SkipReason(str, Enum):
    """Reason for not sending a trace to the judges."""

    MISSING_OUTPUT = "missing_output"
    EMPTY_OUTPUT = "empty_output"
    UNSUPPORTED_OUTPUT = "unsupported_output"
    NOT_FOUND = "not_found"
    DEFERRED = "deferred"
    """No output yet, but the trace started so close to the window's end that it may still be
    running: a later run with a lookback reads it again."""


class _TooDeep:
    """Marks JSON nested past what the decoder can read, which contains no text."""


_TOO_DEEP = _TooDeep()


def clean_text(text: str) -> str:
    """Make a text safe to encode as UTF-8 and to store.

    A high and low surrogate next to each other are joined into one character, a lone
    surrogate becomes U+FFFD, and control characters other than tab, newline and carriage
    return are dropped.
    """
    if _SURROGATE.search(text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _CONTROL.sub("", text)


def _decode_once(text: str) -> Any:
    stripped = text.strip()
    if stripped == "null":
        return None
    if not stripped or stripped[0] not in '{["':
        return text
    try:
        return json.loads(stripped)
    except ValueError:
        return text
    except RecursionError:
        return _TOO_DEEP


def _holds_json(text: str) -> bool:
    stripped = text.strip()
    return stripped == "null" or stripped.startswith(("{", "[", '"'))


def decode_raw(raw: Any) -> Any:
    """Decode a raw input or output string as JSON when it parses, else keep it.

    A decode that yields a string containing a JSON object, array, string or null is repeated, at
    most :data:`MAX_DECODES` times in all. A JSON text nested too deep for the decoder yields a
    value with no text.
    """
    value = raw
    for _ in range(MAX_DECODES):
        if not isinstance(value, str):
            return value
        decoded = _decode_once(value)
        if decoded is value:
            return value
        value = decoded
        if isinstance(value, str) and not _holds_json(value):
            return value
    return value


def _is_chat_message(value: Any) -> bool:
    return isinstance(value, dict) and "role" in value and ("content" in value or "text" in value)


def _text_from_parts(parts: list[Any], depth: int) -> str | None:
    texts = [text for part in parts if (text := _text_from(part, depth + 1))]
    return "\n".join(texts) if texts else None


def _text_from_messages(messages: list[dict[str, Any]], depth: int) -> str | None:
    """Return the text of the last assistant message that has text, else of the last message.

    An assistant message that only calls tools has no content, so an earlier one is read.
    """
    assistant = [item for item in messages if item.get("role") == "assistant"]
    for message in reversed(assistant or messages):
        text = _text_from(message, depth + 1)
        if text:
            return text
    return None


def _text_from(value: Any, depth: int = 0) -> str | None:
    """Return the text of a decoded value, or None when it contains no text."""
    if depth > MAX_NESTING:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list):
        messages = [item for item in value if _is_chat_message(item)]
        if messages:
            return _text_from_messages(messages, depth)
        return _text_from_parts(value, depth)
    if isinstance(value, dict):
        for key in TEXT_KEYS:
            if key in value:
                text = _text_from(value[key], depth + 1)
                if text:
                    return text
        return None
    return None


def _is_bare_scalar(text: str) -> bool:
    return text in _JSON_SCALARS or _JSON_NUMBER.fullmatch(text) is not None


def extract_output(raw: Any) -> tuple[str | None, SkipReason | None]:
    """Extract the output text of a trace.

    Returns:
        The cleaned text and None, or None and the reason to skip the trace.
    """
    if raw is None:
        return None, SkipReason.MISSING_OUTPUT
    if isinstance(raw, str) and not raw.strip():
        return None, SkipReason.EMPTY_OUTPUT
    decoded = decode_raw(raw)
    if decoded is None:
        return None, SkipReason.MISSING_OUTPUT
    if isinstance(decoded, str) and not decoded.strip():
        return None, SkipReason.EMPTY_OUTPUT
    text = _text_from(decoded)
    if text is None:
        return None, SkipReason.UNSUPPORTED_OUTPUT
    cleaned = clean_text(text).strip()
    if not cleaned:
        return None, SkipReason.EMPTY_OUTPUT
    if _is_bare_scalar(cleaned):
        return None, SkipReason.UNSUPPORTED_OUTPUT
    return cleaned, None


def extract_input(raw: Any) -> str | None:
    """Extract the cleaned input text of a trace, or None when it contains no text.

    An ``@observe()`` input ``{"args": [...], "kwargs": {...}}`` yields the text of its first
    argument that has one, then of its keyword arguments.
    """
    decoded = decode_raw(raw)
    if isinstance(decoded, dict) and set(decoded) <= {"args", "kwargs"} and decoded:
        candidates = list(decoded.get("args") or []) + list((decoded.get("kwargs") or {}).values())
        for candidate in candidates:
            text = _input_text_from(candidate)
            if text:
                return text
        return None
    return _input_text_from(decoded)


def _input_text_from(value: Any) -> str | None:
    """Return the text of a decoded input: the last user message of a chat list, else text."""
    if isinstance(value, list) and any(_is_chat_message(item) for item in value):
        users = [item for item in value if _is_chat_message(item) and item["role"] == "user"]
        if users:
            value = users[-1]
    text = _text_from(value)
    if not text:
        return None
    cleaned = clean_text(text).strip()
    return cleaned or None
