"""Fixtures that run the local Langfuse server in a subprocess for the whole session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from langfuse import Langfuse

from stack.process import ServerProcess, free_port, start_server


@dataclass(frozen=True)
class LocalLangfuse:
    """A running local Langfuse server and the keys it accepts."""

    server: ServerProcess
    public_key: str
    secret_key: str
    db_path: Path

    @property
    def base_url(self) -> str:
        """The server's base URL."""
        return self.server.base_url


@pytest.fixture(scope="session")
def langfuse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLangfuse]:
    """Start `stack.langfuse_server` on a free port with random keys and a temporary database."""
    state_dir = tmp_path_factory.mktemp("langfuse")
    public_key = f"pk-lf-{secrets.token_hex(8)}"
    secret_key = f"sk-lf-{secrets.token_hex(16)}"
    db_path = state_dir / "langfuse.db"
    server = start_server(
        "stack.langfuse_server",
        free_port(),
        {"LOCAL_LANGFUSE_PUBLIC_KEY": public_key, "LOCAL_LANGFUSE_SECRET_KEY": secret_key},
        state_dir / "server.log",
        args=["--db", str(db_path)],
    )
    try:
        yield LocalLangfuse(server, public_key, secret_key, db_path)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def langfuse(langfuse_server: LocalLangfuse) -> Iterator[Langfuse]:
    """Return one SDK client for the session, fully sampled."""
    client = Langfuse(
        public_key=langfuse_server.public_key,
        secret_key=langfuse_server.secret_key,
        base_url=langfuse_server.base_url,
        tracing_enabled=True,
        sample_rate=1.0,
    )
    try:
        yield client
    finally:
        client.shutdown()


@pytest.fixture(scope="session")
def http(langfuse_server: LocalLangfuse) -> Iterator[httpx.Client]:
    """Plain HTTP client for the admin routes and raw OTLP posts."""
    with httpx.Client(base_url=langfuse_server.base_url, timeout=10.0) as client:
        yield client


@pytest.fixture(autouse=True)
def reset_admin_state(http: httpx.Client) -> Iterator[None]:
    """Clear fault rules, latency, page shaping and score rejections after each test."""
    yield
    http.delete("/_stack/faults").raise_for_status()
    http.post("/_stack/latency", json={"seconds": 0}).raise_for_status()
    http.post("/_stack/config", json={}).raise_for_status()
    http.delete("/_stack/reject_scores").raise_for_status()
