"""Bad judge replies through the real openai SDK and deepeval, served by the offline judge.

Every case queues replies on the offline judge's `/_judge/script` route, so the judges read
them over HTTP exactly as they would read a real model's reply.
"""

from __future__ import annotations

import os

# deepeval reads these when it is imported: no telemetry, no .env, no local files.
os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "1")
os.environ.setdefault("DEEPEVAL_DISABLE_DOTENV", "1")
os.environ.setdefault("DEEPEVAL_FILE_SYSTEM", "READ_ONLY")

import asyncio
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from deepeval.metrics import GEval
from deepeval.test_case import LLMTestCase, SingleTurnParams
from openai import AsyncOpenAI

from include.langfuse_eval.joyfulness import (
    EVALUATION_STEPS,
    STRICT_INSTRUCTION,
    JoyfulnessJudge,
    StrictGEvalTemplate,
    build_judge_model,
)
from include.langfuse_eval.planning import TraceItem
from include.langfuse_eval.settings import JudgeSettings
from include.langfuse_eval.tone import TONES, ToneJudge, build_retry_messages
from include.langfuse_eval.verdicts import Verdict
from stack.process import ServerProcess, free_port, start_server

JUDGE_MODEL = "gpt-4.1-mini"
JOYFUL_TEXT = (
    "Wow, imagine a comet like a giant cosmic snowball zooming past the Sun! "
    "\U0001f320 Isn't that fun?"
)
OTHER_TEXTS = (
    "The half-life of carbon-14 is 5,730 years. Measured decay rates bound the age.",
    "Leave the building now and call the emergency number from outside.",
    "Hello friend! Let's enjoy a tiny treasure hunt together, it's a party!",
)
REFUSAL = "I'm sorry, I can't help with that."
BAD_ESCAPE = '{"tones": ["joyful", "friendly", "calm\\q"]}'


@dataclass(frozen=True)
class Judge:
    """The running offline judge and the key it accepts."""

    server: ServerProcess
    api_key: str

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in /v1."""
        return f"{self.server.base_url}/v1"


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judge]:
    """Start the offline judge on a free port of 127.0.0.1 with a random key."""
    api_key = secrets.token_hex(16)
    log_path: Path = tmp_path_factory.mktemp("judge-replies") / "judge.log"
    server = start_server(
        "stack.judge_server",
        free_port(),
        {"LOCAL_JUDGE_API_KEY": api_key},
        log_path,
        health_path="/health",
    )
    try:
        yield Judge(server, api_key)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(judge: Judge) -> Iterator[httpx.Client]:
    """Return a plain HTTP client for the judge's admin routes."""
    with httpx.Client(base_url=judge.server.base_url, timeout=10.0) as client:
        yield client


@pytest.fixture(autouse=True)
def clean_judge(admin: httpx.Client) -> Iterator[None]:
    """Empty the reply script and reset the counters around each test."""
    admin.delete("/_judge/script").raise_for_status()
    admin.delete("/_judge/stats").raise_for_status()
    yield
    admin.delete("/_judge/script").raise_for_status()


def item(text: str = JOYFUL_TEXT, trace_id: str = "trace-1") -> TraceItem:
    return TraceItem(
        trace_id=trace_id,
        observation_id=f"obs-{trace_id}",
        start_time="2026-12-01T05:00:00Z",
        environment="default",
        input_text="Tell me about comets.",
        output_text=text,
    )


def script(admin: httpx.Client, kind: str, *replies: dict[str, Any]) -> None:
    body = {"replies": [{"kind": kind, **reply} for reply in replies]}
    admin.post("/_judge/script", json=body).raise_for_status()


def stats(admin: httpx.Client) -> dict[str, Any]:
    reply = admin.get("/_judge/stats")
    reply.raise_for_status()
    return reply.json()


def pending(admin: httpx.Client) -> list[dict[str, Any]]:
    return admin.get("/_judge/script").json()["replies"]


def recorder(sent: list[dict[str, Any]]) -> Any:
    """Return an httpx request hook that appends each chat completion body to ``sent``."""

    async def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            sent.append(json.loads(request.content))

    return record


def tone(
    judge: Judge, text: str = JOYFUL_TEXT, sent: list[dict[str, Any]] | None = None
) -> Verdict:
    async def run() -> Verdict:
        hooks = {"request": [recorder(sent if sent is not None else [])]}
        client = AsyncOpenAI(
            base_url=judge.base_url,
            api_key=judge.api_key,
            max_retries=0,
            http_client=httpx.AsyncClient(event_hooks=hooks),
        )
        async with client:
            return await ToneJudge(client, JUDGE_MODEL).judge(item(text))

    return asyncio.run(run())


