"""Fault injection and added latency for the local FastAPI servers.

`install_faults(app)` adds an ASGI middleware and admin routes under `/_stack/`:

- `POST /_stack/faults` with `{"rules": [...]}` appends fault rules (see `FaultRule`).
- `DELETE /_stack/faults` clears all rules.
- `POST /_stack/latency` with `{"seconds": 0.2}` adds a fixed delay to every non-admin request.
- `GET /_stack/stats` returns `{"requests": {"METHOD path": n}, "faults_served": n}`.
- `DELETE /_stack/stats` resets the counters.

Admin routes are never faulted, delayed or counted. The servers bind 127.0.0.1 only, so the
admin routes have no authentication.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_stack/"


class FaultRule(BaseModel):
    """Fault rule. A request matches when its method and path prefix match.

    Attributes:
        method: HTTP method to match (case-insensitive), or None for any method.
        path_prefix: Path prefix to match, or None for any path.
        status: Status code to reply with, or None to handle the request normally after
            `delay_s` (a slow reply).
        times: How many matching requests the rule serves, or None for no limit.
        retry_after_s: Seconds for the `Retry-After` header (sent rounded up to an integer).
        retry_after_ms: Milliseconds for the `retry-after-ms` header. NOTE: the Langfuse SDK
            5.2 HTTP client fails to parse this header and falls back to `Retry-After`.
        delay_s: Seconds to wait before replying or handling the request.
        body: JSON body of the fault reply; a default message when None.
        drop_connection: Close the connection instead of replying. Uvicorn gives an app no
            way to close a socket before a reply starts, so the server sends the status line
            and headers of a 200 reply that announces a body, then closes the connection
            without the body. Clients see a broken reply (a protocol or read error), and
            uvicorn logs one error line for it.
    """

    method: str | None = None
    path_prefix: str | None = None
    status: int | None = None
    times: int | None = Field(default=1, ge=0)
    retry_after_s: float | None = Field(default=None, ge=0)
    retry_after_ms: float | None = Field(default=None, ge=0)
    delay_s: float = Field(default=0.0, ge=0)
    body: Any = None
    drop_connection: bool = False

    def matches(self, method: str, path: str) -> bool:
        """Return whether this rule applies to a request.

        Args:
            method: The request's HTTP method.
            path: The request's URL path.

        Returns:
            True when the rule has uses left and its method and prefix match.
        """
        if self.times is not None and self.times <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


class FaultRules(BaseModel):
    """Body of `POST /_stack/faults`."""

    rules: list[FaultRule]


class Latency(BaseModel):
    """Body of `POST /_stack/latency`."""

    seconds: float = Field(ge=0)


@dataclass
class FaultState:
    """Mutable fault configuration and request counters of one app.

    Attributes:
        rules: Active rules, checked in order; the first match is used.
        latency_s: Delay added to every non-admin request.
        requests: Count of non-admin requests by "METHOD path".
        faults_served: Count of requests that a rule replied to, delayed or dropped.
    """

    rules: list[FaultRule] = field(default_factory=list)
    latency_s: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    faults_served: int = 0

    def add_rules(self, rules: list[FaultRule]) -> None:
        """Append rules after the existing ones.

        Args:
            rules: Rules to append.
        """
        self.rules.extend(rules)

    def clear_rules(self) -> None:
        """Remove every rule."""
        self.rules.clear()

    def reset_stats(self) -> None:
        """Reset the request and fault counters."""
        self.requests.clear()
        self.faults_served = 0

    def stats(self) -> dict[str, Any]:
        """Return the counters in the shape of `GET /_stack/stats`.

        Returns:
            A dict with `requests` and `faults_served`.
        """
        return {"requests": dict(self.requests), "faults_served": self.faults_served}

    def take_rule(self, method: str, path: str) -> FaultRule | None:
        """Find the first matching rule and consume one of its uses.

        Args:
            method: The request's HTTP method.
            path: The request's URL path.

        Returns:
            A copy of the matched rule, or None.
        """
        for rule in self.rules:
            if rule.matches(method, path):
                if rule.times is not None:
                    rule.times -= 1
                self.faults_served += 1
                return rule.model_copy()
        return None


def _fault_headers(rule: FaultRule) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if rule.retry_after_s is not None:
        headers.append((b"retry-after", str(math.ceil(rule.retry_after_s)).encode()))
    if rule.retry_after_ms is not None:
        headers.append((b"retry-after-ms", str(int(rule.retry_after_ms)).encode()))
    return headers


class FaultMiddleware:
    """ASGI middleware that applies the latency and rules of a `FaultState`."""

    def __init__(self, app: ASGIApp, state: FaultState) -> None:
        """Wrap an ASGI app.

        Args:
            app: The inner ASGI app.
            state: The shared fault state.
        """
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI event stream."""
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        self.state.requests[f"{method} {path}"] += 1
        if self.state.latency_s > 0:
            await asyncio.sleep(self.state.latency_s)
        rule = self.state.take_rule(method, path)
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.delay_s > 0:
            await asyncio.sleep(rule.delay_s)
        if rule.drop_connection:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            return
        if rule.status is None:
            await self.app(scope, receive, send)
            return
        body = rule.body if rule.body is not None else {"message": f"injected fault {rule.status}"}
        await _send_json(send, rule.status, body, _fault_headers(rule))


async def _send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(payload)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": payload})


def install_faults(app: FastAPI) -> FaultState:
    """Add the fault middleware and the `/_stack/` admin routes to an app.

    Call it before the app starts serving. The state is also kept on `app.state.faults`.

    Args:
        app: The FastAPI app.

    Returns:
        The app's fault state, for in-process control.
    """
    state = FaultState()
    app.state.faults = state
    app.add_middleware(FaultMiddleware, state=state)
    router = APIRouter(prefix="/_stack", include_in_schema=False)

    @router.post("/faults")
    async def add_faults(body: FaultRules) -> dict[str, int]:
        state.add_rules(body.rules)
        return {"rules": len(state.rules)}

    @router.delete("/faults")
    async def clear_faults() -> dict[str, int]:
        state.clear_rules()
        return {"rules": 0}

    @router.post("/latency")
    async def set_latency(body: Latency) -> dict[str, float]:
        state.latency_s = body.seconds
        return {"seconds": state.latency_s}

    @router.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return state.stats()

    @router.delete("/stats")
    async def reset_stats() -> dict[str, Any]:
        state.reset_stats()
        return state.stats()

    app.include_router(router)
    return state
