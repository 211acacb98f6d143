"""Send traces with chosen start times to a Langfuse OTLP endpoint.

The Langfuse SDK stamps spans with the current time, so traces for past days (backfills,
late traces, benchmarks) are built here as OTLP/HTTP protobuf with the same attributes that
SDK 5.2 sets on a root observation, and posted the way the SDK exports them.
"""

from __future__ import annotations

import gzip
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

OTLP_TRACES_PATH = "/api/public/otel/v1/traces"
SPANS_PER_REQUEST = 500


@dataclass(frozen=True)
class TraceRecord:
    """One trace to send: its root observation's input, output, tags and start time."""

    start_time: datetime
    input: Any
    output: Any
    tags: tuple[str, ...]
    name: str = "science-assistant"
    environment: str = "default"
    duration: timedelta = timedelta(seconds=1)
    trace_id: str = field(default_factory=lambda: secrets.token_hex(16))


def _raw(value: Any) -> str | None:
    """Serialize an input or output the way the SDK does: strings as is, the rest as JSON."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _attribute(key: str, value: str | bool | Iterable[str]) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    values = [AnyValue(string_value=item) for item in value]
    return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=values)))


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def build_span(record: TraceRecord) -> Span:
    """Build the root span of one trace."""
    attributes = [
        _attribute("langfuse.observation.type", "span"),
        _attribute("langfuse.trace.name", record.name),
        _attribute("langfuse.trace.tags", list(record.tags)),
        _attribute("langfuse.environment", record.environment),
        _attribute("langfuse.internal.is_app_root", True),
    ]
    for key, value in (
        ("langfuse.observation.input", _raw(record.input)),
        ("langfuse.observation.output", _raw(record.output)),
    ):
        if value is not None:
            attributes.append(_attribute(key, value))
    return Span(
        trace_id=bytes.fromhex(record.trace_id),
        span_id=secrets.token_bytes(8),
        name=record.name,
        kind=Span.SpanKind.SPAN_KIND_INTERNAL,
        start_time_unix_nano=_nanos(record.start_time),
        end_time_unix_nano=_nanos(record.start_time + record.duration),
        attributes=attributes,
    )


def send_traces(
    base_url: str, public_key: str, secret_key: str, records: list[TraceRecord]
) -> list[str]:
    """Post the traces as gzip-compressed OTLP protobuf and return their trace ids."""
    with httpx.Client(base_url=base_url, auth=(public_key, secret_key), timeout=60) as client:
        for offset in range(0, len(records), SPANS_PER_REQUEST):
            chunk = records[offset : offset + SPANS_PER_REQUEST]
            request = ExportTraceServiceRequest(
                resource_spans=[
                    ResourceSpans(scope_spans=[ScopeSpans(spans=[build_span(r) for r in chunk])])
                ]
            )
            response = client.post(
                OTLP_TRACES_PATH,
                content=gzip.compress(request.SerializeToString()),
                headers={
                    "Content-Type": "application/x-protobuf",
                    "Content-Encoding": "gzip",
                },
            )
            response.raise_for_status()
    return [record.trace_id for record in records]
