"""Tests of the text extraction from raw trace input and output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from include.langfuse_eval.extraction import (
    MAX_DECODES,
    MAX_NESTING,
    SkipReason,
    clean_text,
    decode_raw,
    extract_input,
    extract_output,
)


def nested(depth: int, text: str = "deep text") -> str:
    """Return the JSON of ``text`` wrapped in ``depth`` dicts under the ``content`` key."""
    value: Any = text
    for _ in range(depth):
        value = {"content": value}
    return json.dumps(value)


CHAT_WITH_PARTS = json.dumps(
    [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Tell me about owls."},
        {"role": "assistant", "content": "An early draft."},
        {"role": "user", "content": "Shorter, please."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Owls fly silently."},
                {"type": "text", "text": "They hunt at night."},
            ],
        },
    ]
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, (None, SkipReason.MISSING_OUTPUT), id="none"),
        pytest.param("", (None, SkipReason.EMPTY_OUTPUT), id="empty-string"),
        pytest.param(" \n\t ", (None, SkipReason.EMPTY_OUTPUT), id="whitespace"),
        pytest.param("  Plain answer. ", ("Plain answer.", None), id="plain-string"),
        pytest.param('"hi"', ("hi", None), id="json-string"),
        pytest.param('"   "', (None, SkipReason.EMPTY_OUTPUT), id="json-blank-string"),
        pytest.param('{"content": "from content"}', ("from content", None), id="key-content"),
        pytest.param('{"text": "from text"}', ("from text", None), id="key-text"),
        pytest.param('{"output": "from output"}', ("from output", None), id="key-output"),
        pytest.param('{"answer": "from answer"}', ("from answer", None), id="key-answer"),
        pytest.param(
            '{"text": "second", "content": "first"}', ("first", None), id="key-order-content-first"
        ),
        pytest.param(
            '{"content": "", "text": "fallback"}', ("fallback", None), id="key-empty-falls-through"
        ),
        pytest.param(
            '{"output": {"message": {"content": "inner"}}}', ("inner", None), id="nested-dict"
        ),
        pytest.param(
            CHAT_WITH_PARTS, ("Owls fly silently.\nThey hunt at night.", None), id="chat-parts"
        ),
        pytest.param(
            '[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},'
            ' {"role": "assistant", "content": "a2"}]',
            ("a2", None),
            id="chat-last-assistant",
        ),
        pytest.param('["one", "two"]', ("one\ntwo", None), id="list-of-strings"),
        pytest.param("42", (None, SkipReason.UNSUPPORTED_OUTPUT), id="number-string"),
        pytest.param("42 owls", ("42 owls", None), id="number-then-words"),
        pytest.param(42, (None, SkipReason.UNSUPPORTED_OUTPUT), id="number-int"),
        pytest.param(True, (None, SkipReason.UNSUPPORTED_OUTPUT), id="bool"),
        pytest.param('{"score": 3}', (None, SkipReason.UNSUPPORTED_OUTPUT), id="dict-no-text-key"),
        pytest.param("{}", (None, SkipReason.UNSUPPORTED_OUTPUT), id="empty-dict"),
        pytest.param("[]", (None, SkipReason.UNSUPPORTED_OUTPUT), id="empty-list"),
        pytest.param("{not json at all", ("{not json at all", None), id="invalid-json-raw"),
        pytest.param("🎉 Party time 🎈", ("🎉 Party time 🎈", None), id="emoji-raw"),
        pytest.param(json.dumps("🎉 Party"), ("🎉 Party", None), id="emoji-escaped-json"),
        pytest.param(nested(MAX_NESTING), ("deep text", None), id="nesting-at-limit"),
        pytest.param(
            nested(MAX_NESTING + 1),
            (None, SkipReason.UNSUPPORTED_OUTPUT),
            id="nesting-beyond-limit",
        ),
    ],
)
def test_extract_output_cases(raw: Any, expected: tuple[str | None, SkipReason | None]) -> None:
    assert extract_output(raw) == expected


def encoded_times(value: Any, times: int) -> str:
    """Return ``value`` JSON-encoded ``times`` times."""
    for _ in range(times):
        value = json.dumps(value)
    return value


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(encoded_times({"a": 1}, 1), {"a": 1}, id="once"),
        pytest.param(encoded_times({"a": 1}, MAX_DECODES), {"a": 1}, id="at-limit"),
        pytest.param(
            encoded_times({"a": 1}, MAX_DECODES + 1),
            encoded_times({"a": 1}, 1),
            id="beyond-limit",
        ),
        pytest.param(encoded_times("plain", 2), "plain", id="string-stops"),
        pytest.param(encoded_times("[1] first point", 2), "[1] first point", id="bracket-text"),
    ],
)
def test_decode_raw_repeats_bounded(raw: str, expected: Any) -> None:
    assert decode_raw(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("plain", "plain", id="plain"),
        pytest.param("a\ud800b", "a\ufffdb", id="lone-high"),
        pytest.param("a\udc00b", "a\ufffdb", id="lone-low"),
        pytest.param("\ud83c\udf89", "🎉", id="split-pair-joined"),
        pytest.param("\udf89\ud83c", "\ufffd\ufffd", id="reversed-pair"),
        pytest.param("tab\tnew\nline\r", "tab\tnew\nline\r", id="whitespace-kept"),
        pytest.param("\x00nul\x1b[0m\x7f", "nul[0m", id="controls-dropped"),
    ],
)
def test_clean_text_cases(text: str, expected: str) -> None:
    assert clean_text(text) == expected


def test_json_null_is_missing() -> None:
    assert extract_output("null") == (None, SkipReason.MISSING_OUTPUT)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            json.dumps({"args": ["What is a comet?"], "kwargs": {}}),
            "What is a comet?",
            id="observe-first-arg",
        ),
        pytest.param(
            json.dumps({"args": [7, " Text arg "], "kwargs": {"q": "kw"}}),
            "Text arg",
            id="observe-skips-non-text",
        ),
        pytest.param(
            json.dumps({"args": [], "kwargs": {"question": "From kwargs"}}),
            "From kwargs",
            id="observe-kwargs",
        ),
        pytest.param(json.dumps({"args": [], "kwargs": {}}), None, id="observe-empty"),
        pytest.param(
            json.dumps(
                [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "First question"},
                    {"role": "assistant", "content": "First answer"},
                    {"role": "user", "content": "Second question"},
                    {"role": "assistant", "content": "Second answer"},
                ]
            ),
            "Second question",
            id="chat-last-user",
        ),
        pytest.param("  Plain question ", "Plain question", id="plain-string"),
        pytest.param(None, None, id="none"),
    ],
)
def test_extract_input_cases(raw: Any, expected: str | None) -> None:
    assert extract_input(raw) == expected


def test_observe_chat_arg_user() -> None:
    messages = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Follow-up question"},
    ]
    raw = json.dumps({"args": [messages], "kwargs": {}})
    assert extract_input(raw) == "Follow-up question"


def test_chat_user_text_stripped() -> None:
    raw = json.dumps([{"role": "user", "content": "  Padded question \n"}])
    assert extract_input(raw) == "Padded question"
