"""Connection settings for Langfuse and the judge, and the clients built from them."""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass, field

import certifi
import httpx
from langfuse.api import LangfuseAPI
from openai import AsyncOpenAI

from include.langfuse_eval.concurrency import observe_judge_reply
from include.langfuse_eval.errors import ConfigurationError

LANGFUSE_READ_TIMEOUT_S = 60.0
"""Read timeout for Langfuse requests: a v2 observations query may scan for up to 45 s."""

LANGFUSE_SDK_MAX_RETRIES = 3
"""Retries that the SDK makes itself on 408, 409, 429 and 5xx, honouring ``Retry-After``."""

DEFAULT_JUDGE_MODEL = "gpt-4.1-mini"
DEFAULT_JUDGE_TIMEOUT_S = 120.0
DEFAULT_JUDGE_MAX_RETRIES = 4


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Return the process's one TLS context, trusting the same CAs as httpx's default.

    Loading the CA bundle costs about 25 ms of CPU, and httpx does it for every client it
    builds. Every client of this package shares this context instead, so a page task that
    builds several clients loads the bundle once. ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are
    honoured as httpx honours them.
    """
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a Langfuse request is retried before the task gives up.

    Two layers retry. The SDK retries 408, 409, 429 and 5xx replies ``sdk_max_retries`` times,
    waiting for ``Retry-After`` when the reply has one and 1 s, 2 s, 4 s ... otherwise. Around
    it, :func:`include.langfuse_eval.observations.call_langfuse` retries transport errors,
    timeouts and the 429 and 5xx replies that the SDK gave up on, with jittered exponential
    waits. So a request that keeps failing is sent at most
    ``attempts * (sdk_max_retries + 1)`` times.

    Attributes:
        attempts: Calls of the SDK per request, the first one included.
        initial_wait_s: Wait before the second call. It doubles on each further call.
        max_wait_s: Cap on one wait. A ``Retry-After`` header raises a wait up to this cap.
        max_total_wait_s: Cap on the sum of the waits. No call starts after it.
        sdk_max_retries: The SDK's own retries within one call.
    """

    attempts: int = 4
    initial_wait_s: float = 2.0
    max_wait_s: float = 30.0
    max_total_wait_s: float = 60.0
    sdk_max_retries: int = LANGFUSE_SDK_MAX_RETRIES

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.sdk_max_retries < 0:
            raise ConfigurationError(
                f"Retry policy {self!r} is invalid: use at least 1 attempt and 0 or more SDK "
                "retries."
            )
        if min(self.initial_wait_s, self.max_wait_s, self.max_total_wait_s) < 0:
            raise ConfigurationError(f"Retry policy {self!r} is invalid: waits must be >= 0.")


DEFAULT_RETRY_POLICY = RetryPolicy()


@dataclass(frozen=True)
class LangfuseSettings:
    """Location of the Langfuse API and the project keys that authenticate against it.

    Attributes:
        host: Base URL of the Langfuse API.
        public_key: The project's public key.
        secret_key: The project's secret key.
        timeout_s: Read timeout of every request of the client from :meth:`api`. The read
            functions use it unless a call passes its own ``timeout_s``.
    """

    host: str
    public_key: str
    secret_key: str = field(repr=False)
    timeout_s: float = LANGFUSE_READ_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.host.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"Langfuse host {self.host!r} is invalid: set an http(s) URL such as "
                "https://cloud.langfuse.com as the host of the Langfuse connection."
            )
        if not self.public_key or not self.secret_key:
            raise ConfigurationError(
                "Langfuse keys are missing: set the public key as the login and the secret "
                "key as the password of the Langfuse connection."
            )
        if self.timeout_s <= 0:
            raise ConfigurationError(
                f"Langfuse timeout {self.timeout_s!r} s is invalid: use a positive number."
            )

    def api(self) -> LangfuseAPI:
        """Build the SDK's synchronous API client."""
        return LangfuseAPI(
            base_url=self.host.rstrip("/"),
            username=self.public_key,
            password=self.secret_key,
            x_langfuse_public_key=self.public_key,
            x_langfuse_sdk_name="langfuse-airflow-eval",
            timeout=self.timeout_s,
            httpx_client=httpx.Client(timeout=self.timeout_s, verify=tls_context()),
        )


@dataclass(frozen=True)
class JudgeSettings:
    """The OpenAI-compatible endpoint and model that both judges call."""

    api_key: str = field(repr=False)
    model: str = DEFAULT_JUDGE_MODEL
    base_url: str | None = None
    timeout_s: float = DEFAULT_JUDGE_TIMEOUT_S
    max_retries: int = DEFAULT_JUDGE_MAX_RETRIES

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ConfigurationError(
                "The judge API key is missing: set it as the password of the OpenAI connection."
            )
        if not self.model:
            raise ConfigurationError("The judge model is empty: set a model name.")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"Judge base URL {self.base_url!r} is invalid: set an http(s) URL or leave it "
                "empty for the OpenAI API."
            )

    def async_client(self) -> AsyncOpenAI:
        """Build the async OpenAI client that a judge shares across the calls of a page.

        The SDK retries 408, 409, 429 and 5xx replies itself, honouring ``Retry-After`` and
        ``retry-after-ms``.
        """
        return AsyncOpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
            http_client=httpx.AsyncClient(
                timeout=self.timeout_s,
                verify=tls_context(),
                event_hooks={"response": [observe_judge_reply]},
            ),
        )