def settings(judge: Judge) -> JudgeSettings:
    return JudgeSettings(
        api_key=judge.api_key, model=JUDGE_MODEL, base_url=judge.base_url, max_retries=0
    )


def joy_all(
    judge: Judge,
    items: list[TraceItem],
    max_concurrency: int = 4,
    sent: list[dict[str, Any]] | None = None,
) -> list[Verdict]:
    async def run() -> list[Verdict]:
        model = build_judge_model(settings(judge))
        if sent is not None:
            model.async_http_client.event_hooks["request"].append(recorder(sent))
        try:
            return await JoyfulnessJudge(model).judge_all(items, max_concurrency)
        finally:
            await model.async_http_client.aclose()

    return asyncio.run(run())


def joy(judge: Judge, text: str = JOYFUL_TEXT) -> Verdict:
    return joy_all(judge, [item(text)])[0]


def user_text(body: dict[str, Any]) -> str:
    """Return the text of a request's last message, whose content deepeval sends as parts."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


def score_content(score: str) -> str:
    return '{"reason": "Lively wording and a playful image.", "score": ' + score + "}"


# --------------------------------------------------------------------------- tone

TONE_NORMALISED = [
    pytest.param(
        '```json\n{"tones": ["joyful", "friendly", "optimistic"]}\n```',
        ["joyful", "friendly", "optimistic"],
        id="code-fence",
    ),
    pytest.param(
        '{"tones": ["Joyful.", " FRIENDLY ", "optimistic!"]}',
        ["joyful", "friendly", "optimistic"],
        id="case-and-punctuation",
    ),
    pytest.param(
        'Here you go: {"tones": ["urgent", "confident", "neutral"]} Hope it helps.',
        ["urgent", "confident", "neutral"],
        id="one-object-in-prose",
    ),
]

TONE_UNUSABLE = [
    pytest.param({"content": BAD_ESCAPE}, id="bad-escape"),
    pytest.param(
        {"content": '{"tones": ["joyful", "frie', "finish_reason": "length"}, id="cut-off"
    ),
    pytest.param(
        {"content": '{"tones": ["joyful", "friendly", "urgent"]}', "finish_reason": "length"},
        id="length-with-full-json",
    ),
    pytest.param({"content": '{"tones": ["joyful", "sarcastic", "friendly"]}'}, id="unknown"),
    pytest.param({"content": REFUSAL}, id="refusal-text"),
    pytest.param({"content": None, "refusal": REFUSAL}, id="refusal-field"),
    pytest.param({"content": ""}, id="empty-content"),
    pytest.param({"content": '{"tones": ["joyful", "Joyful", "friendly"]}'}, id="duplicates"),
    pytest.param({"content": '{"tones": ["joyful", "friendly"]}'}, id="two-labels"),
    pytest.param(
        {"content": '{"tones": ["joyful", "friendly", "urgent"]} or {"tones": ["neutral"]}'},
        id="two-objects",
    ),
]


@pytest.mark.parametrize(("content", "expected"), TONE_NORMALISED)
def test_tone_reply_normalised_one_call(
    judge: Judge, admin: httpx.Client, content: str, expected: list[str]
) -> None:
    script(admin, "tone", {"content": content})
    verdict = tone(judge)
    assert verdict.ok
    assert verdict.metadata["tones"] == expected
    assert verdict.value == expected[0]
    assert verdict.metadata["normalised"] is True
    assert verdict.calls == 1


def test_tone_clean_reply_not_normalised(judge: Judge) -> None:
    verdict = tone(judge)
    assert verdict.metadata["normalised"] is False
    assert verdict.metadata["attempts"] == 1


@pytest.mark.parametrize("reply", TONE_UNUSABLE)
def test_tone_unusable_reply_retried_once(
    judge: Judge, admin: httpx.Client, reply: dict[str, Any]
) -> None:
    script(admin, "tone", reply)
    verdict = tone(judge)
    assert verdict.ok
    assert verdict.value == "joyful"
    assert verdict.metadata["attempts"] == 2
    assert verdict.calls == 2
    assert stats(admin)["requests"]["tone"] == 2
    assert pending(admin) == []


@pytest.mark.parametrize("reply", TONE_UNUSABLE)
def test_tone_unusable_twice_judge_error(
    judge: Judge, admin: httpx.Client, reply: dict[str, Any]
) -> None:
    script(admin, "tone", reply, reply)
    verdict = tone(judge)
    assert verdict.error is not None
    assert verdict.value is None
    assert not verdict.ok
    assert verdict.calls == 2


def test_tone_retry_sends_stricter_instruction(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "tone", {"content": REFUSAL})
    sent: list[dict[str, Any]] = []
    tone(judge, sent=sent)
    first, retry = sent
    assert retry["messages"][:-1] == first["messages"]
    assert retry["messages"][-1]["role"] == "system"
    assert "The tone reply is not JSON." in retry["messages"][-1]["content"]
    assert ", ".join(TONES) in retry["messages"][-1]["content"]
    assert retry["response_format"] == first["response_format"]


def test_tone_tokens_cover_both_calls(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "tone", {"content": REFUSAL})
    verdict = tone(judge)
    served = stats(admin)
    assert verdict.prompt_tokens == served["prompt_tokens"]
    assert verdict.completion_tokens == served["completion_tokens"]


def test_tone_error_quotes_no_reply(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "tone", {"content": REFUSAL}, {"content": REFUSAL})
    assert "sorry" not in (tone(judge).error or "")


def test_retry_message_is_last_system() -> None:
    messages = build_retry_messages("Hi!", "The tone reply is empty.")
    assert [message["role"] for message in messages] == ["system", "user", "system"]


def test_retry_message_lists_labels() -> None:
    instruction = build_retry_messages("Hi!", "The tone reply is empty.")[-1]["content"]
    assert ", ".join(TONES) in instruction


def test_retry_message_states_shape() -> None:
    instruction = build_retry_messages("Hi!", "The tone reply is empty.")[-1]["content"]
    assert '{"tones": ["first", "second", "third"]}' in instruction


def test_retry_message_keeps_output_block() -> None:
    messages = build_retry_messages("Hi!", "The tone reply is empty.")
    assert messages[1]["content"] == "<output>\nHi!\n</output>"


# --------------------------------------------------------------------------- joyfulness

JOY_UNUSABLE = [
    pytest.param({"content": score_content("NaN")}, id="score-nan"),
    pytest.param({"content": score_content("Infinity")}, id="score-infinity"),
    pytest.param({"content": score_content("null")}, id="score-null"),
    pytest.param({"content": score_content("11")}, id="score-eleven"),
    pytest.param({"content": score_content("11"), "logprobs": False}, id="eleven-no-logprobs"),
    pytest.param({"content": score_content("-1")}, id="score-minus-one"),
    pytest.param({"content": score_content('"7"')}, id="score-string"),
    pytest.param({"content": "I would rate it a seven out of ten."}, id="not-json"),
    pytest.param({"content": '{"reason": "Lively."}'}, id="missing-score"),
    pytest.param({"content": '{"score": 7}'}, id="missing-reason"),
    pytest.param({"content": '{"reason": "Lively and fu', "finish_reason": "length"}, id="cut-off"),
    pytest.param({"content": None, "refusal": REFUSAL}, id="refusal-field"),
]


@pytest.fixture(scope="module")
def clean_joy(judge: Judge) -> float:
    """Return the joyfulness value of the joyful text from an unscripted reply."""
    verdict = joy(judge)
    assert verdict.ok
    return float(verdict.value)  # type: ignore[arg-type]


@pytest.mark.parametrize("reply", JOY_UNUSABLE)
def test_joy_unusable_reply_retried_once(
    judge: Judge, admin: httpx.Client, clean_joy: float, reply: dict[str, Any]
) -> None:
    script(admin, "geval_score", reply)
    verdict = joy(judge)
    assert verdict.ok
    assert verdict.value == clean_joy
    assert verdict.metadata["attempts"] == 2
    assert verdict.calls == 2
    assert stats(admin)["requests"]["geval_score"] == 2
    assert pending(admin) == []


@pytest.mark.parametrize("reply", JOY_UNUSABLE)
def test_joy_unusable_twice_judge_error(
    judge: Judge, admin: httpx.Client, reply: dict[str, Any]
) -> None:
    script(admin, "geval_score", reply, reply)
    verdict = joy(judge)
    assert verdict.error is not None
    assert verdict.value is None
    assert not verdict.ok
    assert verdict.calls == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(score_content("7"), 0.7, id="integer"),
        pytest.param(score_content("7.5"), 0.75, id="decimal"),
        pytest.param(score_content("0"), 0.0, id="zero"),
        pytest.param(score_content("10"), 1.0, id="ten"),
        pytest.param("```json\n" + score_content("4") + "\n```", 0.4, id="code-fence"),
    ],
)
def test_joy_raw_score_without_logprobs(
    judge: Judge, admin: httpx.Client, content: str, expected: float
) -> None:
    script(admin, "geval_score", {"content": content, "logprobs": False})
    verdict = joy(judge)
    assert verdict.value == pytest.approx(expected)
    assert verdict.metadata["score_source"] == "raw"
    assert verdict.calls == 1


def test_joy_logprobs_weight_the_score(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "geval_score", {"content": score_content("6")})
    verdict = joy(judge)
    assert verdict.metadata["score_source"] == "logprobs"
    assert verdict.value == pytest.approx(0.6, abs=0.05)
    assert verdict.calls == 1


def test_joy_decimal_score_uses_raw(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "geval_score", {"content": score_content("7.5")})
    verdict = joy(judge)
    assert verdict.value == pytest.approx(0.75)
    assert verdict.metadata["score_source"] == "raw"


def test_deepeval_alone_accepts_eleven(judge: Judge, admin: httpx.Client) -> None:
    # GEval alone weights the logprob curve of an 11 back into range, so the judge checks
    # the raw reply itself.
    script(admin, "geval_score", {"content": score_content("11")})
    model = build_judge_model(settings(judge))
    metric = GEval(
        name="joyfulness",
        evaluation_steps=EVALUATION_STEPS,
        evaluation_params=[SingleTurnParams.ACTUAL_OUTPUT],
        model=model,
    )

    async def run() -> float:
        try:
            case = LLMTestCase(input="", actual_output=JOYFUL_TEXT)
            return await metric.a_measure(case, _show_indicator=False)
        finally:
            await model.async_http_client.aclose()

    assert 0.9 < asyncio.run(run()) <= 1.0


def test_joy_retry_sends_strict_prompt(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "geval_score", {"content": score_content("NaN")})
    sent: list[dict[str, Any]] = []
    joy_all(judge, [item()], sent=sent)
    first, retry = (user_text(body) for body in sent)
    assert not first.startswith(STRICT_INSTRUCTION)
    assert retry == STRICT_INSTRUCTION + first


def test_joy_tokens_cover_both_calls(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "geval_score", {"content": score_content("NaN")})
    verdict = joy(judge)
    served = stats(admin)
    assert verdict.prompt_tokens == served["prompt_tokens"]
    assert verdict.completion_tokens == served["completion_tokens"]


def test_joy_concurrent_matches_sequential(judge: Judge) -> None:
    texts = [JOYFUL_TEXT, *OTHER_TEXTS]
    sequential = [joy(judge, text).value for text in texts]
    items = [item(text, f"trace-{index}") for index, text in enumerate(texts)]
    concurrent = [verdict.value for verdict in joy_all(judge, items, max_concurrency=4)]
    assert concurrent == sequential


def test_joy_concurrent_retry_counts_calls(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "geval_score", {"content": score_content("null")})
    items = [item(text, f"trace-{index}") for index, text in enumerate(OTHER_TEXTS)]
    verdicts = joy_all(judge, items, max_concurrency=3)
    assert all(verdict.ok for verdict in verdicts)
    assert sum(verdict.calls for verdict in verdicts) == len(items) + 1


def test_strict_template_prefixes_instruction() -> None:
    prompt = StrictGEvalTemplate.generate_evaluation_results(
        evaluation_steps="1. Read it.\n",
        test_case_content="Actual Output:\nHi!",
        parameters="Actual Output",
        rubric=None,
        score_range=(0, 10),
        _additional_context=None,
        multimodal=False,
        strict=True,
    )
    assert prompt.startswith(STRICT_INSTRUCTION)
    assert "Evaluation Steps:" in prompt


# --------------------------------------------------------------------------- verdict form


def test_judge_error_survives_xcom_form(judge: Judge, admin: httpx.Client) -> None:
    script(admin, "geval_score", {"content": "no"}, {"content": "no"})
    verdict = Verdict.from_dict(joy(judge).to_dict())
    assert not verdict.ok
    assert verdict.value is None
    assert verdict.calls == 2
