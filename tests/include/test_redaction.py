"""Tests of the redaction of secrets and email addresses in trace texts.

Every key-like value is built when the test runs from a prefix and filler characters, so this
file contains no realistic secret.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from include.langfuse_eval.redaction import EMAIL_PLACEHOLDER, SECRET_PLACEHOLDER, redact

SECRET = SECRET_PLACEHOLDER
EMAIL = EMAIL_PLACEHOLDER


def b64url(value: dict[str, object]) -> str:
    """Return the unpadded base64url of a dict's JSON, as a JWT part is written."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


OPENAI_KEY = "sk-" + "a1B2" * 10
OPENAI_PROJECT_KEY = "sk-proj-" + "Zx9_" * 12
LANGFUSE_SECRET_KEY = "sk-lf-" + "0" * 8 + "-1111-2222-3333-" + "4" * 12
LANGFUSE_PUBLIC_KEY = "pk-lf-" + "f" * 8 + "-aaaa-bbbb-cccc-" + "d" * 12
AWS_KEY_ID = "AKIA" + "Q7" * 8
GITHUB_CLASSIC = "ghp_" + "Ab3" * 12
GITHUB_FINE_GRAINED = "github_pat_" + "11AB" * 6 + "_" + "cd" * 20
SLACK_TOKEN = "xoxb-" + "1234" * 3 + "-" + "abcd" * 4
JWT = ".".join([b64url({"alg": "HS256"}), b64url({"sub": "user-1"}), "s1gn" * 8])
PEM_LABEL = "PRIVATE KEY-----"
PEM_BODY = "\n".join(["MIIE" + "Qk" * 30, "x9" * 32, "ab=="])
PEM = f"-----BEGIN RSA {PEM_LABEL}\n{PEM_BODY}\n-----END RSA {PEM_LABEL}"
PEM_UNTERMINATED = f"-----BEGIN {PEM_LABEL}\n{PEM_BODY}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f"Use {OPENAI_KEY} here.", (f"Use {SECRET} here.", {"openai_key": 1}), id="openai-key"
        ),
        pytest.param(
            f"key={OPENAI_PROJECT_KEY}",
            (f"key={SECRET}", {"openai_key": 1}),
            id="openai-project-key",
        ),
        pytest.param(
            f"{LANGFUSE_PUBLIC_KEY} / {LANGFUSE_SECRET_KEY}",
            (f"{SECRET} / {SECRET}", {"langfuse_key": 2}),
            id="langfuse-keys",
        ),
        pytest.param(
            f"id {AWS_KEY_ID} set", (f"id {SECRET} set", {"aws_access_key_id": 1}), id="aws-key-id"
        ),
        pytest.param(
            f"{GITHUB_CLASSIC} and {GITHUB_FINE_GRAINED}",
            (f"{SECRET} and {SECRET}", {"github_token": 2}),
            id="github-tokens",
        ),
        pytest.param(
            f"slack: {SLACK_TOKEN}.", (f"slack: {SECRET}.", {"slack_token": 1}), id="slack-token"
        ),
        pytest.param(f"jwt {JWT} end", (f"jwt {SECRET} end", {"jwt": 1}), id="jwt"),
        pytest.param(
            "Authorization: Bearer " + "tok3n." * 4,
            (f"Authorization: Bearer {SECRET}", {"bearer_token": 1}),
            id="bearer-token",
        ),
        pytest.param(
            f"Authorization: Bearer {JWT}",
            (f"Authorization: Bearer {SECRET}", {"jwt": 1}),
            id="bearer-jwt-counted-once",
        ),
        pytest.param(
            "api_key=" + "q" * 12 + " next",
            (f"api_key={SECRET} next", {"credential_field": 1}),
            id="api-key-assignment",
        ),
        pytest.param(
            "password: " + "hunter" + "2",
            (f"password: {SECRET}", {"credential_field": 1}),
            id="password-colon",
        ),
        pytest.param(
            '{"client_secret": "two words"}',
            (f'{{"client_secret": {SECRET}}}', {"credential_field": 1}),
            id="quoted-json-field",
        ),
        pytest.param(
            json.dumps({"api_key": OPENAI_KEY}),
            (f'{{"api_key": "{SECRET}"}}', {"openai_key": 1}),
            id="field-holding-known-key",
        ),
        pytest.param(
            "postgres://app:" + "pa55" + "word@db.example.com/app",
            (f"postgres://app:{SECRET}@db.example.com/app", {"url_credentials": 1}),
            id="url-credentials",
        ),
        pytest.param(
            f"key:\n{PEM}\nafter", (f"key:\n{SECRET}\nafter", {"private_key": 1}), id="pem-block"
        ),
        pytest.param(
            f"key:\n{PEM_UNTERMINATED}\nThe rest.",
            (f"key:\n{SECRET}\nThe rest.", {"private_key": 1}),
            id="pem-unterminated",
        ),
        pytest.param(
            "Mail ann.lee+tag@mail.example.co.uk or bob@example.org.",
            (f"Mail {EMAIL} or {EMAIL}.", {"email": 2}),
            id="emails",
        ),
        pytest.param(
            f"{OPENAI_KEY} from ann@example.com",
            (f"{SECRET} from {EMAIL}", {"openai_key": 1, "email": 1}),
            id="mixed-kinds",
        ),
    ],
)
def test_redact_finds_secrets(text: str, expected: tuple[str, dict[str, int]]) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("The skeleton task-list asks for risk-free skills.", id="ordinary-words"),
        pytest.param("sk-learn and sk-short are names.", id="short-sk-prefix"),
        pytest.param("trace 123e4567-e89b-12d3-a456-426614174000 done", id="uuid"),
        pytest.param("trace id 0af7651916cd43dd8448eb211c80319c", id="hex-trace-id"),
        pytest.param("Call 4155550123 or pay 1234567890123456.", id="numbers"),
        pytest.param("See https://example.com/docs?page=2#top for more.", id="url-plain"),
        pytest.param("https://ann@example.com/repo is a user URL.", id="url-user-only"),
        pytest.param("The bearer of bad news arrived.", id="bearer-prose"),
        pytest.param("Each token: about four characters.", id="token-prose"),
        pytest.param("Ping @owl_fan or write to admin@localhost.", id="handle-and-local-host"),
        pytest.param("pip install pkg@1.2.3", id="package-pin"),
        pytest.param("AKIA is a prefix; AKIA123 is short.", id="aws-prefix-alone"),
        pytest.param("eyJhbGciOi is only one part.", id="jwt-one-part"),
        pytest.param("-----BEGIN PUBLIC KEY-----", id="public-key-header"),
        pytest.param("", id="empty"),
    ],
)
def test_redact_keeps_ordinary_text(text: str) -> None:
    assert redact(text) == (text, {})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"{OPENAI_KEY} ann@example.com password: x", id="mixed"),
        pytest.param(json.dumps({"api_key": OPENAI_KEY, "password": "p w"}), id="json"),
        pytest.param(f"Bearer {JWT}\n{PEM}", id="bearer-and-pem"),
    ],
)
def test_redact_twice_changes_nothing(text: str) -> None:
    once, _ = redact(text)
    assert redact(once) == (once, {})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a" * 200_000, id="one-run"),
        pytest.param("a@" * 100_000, id="at-signs"),
        pytest.param(f"-----BEGIN {PEM_LABEL}" * 5_000, id="pem-headers"),
        pytest.param("password=" * 20_000, id="field-names"),
    ],
)
def test_redact_long_text_fast(text: str) -> None:
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        pytest.param("write to m\u00fcller@firma.de today", "email", id="umlaut-local-part"),
        pytest.param("mail jos\u00e9.garcia@example.org", "email", id="accented-local-part"),
        pytest.param("or bob@m\u00fcnchen.de", "email", id="umlaut-domain"),
        pytest.param("key sk-" + "shortKey" + "123456 here", "openai_key", id="short-sk-key"),
    ],
)
def test_unicode_and_short_secrets(text, kind):
    redacted, counts = redact(text)
    assert counts == {kind: 1}
    assert "@" not in redacted or kind != "email"
    assert "123456" not in redacted or kind != "openai_key"


def test_sk_learn_not_redacted():
    assert redact("pip install sk-learn today") == ("pip install sk-learn today", {})
