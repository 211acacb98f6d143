"""Tests of the offline judge, through the real openai SDK and deepeval's GEval over HTTP."""

from __future__ import annotations

import os

# deepeval reads these when it is imported: no telemetry, no .env, no local files.
os.environ["DEEPEVAL_TELEMETRY_OPT_OUT"] = "1"
os.environ["DEEPEVAL_DISABLE_DOTENV"] = "1"
os.environ["DEEPEVAL_FILE_SYSTEM"] = "READ_ONLY"

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from deepeval.metrics import GEval
from deepeval.metrics.g_eval import Rubric
from deepeval.models import OpenAIModel
from deepeval.test_case import LLMTestCase, SingleTurnParams

from stack.judge_server import RateLimiter
from stack.lexicon import TONES, joy_score
from stack.process import REPO_ROOT, ServerProcess, free_port, start_server

PROMPT_PATH = REPO_ROOT / "include" / "langfuse_eval" / "prompts" / "tone_v1.txt"
JUDGE_MODEL = "gpt-4.1-mini"
JOY_STEPS = [
    "Read the actual output and note exclamations, playful words, questions and analogies.",
    "Judge whether the output would make a curious reader smile and want to keep reading.",
    "Give a high score to lively, fun writing and a low score to dry or alarming text.",
]
JOYFUL_TEXT = (
    "Wow, imagine a comet like a giant cosmic snowball zooming past the Sun! "
    "\U0001f320 Isn't that fun?"
)
ANALYTICAL_TEXT = (
    "The half-life of carbon-14 is 5,730 years. Measured decay rates therefore bound "
    "the age of a sample to about 50,000 years."
)
URGENT_TEXT = (
    "Leave the building now and call the emergency number from outside. Do not go back in."
)
TONE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tones": {
            "type": "array",
            "items": {"type": "string", "enum": list(TONES)},
            "minItems": 3,
            "maxItems": 3,
        }
    },
    "required": ["tones"],
    "additionalProperties": False,
}
TONE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "tone_classification", "strict": True, "schema": TONE_SCHEMA},
}


@dataclass(frozen=True)
class Judge:
    """A running judge server and the key it accepts."""

    server: ServerProcess
    api_key: str

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in /v1."""
        return f"{self.server.base_url}/v1"


def _start(tmp: Path, name: str, args: list[str]) -> Judge:
    api_key = secrets.token_hex(16)
    server = start_server(
        "stack.judge_server",
        free_port(),
        {"LOCAL_JUDGE_API_KEY": api_key},
        tmp / f"{name}.log",
        health_path="/health",
        args=args,
    )
    return Judge(server, api_key)


@pytest.fixture(scope="session")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judge]:
    """Start `stack.judge_server` on a free port with a random key for the session."""
    running = _start(tmp_path_factory.mktemp("judge"), "judge", [])
    try:
        yield running
    finally:
        running.server.stop()


@pytest.fixture(scope="session")
def admin(judge: Judge) -> Iterator[httpx.Client]:
    """Return a plain HTTP client for the judge's admin routes."""
    with httpx.Client(base_url=judge.server.base_url, timeout=10.0) as client:
        yield client


@pytest.fixture(autouse=True)
def reset_admin_state(admin: httpx.Client) -> Iterator[None]:
    """Reset the judge's counters before each test, its faults and reply script after it.

    This replaces the package conftest fixture of the same name, which serves the local
    Langfuse server that these tests do not use.
    """
    admin.delete("/_judge/stats").raise_for_status()
    yield
    admin.delete("/_judge/script").raise_for_status()
    admin.delete("/_stack/faults").raise_for_status()
    admin.post("/_stack/latency", json={"seconds": 0}).raise_for_status()


@pytest.fixture(scope="session")
def client(judge: Judge) -> openai.OpenAI:
    """Return the real openai SDK client, without retries."""
    return openai.OpenAI(base_url=judge.base_url, api_key=judge.api_key, max_retries=0)


@pytest.fixture(scope="session")
def judge_model(judge: Judge) -> OpenAIModel:
    """Return deepeval's OpenAI judge model aimed at the offline judge."""
    return OpenAIModel(model=JUDGE_MODEL, base_url=judge.base_url, api_key=judge.api_key)


