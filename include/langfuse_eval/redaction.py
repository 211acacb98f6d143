"""Replace obvious secrets and email addresses in a trace text with placeholders.

The patterns look for the shapes that credentials have when pasted into a prompt or echoed by
a model: provider key prefixes, JWTs, ``Bearer`` headers, ``name=value`` credential fields,
credentials in a URL and PEM private key blocks. They are anchored on those prefixes or field
names, so ordinary words, UUIDs, hex trace ids, numbers and URLs without credentials are kept.

The patterns run in order, the most specific first, and none matches a placeholder, so running
:func:`redact` on its own result changes nothing.
"""

from __future__ import annotations

import re
from typing import NamedTuple

EMAIL_PLACEHOLDER = "[REDACTED_EMAIL]"
SECRET_PLACEHOLDER = "[REDACTED_SECRET]"

_CREDENTIAL_FIELDS = (
    r"api[_-]?key|access[_-]?key(?:[_-]?id)?|secret[_-]?(?:access[_-]?)?key|access[_-]?token"
    r"|auth[_-]?token|refresh[_-]?token|client[_-]?secret|private[_-]?key|password|passwd|pwd"
)


class _Rule(NamedTuple):
    """One kind of finding: its pattern and the text that replaces each match."""

    kind: str
    pattern: re.Pattern[str]
    replacement: str


_RULES = (
    # The body ends at the next five dashes, so each header scans only up to the next one.
    # A header without its footer takes only the whole base64 lines after it.
    _Rule(
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"
            r"(?:(?:(?!-----)[\s\S])*-----END [A-Z0-9 ]*PRIVATE KEY-----"
            r"|(?:\r?\n[A-Za-z0-9+/=]+(?![^\r\n]))*)"
        ),
        SECRET_PLACEHOLDER,
    ),
    _Rule("langfuse_key", re.compile(r"\b[ps]k-lf-[A-Za-z0-9-]{8,}"), SECRET_PLACEHOLDER),
    _Rule(
        "openai_key",
        # 20 or more characters, or 12 or more with a digit, so short test keys are caught too
        # while names like sk-learn are not.
        re.compile(
            r"\bsk-(?:proj-|svcacct-|admin-)?(?:[A-Za-z0-9_-]{20,}"
            r"|(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{12,})"
        ),
        SECRET_PLACEHOLDER,
    ),
    _Rule("aws_access_key_id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), SECRET_PLACEHOLDER),
    _Rule(
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
        SECRET_PLACEHOLDER,
    ),
    _Rule("slack_token", re.compile(r"\bxox[bpoas]-[A-Za-z0-9-]{10,}"), SECRET_PLACEHOLDER),
    _Rule(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"),
        SECRET_PLACEHOLDER,
    ),
    # The token needs a character other than a letter, so "bearer of bad news" is kept.
    _Rule(
        "bearer_token",
        re.compile(r"(?i)(\bbearer\s+)(?=[a-z]*[0-9._~+/-])[a-z0-9._~+/=-]{16,}"),
        r"\1" + SECRET_PLACEHOLDER,
    ),
    _Rule(
        "url_credentials",
        re.compile(r"(://[^\s:/?#@\[\]]+:)[^\s/?#@\[\]]+(@)"),
        r"\1" + SECRET_PLACEHOLDER + r"\2",
    ),
    # The field name may be quoted, as in JSON. A quoted value may contain spaces.
    _Rule(
        "credential_field",
        re.compile(
            rf"(?i)(\b(?:{_CREDENTIAL_FIELDS})\b[\"']?\s*[:=]\s*)"
            r"(?![\"']?\[REDACTED_)(?:\"[^\"\n]+\"|'[^'\n]+'|[^\s\"',;]+)"
        ),
        r"\1" + SECRET_PLACEHOLDER,
    ),
    # The lookbehind keeps matching linear: it starts a match only at the front of a run.
    _Rule(
        "email",
        re.compile(
            # Letters include non-ASCII ones, for addresses such as müller@firma.de.
            r"(?<![\w.%+/-])[\w.%+-]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*"
            r"\.[^\W\d_]{2,}\b"
        ),
        EMAIL_PLACEHOLDER,
    ),
)


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Replace the secrets and email addresses in a text with placeholders.

    Returns:
        The redacted text and the number of replacements by kind, with only the kinds found.
        The kinds are ``private_key``, ``langfuse_key``, ``openai_key``, ``aws_access_key_id``,
        ``github_token``, ``slack_token``, ``jwt``, ``bearer_token``, ``url_credentials``,
        ``credential_field`` and ``email``.
    """
    counts: dict[str, int] = {}
    for rule in _RULES:
        text, found = rule.pattern.subn(rule.replacement, text)
        if found:
            counts[rule.kind] = found
    return text, counts
