"""Take the text that a judge reads out of a trace's raw input and output.

The v2 observations API returns input and output as raw strings. A string output arrives as
itself, anything else as JSON, and an ``@observe()`` function's input as the JSON of
``{"args": [...], "kwargs": {...}}``. The JSON is decoded once when it parses, then the text is
taken from a plain string, a dict with an obvious text field, or a chat message list.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

TEXT_KEYS = ("content", "text", "output", "answer", "response", "completion", "message", "result")
"""Dict keys that hold the text, tried in this order."""

MAX_NESTING = 8
"""Deepest nesting of dicts and lists that extraction descends into."""


class SkipReason(str, Enum):
    """Reason for not sending a trace to the judges."""

    MISSING_OUTPUT = "missing_output"
    EMPTY_OUTPUT = "empty_output"
    UNSUPPORTED_OUTPUT = "unsupported_output"
    NOT_FOUND = "not_found"


def decode_raw(raw: Any) -> Any:
    """Decode a raw input or output string as JSON once when it parses, else keep it."""
    if not isinstance(raw, str):
        return raw
    stripped = raw.strip()
    if stripped == "null":
        return None
    if not stripped or stripped[0] not in '{["':
        return raw
    try:
        return json.loads(stripped)
    except ValueError:
        return raw


def _is_chat_message(value: Any) -> bool:
    return isinstance(value, dict) and "role" in value and ("content" in value or "text" in value)


def _text_from_parts(parts: list[Any], depth: int) -> str | None:
    texts = [text for part in parts if (text := _text_from(part, depth + 1))]
    return "\n".join(texts) if texts else None


def _text_from(value: Any, depth: int = 0) -> str | None:
    """Return the text of a decoded value, or None when it contains no text."""
    if depth > MAX_NESTING:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list):
        messages = [item for item in value if _is_chat_message(item)]
        if messages:
            assistant = [item for item in messages if item.get("role") == "assistant"]
            chosen = assistant[-1] if assistant else messages[-1]
            return _text_from(chosen, depth + 1)
        return _text_from_parts(value, depth)
    if isinstance(value, dict):
        for key in TEXT_KEYS:
            if key in value:
                text = _text_from(value[key], depth + 1)
                if text:
                    return text
        return None
    return None


def extract_output(raw: Any) -> tuple[str | None, SkipReason | None]:
    """Extract the output text of a trace.

    Returns:
        The text and None, or None and the reason to skip the trace.
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
    return text.strip(), None


def extract_input(raw: Any) -> str | None:
    """Extract the input text of a trace, or None when it contains no text.

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
    return text.strip() if text else None