def _system_prompt() -> str:
    template = Template(PROMPT_PATH.read_text(encoding="utf-8"))
    return template.substitute(allowed_tones=", ".join(TONES))


def _classify(client: openai.OpenAI, text: str, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=JUDGE_MODEL,
        messages=[
            {"role": "system", "content": _system_prompt()},
            {"role": "user", "content": f"<output>\n{text}\n</output>"},
        ],
        temperature=0,
        **({"response_format": TONE_FORMAT} | extra),
    )


def _tones(client: openai.OpenAI, text: str) -> list[str]:
    reply = _classify(client, text)
    return json.loads(reply.choices[0].message.content)["tones"]


def _geval(model: OpenAIModel, *, pinned: bool = True) -> GEval:
    return GEval(
        name="joyfulness",
        criteria="whether the output is engaging and fun",
        evaluation_steps=JOY_STEPS if pinned else None,
        evaluation_params=[SingleTurnParams.ACTUAL_OUTPUT],
        model=model,
    )


def _measure(metric: GEval, text: str) -> float:
    case = LLMTestCase(input="", actual_output=text)
    return asyncio.run(metric.a_measure(case, _show_indicator=False))


def _stats(admin: httpx.Client) -> dict[str, Any]:
    reply = admin.get("/_judge/stats")
    reply.raise_for_status()
    return reply.json()


def test_health_and_models(judge: Judge, client: openai.OpenAI) -> None:
    assert httpx.get(f"{judge.server.base_url}/health").status_code == 200
    assert [m.id for m in client.models.list()] == [JUDGE_MODEL]


def test_tone_reply_schema_and_determinism(client: openai.OpenAI, admin: httpx.Client) -> None:
    first = _classify(client, JOYFUL_TEXT)
    second = _classify(client, JOYFUL_TEXT)
    content = first.choices[0].message.content
    jsonschema.validate(json.loads(content), TONE_SCHEMA)
    assert len(set(json.loads(content)["tones"])) == 3
    assert content == second.choices[0].message.content
    assert first.model == JUDGE_MODEL
    assert first.choices[0].finish_reason == "stop"
    assert first.usage.prompt_tokens > 0
    assert first.usage.completion_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert _stats(admin)["requests"]["tone"] == 2


def test_tone_ranking_by_lexicon(client: openai.OpenAI) -> None:
    assert _tones(client, JOYFUL_TEXT)[0] == "joyful"
    assert _tones(client, ANALYTICAL_TEXT)[0] == "analytical"
    assert _tones(client, URGENT_TEXT)[0] == "urgent"
    assert _tones(client, "")[0] == "neutral"


def test_tone_reads_last_output_block(client: openai.OpenAI) -> None:
    text = f"<output>{ANALYTICAL_TEXT}</output> and then <output>\n{JOYFUL_TEXT}\n</output>"
    assert _tones(client, text)[0] == "joyful"


def test_tone_schema_enum_limits_labels(client: openai.OpenAI) -> None:
    narrow = json.loads(json.dumps(TONE_FORMAT))
    narrow["json_schema"]["schema"]["properties"]["tones"]["items"]["enum"] = [
        "urgent",
        "analytical",
        "neutral",
    ]
    reply = _classify(client, JOYFUL_TEXT, response_format=narrow)
    assert sorted(json.loads(reply.choices[0].message.content)["tones"]) == [
        "analytical",
        "neutral",
        "urgent",
    ]


def test_tone_without_response_format(client: openai.OpenAI, admin: httpx.Client) -> None:
    reply = client.chat.completions.create(
        model=JUDGE_MODEL,
        messages=[
            {"role": "system", "content": _system_prompt()},
            {"role": "user", "content": f"<output>\n{URGENT_TEXT}\n</output>"},
        ],
        temperature=0,
    )
    assert json.loads(reply.choices[0].message.content)["tones"][0] == "urgent"
    assert _stats(admin)["requests"]["tone"] == 1


