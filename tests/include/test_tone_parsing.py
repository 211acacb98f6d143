"""Tests of the tone judge's prompt, messages and reply parsing."""

from __future__ import annotations

import json
import re

import pytest

from include.langfuse_eval.errors import JudgeReplyError
from include.langfuse_eval.tone import (
    RESPONSE_FORMAT,
    TONE_COUNT,
    TONES,
    build_messages,
    parse_reply,
    system_prompt,
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            '{"tones": ["joyful", "friendly", "optimistic"]}',
            ("joyful", "friendly", "optimistic"),
            id="plain-json",
        ),
        pytest.param(
            '  \n{"tones": ["neutral", "analytical", "confident"]}\n ',
            ("neutral", "analytical", "confident"),
            id="surrounding-whitespace",
        ),
        pytest.param(
            '```json\n{"tones": ["urgent", "confident", "respectful"]}\n```',
            ("urgent", "confident", "respectful"),
            id="fenced-json",
        ),
        pytest.param(
            '```\n{"tones": ["urgent", "confident", "respectful"]}\n```',
            ("urgent", "confident", "respectful"),
            id="fenced-no-language",
        ),
        pytest.param(
            '{"tones": ["JOYFUL", "Friendly", " optimistic "]}',
            ("joyful", "friendly", "optimistic"),
            id="labels-normalized",
        ),
    ],
)
def test_parse_reply_valid(content: str, expected: tuple[str, ...]) -> None:
    assert parse_reply(content) == expected


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(
            '{"tones": ["joyful", "sarcastic", "friendly"]}',
            "outside the allowed set",
            id="label-outside-set",
        ),
        pytest.param('{"tones": ["joyful", "friendly"]}', "3 distinct labels", id="too-few"),
        pytest.param(
            '{"tones": ["joyful", "friendly", "urgent", "neutral"]}',
            "3 distinct labels",
            id="too-many",
        ),
        pytest.param(
            '{"tones": ["joyful", "Joyful", "friendly"]}', "3 distinct labels", id="duplicates"
        ),
        pytest.param('{"tones": []}', "3 distinct labels", id="empty-list"),
        pytest.param("joyful, friendly, optimistic", "not JSON", id="not-json"),
        pytest.param('{"tones": ["joyful",', "not JSON", id="truncated-json"),
        pytest.param("", "empty", id="empty-string"),
        pytest.param("   \n", "empty", id="whitespace"),
        pytest.param(None, "empty", id="none"),
        pytest.param('{"tones": "joyful"}', "no list of labels", id="tones-string"),
        pytest.param('{"tones": {"a": "joyful"}}', "no list of labels", id="tones-dict"),
        pytest.param('{"tones": [1, 2, 3]}', "no list of labels", id="tones-not-strings"),
        pytest.param('{"labels": ["joyful"]}', "no list of labels", id="tones-missing"),
        pytest.param('["joyful", "friendly", "urgent"]', "no list of labels", id="top-level-list"),
    ],
)
def test_parse_reply_rejects(content: str | None, match: str) -> None:
    with pytest.raises(JudgeReplyError, match=match):
        parse_reply(content)


@pytest.mark.parametrize("label", [pytest.param(tone, id=tone) for tone in TONES])
def test_prompt_lists_label(label: str) -> None:
    assert label in system_prompt()


def test_prompt_lists_labels_in_order() -> None:
    assert ", ".join(TONES) in system_prompt()


def test_prompt_has_no_placeholder() -> None:
    assert "$" not in system_prompt()


def prompt_examples() -> list[str]:
    return re.findall(r"^\{\"tones\".*\}$", system_prompt(), flags=re.MULTILINE)


def test_prompt_has_four_examples() -> None:
    assert len(prompt_examples()) == 4


def test_prompt_examples_parse() -> None:
    assert all(len(parse_reply(example)) == TONE_COUNT for example in prompt_examples())


def test_messages_system_then_user() -> None:
    assert [message["role"] for message in build_messages("Hi!")] == ["system", "user"]


def test_messages_system_is_prompt() -> None:
    assert build_messages("Hi!")[0]["content"] == system_prompt()


def test_messages_delimit_output() -> None:
    assert build_messages("Hello 🎉\nthere")[1]["content"] == "<output>\nHello 🎉\nthere\n</output>"


def schema() -> dict:
    return RESPONSE_FORMAT["json_schema"]["schema"]


def test_response_enum_equals_tones() -> None:
    assert schema()["properties"]["tones"]["items"]["enum"] == list(TONES)


def test_response_item_counts() -> None:
    tones = schema()["properties"]["tones"]
    assert tones["minItems"] == TONE_COUNT
    assert tones["maxItems"] == TONE_COUNT


def test_response_format_strict() -> None:
    assert RESPONSE_FORMAT["json_schema"]["strict"] is True


def test_response_format_json_safe() -> None:
    assert json.loads(json.dumps(RESPONSE_FORMAT)) == RESPONSE_FORMAT