def test_geval_pinned_steps_one_request(judge_model: OpenAIModel, admin: httpx.Client) -> None:
    metric = _geval(judge_model)
    score = _measure(metric, JOYFUL_TEXT)
    assert 0.0 <= score <= 1.0
    assert metric.reason
    assert "exclamation" in metric.reason
    stats = _stats(admin)
    assert stats["requests"] == {"tone": 0, "geval_score": 1, "geval_steps": 0, "other": 0}
    assert metric.input_tokens == stats["prompt_tokens"]
    assert metric.output_tokens == stats["completion_tokens"]
    assert metric.evaluation_cost is not None
    assert metric.evaluation_cost > 0


def test_geval_score_weighted_by_logprobs(judge_model: OpenAIModel) -> None:
    score = _measure(_geval(judge_model), JOYFUL_TEXT)
    lexicon = joy_score(JOYFUL_TEXT)
    # The reply's "score" is the rounded integer, so an unweighted result would equal it.
    assert round(score * 10, 6) != lexicon.integer
    assert abs(score * 10 - lexicon.value) < 0.3


def test_geval_strict_mode_scores_zero_or_one(judge_model: OpenAIModel) -> None:
    def strict() -> GEval:
        return GEval(
            name="joyfulness",
            evaluation_steps=JOY_STEPS,
            evaluation_params=[SingleTurnParams.ACTUAL_OUTPUT],
            model=judge_model,
            strict_mode=True,
        )

    assert _measure(strict(), JOYFUL_TEXT) == 1
    assert _measure(strict(), ANALYTICAL_TEXT) == 0


def test_geval_rubric_range_is_used(judge_model: OpenAIModel) -> None:
    metric = GEval(
        name="joyfulness",
        evaluation_steps=JOY_STEPS,
        rubric=[
            Rubric(score_range=(0, 2), expected_outcome="Dry or alarming."),
            Rubric(score_range=(3, 5), expected_outcome="Lively and fun."),
        ],
        evaluation_params=[SingleTurnParams.ACTUAL_OUTPUT],
        model=judge_model,
    )
    score = _measure(metric, JOYFUL_TEXT)
    assert abs(score * 10 - joy_score(JOYFUL_TEXT).value) < 0.5


def test_geval_ranks_joyful_above_dry(judge_model: OpenAIModel) -> None:
    joyful = _measure(_geval(judge_model), JOYFUL_TEXT)
    analytical = _measure(_geval(judge_model), ANALYTICAL_TEXT)
    urgent = _measure(_geval(judge_model), URGENT_TEXT)
    assert joyful > 0.5
    assert analytical < 0.5
    assert joyful > urgent
    assert _measure(_geval(judge_model), JOYFUL_TEXT) == joyful


def test_geval_criteria_only_generates_steps_once(
    judge_model: OpenAIModel, admin: httpx.Client
) -> None:
    metric = _geval(judge_model, pinned=False)
    score = _measure(metric, JOYFUL_TEXT)
    assert 0.0 <= score <= 1.0
    assert metric.evaluation_steps is not None
    assert len(metric.evaluation_steps) == 3
    assert "engaging and fun" in metric.evaluation_steps[0]
    assert _stats(admin)["requests"] == {"tone": 0, "geval_score": 1, "geval_steps": 1, "other": 0}
    _measure(metric, ANALYTICAL_TEXT)
    assert _stats(admin)["requests"]["geval_steps"] == 1
    assert _stats(admin)["requests"]["geval_score"] == 2


def test_logprobs_only_when_requested(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model=JUDGE_MODEL, messages=[{"role": "user", "content": "hello"}]
    )
    assert plain.choices[0].logprobs is None
    assert plain.usage.prompt_tokens >= 1
    reply = client.chat.completions.create(
        model=JUDGE_MODEL,
        messages=[{"role": "user", "content": "hello"}],
        logprobs=True,
        top_logprobs=3,
    )
    tokens = reply.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == reply.choices[0].message.content
    assert all(t.bytes == list(t.token.encode()) for t in tokens)
    assert all(0 < len(t.top_logprobs) <= 3 for t in tokens)


def test_generic_json_schema_reply(client: openai.OpenAI, admin: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["a", "b"]},
            "count": {"type": "integer", "minimum": 2},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 2},
            "note": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 30}]},
        },
        "required": ["label", "count", "ratio", "flag", "items", "note"],
        "additionalProperties": False,
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "tags": {"type": "array"}},
                "required": ["name", "tags"],
                "additionalProperties": False,
            }
        },
    }
    reply = client.chat.completions.create(
        model=JUDGE_MODEL,
        messages=[{"role": "user", "content": "Describe something."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "anything", "strict": True, "schema": schema},
        },
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    assert _stats(admin)["requests"]["other"] == 1


def test_bad_or_missing_key_401(judge: Judge, admin: httpx.Client) -> None:
    wrong = openai.OpenAI(base_url=judge.base_url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(
            model=JUDGE_MODEL, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    bare = httpx.post(f"{judge.base_url}/chat/completions", json={"messages": []})
    assert bare.status_code == 401
    assert set(bare.json()["error"]) == {"message", "type", "param", "code"}
    assert judge.api_key not in bare.text
    assert sum(_stats(admin)["requests"].values()) == 0


def test_rate_limiter_holds_one_second_of_the_cap() -> None:
    limiter = RateLimiter(6000)
    assert all(limiter.acquire(now=10.0) is None for _ in range(100))
    wait_s = limiter.acquire(now=10.0)
    assert wait_s == pytest.approx(0.01)
    assert limiter.acquire(now=10.0 + wait_s) is None
    assert limiter.acquire(now=10.0 + wait_s) is not None
    # A long pause refills the bucket to one second's share, not more.
    assert sum(limiter.acquire(now=100.0) is None for _ in range(150)) == 100
    assert RateLimiter(0).acquire(now=0.0) is None


def test_rpm_cap_429_retry_headers(tmp_path: Path) -> None:
    # 120 per minute is 2 per second: two calls pass at once, the third waits about 0.5 s.
    capped = _start(tmp_path, "capped", ["--rpm", "120"])
    try:
        sdk = openai.OpenAI(base_url=capped.base_url, api_key=capped.api_key, max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        for _ in range(2):
            sdk.chat.completions.create(model=JUDGE_MODEL, messages=messages)
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(model=JUDGE_MODEL, messages=messages)
        headers = caught.value.response.headers
        wait_ms = int(headers["retry-after-ms"])
        assert 0 < wait_ms <= 500
        assert int(headers["retry-after"]) == 1
        assert caught.value.code == "rate_limit_exceeded"
        time.sleep(wait_ms / 1000 + 0.05)
        sdk.chat.completions.create(model=JUDGE_MODEL, messages=messages)
        stats = httpx.get(f"{capped.server.base_url}/_judge/stats").json()
        assert stats["requests"]["other"] == 3
        assert stats["rate_limited"] == 1
    finally:
        capped.server.stop()


def test_stats_count_and_reset(client: openai.OpenAI, admin: httpx.Client) -> None:
    _classify(client, JOYFUL_TEXT)
    client.chat.completions.create(model=JUDGE_MODEL, messages=[{"role": "user", "content": "x"}])
    stats = _stats(admin)
    assert stats["requests"] == {"tone": 1, "geval_score": 0, "geval_steps": 0, "other": 1}
    assert stats["prompt_tokens"] > 0
    assert stats["completion_tokens"] > 0
    cleared = admin.delete("/_judge/stats").json()
    assert sum(cleared["requests"].values()) == 0
    assert cleared["prompt_tokens"] == 0


def test_fault_injection_installed(client: openai.OpenAI, admin: httpx.Client) -> None:
    rule = {"path_prefix": "/v1/chat", "status": 503, "times": 1}
    admin.post("/_stack/faults", json={"rules": [rule]}).raise_for_status()
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model=JUDGE_MODEL, messages=[{"role": "user", "content": "x"}]
        )
    client.chat.completions.create(model=JUDGE_MODEL, messages=[{"role": "user", "content": "x"}])
    assert _stats(admin)["requests"]["other"] == 1
    assert admin.get("/_stack/stats").json()["faults_served"] >= 1


def _script(admin: httpx.Client, *replies: dict[str, Any]) -> dict[str, Any]:
    reply = admin.post("/_judge/script", json={"replies": list(replies)})
    reply.raise_for_status()
    return reply.json()


def _say(client: openai.OpenAI, text: str = "hello", **extra: Any) -> Any:
    return client.chat.completions.create(
        model=JUDGE_MODEL, messages=[{"role": "user", "content": text}], **extra
    )


def test_script_serves_content_verbatim(client: openai.OpenAI, admin: httpx.Client) -> None:
    _script(admin, {"kind": "tone", "content": "```json\nnot {json\n```"})
    reply = _classify(client, JOYFUL_TEXT)
    assert reply.choices[0].message.content == "```json\nnot {json\n```"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens > 0
    stats = _stats(admin)
    assert stats["requests"]["tone"] == 1
    assert stats["scripted"] == 1


def test_script_fifo_by_kind(client: openai.OpenAI, admin: httpx.Client) -> None:
    normal = _classify(client, JOYFUL_TEXT).choices[0].message.content
    queued = _script(
        admin,
        {"kind": "other", "content": "A"},
        {"kind": "tone", "content": "B"},
        {"kind": "any", "content": "C"},
    )
    assert queued == {"queued": 3}
    assert _classify(client, JOYFUL_TEXT).choices[0].message.content == "B"
    assert _classify(client, JOYFUL_TEXT).choices[0].message.content == "C"
    assert _say(client).choices[0].message.content == "A"
    assert _classify(client, JOYFUL_TEXT).choices[0].message.content == normal
    assert _stats(admin)["scripted"] == 3


def test_script_refusal_and_finish_reason(client: openai.OpenAI, admin: httpx.Client) -> None:
    refusal = "I'm sorry, I can't help with that."
    _script(admin, {"kind": "any", "content": None, "refusal": refusal, "finish_reason": "length"})
    choice = _say(client).choices[0]
    assert choice.message.content is None
    assert choice.message.refusal == refusal
    assert choice.finish_reason == "length"


def test_script_can_withhold_logprobs(client: openai.OpenAI, admin: httpx.Client) -> None:
    _script(admin, {"kind": "other", "content": '{"score": 7}', "logprobs": False})
    assert _say(client, logprobs=True, top_logprobs=5).choices[0].logprobs is None


def test_script_score_curve_follows_score(client: openai.OpenAI, admin: httpx.Client) -> None:
    _script(admin, {"kind": "other", "content": '{"reason": "x", "score": 11}'})
    tokens = _say(client, logprobs=True, top_logprobs=20).choices[0].logprobs.content
    score = next(token for token in tokens if token.token == "11")
    assert score.top_logprobs[0].token == "10"
    assert {alt.token for alt in score.top_logprobs} >= {str(k) for k in range(11)}


def test_script_non_finite_score_no_curve(client: openai.OpenAI, admin: httpx.Client) -> None:
    _script(admin, {"kind": "other", "content": '{"reason": "x", "score": NaN}'})
    tokens = _say(client, logprobs=True, top_logprobs=5).choices[0].logprobs.content
    assert all(len(token.top_logprobs) == 1 for token in tokens)


def test_script_delete_clears_queue(admin: httpx.Client) -> None:
    _script(admin, {"kind": "tone", "content": "x"}, {"kind": "any"})
    assert admin.get("/_judge/script").json()["replies"][1]["content"] == ""
    assert admin.delete("/_judge/script").json() == {"cleared": 2}
    assert admin.get("/_judge/script").json() == {"replies": []}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"replies": {"kind": "tone"}}, id="replies-not-list"),
        pytest.param({"replies": [{"kind": "image"}]}, id="unknown-kind"),
        pytest.param({"replies": [{"kind": "tone", "content": 3}]}, id="content-number"),
        pytest.param({"replies": [{"kind": "tone", "logprobs": "no"}]}, id="logprobs-string"),
        pytest.param({"replies": [{"kind": "tone", "status": 500}]}, id="unknown-key"),
        pytest.param({"replies": [{"kind": "tone"}, "tone"]}, id="entry-not-object"),
        pytest.param(["tone"], id="body-list"),
    ],
)
def test_script_rejects_bad_body(admin: httpx.Client, body: Any) -> None:
    assert admin.post("/_judge/script", json=body).status_code == 400
    assert admin.get("/_judge/script").json() == {"replies": []}


def test_exits_without_api_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_JUDGE_API_KEY"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "stack.judge_server", "--port", str(free_port())],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "LOCAL_JUDGE_API_KEY" in done.stderr
