"""Local Langfuse-compatible API server for the offline demo and the tests.

It implements the part of the Langfuse public API that the DAGs and the Langfuse SDK use:
health, projects, OTLP trace ingestion, `GET /api/public/v2/observations`,
`POST /api/public/scores` and `GET /api/public/v3/scores`. Data lives in one SQLite file.

Run it with `python -m stack.langfuse_server --host 127.0.0.1 --port 3030 --db PATH`. Basic
auth credentials come from `LOCAL_LANGFUSE_PUBLIC_KEY` and `LOCAL_LANGFUSE_SECRET_KEY`.

Admin routes (no auth, besides those of `stack.faults`):

- `GET|POST /_stack/config`: page shaping, `{"max_page_rows": int|null, "short_pages": bool,
  "empty_page_every": int|null, "lookahead": bool}`.
- `POST /_stack/reject_scores` `{"names": [...], "times": 1}`: the next `times` score batches
  reject the scores with those names (a 207 reply). `DELETE` clears it.
- `DELETE /_stack/data`: delete all observations, traces and scores.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gzip
import json
import logging
import math
import os
import secrets
import sqlite3
import sys
import threading
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from pydantic import BaseModel, Field

from stack.faults import install_faults

logger = logging.getLogger(__name__)

VERSION = "4.0.0-local"
PROJECT_ID = "local-project"
DEFAULT_DB = Path(".stack/langfuse.db")
PUBLIC_KEY_ENV = "LOCAL_LANGFUSE_PUBLIC_KEY"
SECRET_KEY_ENV = "LOCAL_LANGFUSE_SECRET_KEY"
DB_ENV = "LOCAL_LANGFUSE_DB"
MAX_PAGE_ROWS_ENV = "LOCAL_LANGFUSE_MAX_PAGE_ROWS"

OBSERVATION_LIMIT_MAX = 1000
SCORE_LIMIT_MAX = 100
DEFAULT_LIMIT = 50
SCORE_DATA_TYPES = ("NUMERIC", "CATEGORICAL", "BOOLEAN", "TEXT")
FIELD_GROUPS = {
    "core",
    "basic",
    "time",
    "io",
    "metadata",
    "model",
    "usage",
    "prompt",
    "metrics",
    "trace_context",
}
SCORE_FIELD_GROUPS = {"details", "subject", "annotation"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS observations (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    parent_id TEXT,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    name TEXT,
    type TEXT NOT NULL,
    level TEXT NOT NULL,
    status_message TEXT,
    version TEXT,
    environment TEXT NOT NULL,
    user_id TEXT,
    session_id TEXT,
    input TEXT,
    output TEXT,
    metadata TEXT,
    is_root INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS observations_order
    ON observations (start_ms DESC, trace_id DESC, id DESC);
CREATE TABLE IF NOT EXISTS traces (
    id TEXT PRIMARY KEY,
    name TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    environment TEXT,
    release TEXT
);
CREATE TABLE IF NOT EXISTS scores (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    day TEXT NOT NULL,
    trace_id TEXT,
    observation_id TEXT,
    session_id TEXT,
    dataset_run_id TEXT,
    data_type TEXT NOT NULL,
    value REAL,
    string_value TEXT,
    comment TEXT,
    metadata TEXT,
    environment TEXT NOT NULL,
    config_id TEXT,
    queue_id TEXT,
    source TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (id, name, day)
);
"""


class BadRequest(Exception):
    """A client error that becomes a 400 reply with a JSON `message`."""


class PageConfig(BaseModel):
    """Page shaping of `GET /api/public/v2/observations`, to exercise cursor walks.

    Attributes:
        max_page_rows: Cap on the rows of one page, below the requested limit.
        short_pages: Give pages of uneven sizes below the limit (limit//3, limit//2, 1,
            limit, repeating), chosen by the page number carried in the cursor.
        empty_page_every: Make every Nth page (N >= 2) empty, with a cursor that resumes at
            the same position.
        lookahead: Hand out a cursor only when more rows remain. When False, every full
            page has a cursor, so a walk can end on an empty page without a cursor.
    """

    max_page_rows: int | None = Field(default=None, ge=1)
    short_pages: bool = False
    empty_page_every: int | None = Field(default=None, ge=2)
    lookahead: bool = True

    def page_size(self, limit: int, page_number: int) -> int:
        """Return the number of rows to serve on a page.

        Args:
            limit: The requested limit.
            page_number: Zero-based page number of the walk.

        Returns:
            The row count, 0 for an injected empty page.
        """
        if self.empty_page_every and page_number % self.empty_page_every == (
            self.empty_page_every - 1
        ):
            return 0
        size = limit
        if self.short_pages:
            pattern = (max(1, limit // 3), max(1, limit // 2), 1, limit)
            size = pattern[page_number % len(pattern)]
        if self.max_page_rows is not None:
            size = min(size, self.max_page_rows)
        return size


class RejectScores(BaseModel):
    """Body of `POST /_stack/reject_scores`."""

    names: list[str]
    times: int | None = Field(default=1, ge=1)


@dataclass
class RejectRule:
    """Score names to reject in the next `times` batches (None: every batch)."""

    names: set[str]
    times: int | None


def iso_ms(moment: datetime) -> str:
    """Format a datetime as UTC ISO 8601 with milliseconds and a `Z`, as Langfuse does.

    Args:
        moment: The datetime; a naive one is taken as UTC.

    Returns:
        A string like `2026-12-04T05:00:00.123Z`.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def ms_to_iso(value_ms: int | None) -> str | None:
    """Format epoch milliseconds as UTC ISO 8601, or None."""
    if value_ms is None:
        return None
    return iso_ms(datetime.fromtimestamp(value_ms / 1000, tz=UTC))


def now_iso() -> str:
    """Return the current time as UTC ISO 8601 with milliseconds."""
    return iso_ms(datetime.now(UTC))


def parse_datetime(value: Any, field_name: str) -> datetime:
    """Parse an ISO 8601 string into an aware datetime (naive values are UTC).

    Args:
        value: The value from a request.
        field_name: Name of the field, for the error message.

    Returns:
        The aware datetime.

    Raises:
        BadRequest: If the value is not an ISO 8601 string.
    """
    if not isinstance(value, str):
        raise BadRequest(f"{field_name} must be an ISO 8601 datetime string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{field_name} is not a valid ISO 8601 datetime: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def epoch_us(moment: datetime) -> int:
    """Return microseconds since the epoch for an aware datetime."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_cursor(payload: dict[str, Any]) -> str:
    """Encode a cursor payload as URL-safe base64 JSON."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """Decode a cursor made by `encode_cursor`.

    Raises:
        BadRequest: If the cursor is not valid base64 JSON of an object.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid cursor: {cursor!r}") from exc
    if not isinstance(payload, dict):
        raise BadRequest(f"invalid cursor: {cursor!r}")
    return payload


# ---------------------------------------------------------------------------
# Storage


class Store:
    """SQLite storage of observations, traces and scores, guarded by one lock."""

    def __init__(self, db_path: Path) -> None:
        """Open (and create) the database file.

        Args:
            db_path: Path of the SQLite file; parent directories are created.
        """
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(str(db_path), check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)
        self.conn.commit()

    def close(self) -> None:
        """Close the database connection."""
        with self.lock:
            self.conn.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a read query and return all rows."""
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    def clear(self) -> None:
        """Delete all rows of all tables."""
        with self.lock, self.conn:
            for table in ("observations", "traces", "scores"):
                self.conn.execute(f"DELETE FROM {table}")

    def upsert_spans(self, spans: Iterable[dict[str, Any]]) -> int:
        """Insert or replace observations by id and merge their trace attributes.

        Args:
            spans: Observation dicts made by `span_to_observation`.

        Returns:
            The number of observations written.
        """
        count = 0
        stamp = now_iso()
        with self.lock, self.conn:
            for obs in spans:
                self.conn.execute(
                    """
                    INSERT INTO observations (id, trace_id, parent_id, start_ms, end_ms, name,
                        type, level, status_message, version, environment, user_id,
                        session_id, input, output, metadata, is_root, created_at, updated_at)
                    VALUES (:id, :trace_id, :parent_id, :start_ms, :end_ms, :name, :type,
                        :level, :status_message, :version, :environment, :user_id,
                        :session_id, :input, :output, :metadata, :is_root, :stamp, :stamp)
                    ON CONFLICT (id) DO UPDATE SET trace_id = excluded.trace_id,
                        parent_id = excluded.parent_id, start_ms = excluded.start_ms,
                        end_ms = excluded.end_ms, name = excluded.name, type = excluded.type,
                        level = excluded.level, status_message = excluded.status_message,
                        version = excluded.version, environment = excluded.environment,
                        user_id = excluded.user_id, session_id = excluded.session_id,
                        input = excluded.input, output = excluded.output,
                        metadata = excluded.metadata, is_root = excluded.is_root,
                        updated_at = excluded.updated_at
                    """,
                    {**obs, "stamp": stamp},
                )
                self._merge_trace(obs)
                count += 1
        return count

    def _merge_trace(self, obs: dict[str, Any]) -> None:
        row = self.conn.execute(
            "SELECT name, tags, environment, release FROM traces WHERE id = ?", (obs["trace_id"],)
        ).fetchone()
        tags: list[str] = json.loads(row["tags"]) if row else []
        tags.extend(tag for tag in obs["trace_tags"] if tag not in tags)
        name = row["name"] if row else None
        if obs["trace_name"] is not None:
            name = obs["trace_name"]
        elif name is None and obs["is_root"]:
            name = obs["name"]
        environment = row["environment"] if row else None
        if obs["is_root"] or environment is None:
            environment = obs["environment"]
        release = obs["release"] or (row["release"] if row else None)
        self.conn.execute(
            """
            INSERT INTO traces (id, name, tags, environment, release) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET name = excluded.name, tags = excluded.tags,
                environment = excluded.environment, release = excluded.release
            """,
            (obs["trace_id"], name, json.dumps(tags), environment, release),
        )

    def upsert_scores(self, scores: Iterable[dict[str, Any]]) -> None:
        """Insert scores, replacing a row with the same id, name and UTC day.

        Args:
            scores: Score dicts made by `validate_score`.
        """
        stamp = now_iso()
        with self.lock, self.conn:
            for score in scores:
                self.conn.execute(
                    """
                    INSERT INTO scores (id, name, day, trace_id, observation_id, session_id,
                        dataset_run_id, data_type, value, string_value, comment, metadata,
                        environment, config_id, queue_id, source, timestamp, created_at,
                        updated_at)
                    VALUES (:id, :name, :day, :trace_id, :observation_id, :session_id,
                        :dataset_run_id, :data_type, :value, :string_value, :comment,
                        :metadata, :environment, :config_id, :queue_id, :source, :timestamp,
                        :stamp, :stamp)
                    ON CONFLICT (id, name, day) DO UPDATE SET trace_id = excluded.trace_id,
                        observation_id = excluded.observation_id,
                        session_id = excluded.session_id,
                        dataset_run_id = excluded.dataset_run_id,
                        data_type = excluded.data_type, value = excluded.value,
                        string_value = excluded.string_value, comment = excluded.comment,
                        metadata = excluded.metadata, environment = excluded.environment,
                        config_id = excluded.config_id, queue_id = excluded.queue_id,
                        source = excluded.source, timestamp = excluded.timestamp,
                        updated_at = excluded.updated_at
                    """,
                    {**score, "stamp": stamp},
                )


# ---------------------------------------------------------------------------
# OTLP ingestion


def any_value(value: AnyValue) -> Any:
    """Convert an OTLP AnyValue to a plain Python value."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: any_value(item.value) for item in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind is None:
        return None
    return getattr(value, kind)


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """Convert OTLP attributes to a dict."""
    return {item.key: any_value(item.value) for item in attributes}


def _as_tags(value: Any) -> list[str]:
    """Read `langfuse.trace.tags`, sent as a string array or as a JSON string."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    if isinstance(value, list):
        return [str(tag) for tag in value]
    return [str(value)]


def _as_raw_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _metadata(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """Collect `langfuse.{observation,trace}.metadata.*` attributes, JSON-decoding values."""
    result: dict[str, Any] = {}
    for prefix in ("langfuse.trace.metadata", "langfuse.observation.metadata"):
        for key, value in attrs.items():
            if key == prefix and isinstance(value, str):
                try:
                    decoded = json.loads(value)
                except ValueError:
                    decoded = value
                if isinstance(decoded, dict):
                    result.update(decoded)
            elif key.startswith(prefix + "."):
                decoded = value
                if isinstance(value, str):
                    try:
                        decoded = json.loads(value)
                    except ValueError:
                        decoded = value
                result[key[len(prefix) + 1 :]] = decoded
    return result or None


def span_to_observation(span: Any, resource_attrs: dict[str, Any]) -> dict[str, Any]:
    """Map one OTLP span to an observation row plus its trace attributes.

    Args:
        span: An `opentelemetry.proto.trace.v1.trace_pb2.Span`.
        resource_attrs: Attributes of the span's resource.

    Returns:
        A dict with the observation columns and `trace_tags`, `trace_name`, `release`.
    """
    attrs = attributes_dict(span.attributes)
    parent_id = span.parent_span_id.hex() if span.parent_span_id else None
    obs_type = str(attrs.get("langfuse.observation.type") or "span").upper()
    environment = (
        attrs.get("langfuse.environment") or resource_attrs.get("langfuse.environment") or "default"
    )
    is_root = parent_id is None or attrs.get("langfuse.internal.is_app_root") is True
    status_message = attrs.get("langfuse.observation.status_message") or (
        span.status.message or None
    )
    end_ms = span.end_time_unix_nano // 1_000_000 if span.end_time_unix_nano else None
    metadata = _metadata(attrs)
    return {
        "id": span.span_id.hex(),
        "trace_id": span.trace_id.hex(),
        "parent_id": parent_id,
        "start_ms": span.start_time_unix_nano // 1_000_000,
        "end_ms": end_ms,
        "name": span.name,
        "type": obs_type,
        "level": str(attrs.get("langfuse.observation.level") or "DEFAULT").upper(),
        "status_message": status_message,
        "version": attrs.get("langfuse.version"),
        "environment": str(environment),
        "user_id": attrs.get("user.id"),
        "session_id": attrs.get("session.id"),
        "input": _as_raw_string(attrs.get("langfuse.observation.input")),
        "output": _as_raw_string(attrs.get("langfuse.observation.output")),
        "metadata": json.dumps(metadata) if metadata is not None else None,
        "is_root": 1 if is_root else 0,
        "trace_tags": _as_tags(attrs.get("langfuse.trace.tags")),
        "trace_name": attrs.get("langfuse.trace.name"),
        "release": attrs.get("langfuse.release") or resource_attrs.get("langfuse.release"),
    }


def parse_otlp(body: bytes, content_type: str, content_encoding: str) -> list[dict[str, Any]]:
    """Decode an OTLP/HTTP trace export into observation dicts.

    Args:
        body: The raw request body.
        content_type: The `Content-Type` header (protobuf or JSON).
        content_encoding: The `Content-Encoding` header (`gzip`, `deflate` or empty).

    Returns:
        One dict per span, from `span_to_observation`.

    Raises:
        BadRequest: If the body cannot be decompressed or decoded.
    """
    encoding = content_encoding.strip().lower()
    try:
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding not in ("", "identity"):
            raise BadRequest(f"unsupported Content-Encoding {content_encoding!r}")
    except (OSError, zlib.error, EOFError) as exc:
        raise BadRequest(f"invalid {encoding} body: {exc}") from exc
    request = ExportTraceServiceRequest()
    try:
        if "json" in content_type.lower():
            json_format.Parse(body.decode("utf-8"), request)
        else:
            request.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid OTLP trace export: {exc}") from exc
    observations = []
    for resource_spans in request.resource_spans:
        resource_attrs = attributes_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                observations.append(span_to_observation(span, resource_attrs))
    return observations


# ---------------------------------------------------------------------------
# Observation queries

STRING_COLUMNS = {
    "id": "o.id",
    "traceId": "o.trace_id",
    "name": "o.name",
    "type": "o.type",
    "environment": "o.environment",
    "level": "o.level",
    "statusMessage": "o.status_message",
    "version": "o.version",
    "userId": "o.user_id",
    "sessionId": "o.session_id",
    "parentObservationId": "o.parent_id",
    "traceName": "t.name",
}
DATETIME_COLUMNS = {"startTime": "o.start_ms", "endTime": "o.end_ms"}
ARRAY_COLUMNS = {"traceTags": "t.tags", "tags": "t.tags"}
BOOLEAN_COLUMNS = {"isRootObservation": "o.is_root"}
COMPARISONS = {">": ">", "<": "<", ">=": ">=", "<=": "<="}


def _string_list(value: Any, column: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"filter on {column}: value must be a list of strings, got {value!r}")
    return value


def condition_sql(condition: Any) -> tuple[str, list[Any]]:
    """Translate one v2 filter condition to a SQL expression and its parameters.

    Args:
        condition: One element of the `filter` JSON list.

    Returns:
        The SQL expression and its parameters.

    Raises:
        BadRequest: For an unknown column, type or operator, or a value of the wrong type.
    """
    if not isinstance(condition, dict):
        raise BadRequest(f"filter condition must be an object, got {condition!r}")
    column = condition.get("column")
    ftype = condition.get("type")
    operator = condition.get("operator")
    value = condition.get("value")
    if column in DATETIME_COLUMNS:
        if ftype != "datetime" or operator not in COMPARISONS:
            raise BadRequest(
                f"filter on {column}: expected type 'datetime' with one of "
                f"{sorted(COMPARISONS)}, got type {ftype!r} operator {operator!r}"
            )
        micros = epoch_us(parse_datetime(value, f"filter on {column}"))
        return f"{DATETIME_COLUMNS[column]} * 1000 {COMPARISONS[operator]} ?", [micros]
    if column in BOOLEAN_COLUMNS:
        if ftype != "boolean" or operator not in ("=", "<>"):
            raise BadRequest(
                f"filter on {column}: expected type 'boolean' with '=' or '<>', got type "
                f"{ftype!r} operator {operator!r}"
            )
        if not isinstance(value, bool):
            raise BadRequest(f"filter on {column}: value must be true or false, got {value!r}")
        return f"{BOOLEAN_COLUMNS[column]} {operator} ?", [1 if value else 0]
    if column in ARRAY_COLUMNS:
        if ftype != "arrayOptions" or operator not in ("any of", "all of", "none of"):
            raise BadRequest(
                f"filter on {column}: expected type 'arrayOptions' with 'any of', 'all of' or "
                f"'none of', got type {ftype!r} operator {operator!r}"
            )
        tags = _string_list(value, column)
        exists = "EXISTS (SELECT 1 FROM json_each(COALESCE(t.tags, '[]')) WHERE value = ?)"
        if not tags:
            return ("1" if operator != "any of" else "0"), []
        joiner = " AND " if operator == "all of" else " OR "
        expr = "(" + joiner.join([exists] * len(tags)) + ")"
        if operator == "none of":
            expr = f"NOT {expr}"
        return expr, list(tags)
    if column in STRING_COLUMNS:
        sql_column = STRING_COLUMNS[column]
        if ftype == "string" and operator == "=":
            if not isinstance(value, str):
                raise BadRequest(f"filter on {column}: value must be a string, got {value!r}")
            return f"{sql_column} = ?", [value]
        if ftype == "stringOptions" and operator in ("any of", "none of"):
            options = _string_list(value, column)
            if not options:
                return ("0" if operator == "any of" else "1"), []
            marks = ", ".join("?" * len(options))
            negate = "NOT " if operator == "none of" else ""
            return f"COALESCE({sql_column}, '') {negate}IN ({marks})", list(options)
        raise BadRequest(
            f"filter on {column}: the local server supports type 'string' with '=' and type "
            f"'stringOptions' with 'any of' or 'none of', got type {ftype!r} operator "
            f"{operator!r}"
        )
    raise BadRequest(f"filter column {column!r} is not supported by the local server")


def parse_filter(raw: str | None) -> list[dict[str, Any]]:
    """Parse the `filter` query parameter (a JSON list of conditions)."""
    if raw is None or raw.strip() == "":
        return []
    try:
        conditions = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"filter is not valid JSON: {exc}") from exc
    if not isinstance(conditions, list):
        raise BadRequest("filter must be a JSON list of conditions")
    return conditions


def _int_param(raw: str | None, name: str, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from exc
    if not 1 <= value <= maximum:
        raise BadRequest(f"{name} must be between 1 and {maximum}, got {value}")
    return value


def _bool_param(raw: str, name: str) -> bool:
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadRequest(f"{name} must be true or false, got {raw!r}")


def _fields(raw: str | None, allowed: set[str], default: set[str]) -> set[str]:
    if raw is None or raw.strip() == "":
        return set(default)
    groups = {group.strip() for group in raw.split(",") if group.strip()}
    unknown = groups - allowed
    if unknown:
        raise BadRequest(f"unknown field groups {sorted(unknown)}; allowed: {sorted(allowed)}")
    return groups


def observation_json(row: sqlite3.Row, groups: set[str]) -> dict[str, Any]:
    """Render an observation row in the `ObservationV2` wire format for the field groups."""
    item: dict[str, Any] = {
        "id": row["id"],
        "traceId": row["trace_id"],
        "startTime": ms_to_iso(row["start_ms"]),
        "endTime": ms_to_iso(row["end_ms"]),
        "projectId": PROJECT_ID,
        "parentObservationId": row["parent_id"],
        "type": row["type"],
    }

    if "basic" in groups:
        item.update(
            name=row["name"],
            level=row["level"],
            statusMessage=row["status_message"],
            version=row["version"],
            environment=row["environment"],
            bookmarked=False,
            public=False,
            userId=row["user_id"],
            sessionId=row["session_id"],
            isRootObservation=bool(row["is_root"]),
        )

    if "time" in groups:
        item.update(
            completionStartTime=None, createdAt=row["created_at"], updatedAt=row["updated_at"]
        )

    if "io" in groups:
        item.update(input=row["input"], output=row["output"])

    if "metadata" in groups:
        item["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}

    if "model" in groups:
        item.update(model=None, internalModelId=None, modelParameters=None)

    if "usage" in groups:
        item.update(usageDetails={}, costDetails={}, totalCost=None, usagePricingTierName=None)

    if "prompt" in groups:
        item.update(promptId=None, promptName=None, promptVersion=None)

    if "metrics" in groups:
        latency = None
        if row["end_ms"] is not None:
            latency = (row["end_ms"] - row["start_ms"]) / 1000
        item.update(latency=latency, timeToFirstToken=None)

    if "trace_context" in groups:
        item.update(
            tags=json.loads(row["trace_tags"] or "[]"),
            release=row["trace_release"],
            traceName=row["trace_name"],
        )

    return item


def query_param_conditions(params: Any, filtered_columns: set[str]) -> list[dict[str, Any]]:
    """Turn the simple query filters into conditions, skipping columns that `filter` sets.

    Args:
        params: The request's query parameters.
        filtered_columns: Columns that have a condition in `filter`.

    Returns:
        Conditions in the `filter` format.
    """
    conditions: list[dict[str, Any]] = []
    simple = {
        "name": "name",
        "userId": "userId",
        "sessionId": "sessionId",
        "type": "type",
        "traceId": "traceId",
        "level": "level",
        "version": "version",
        "parentObservationId": "parentObservationId",
    }
    for param, column in simple.items():
        value = params.get(param)
        if value is not None and column not in filtered_columns:
            conditions.append({"type": "string", "column": column, "operator": "=", "value": value})
    environments = params.getlist("environment")
    if environments and "environment" not in filtered_columns:
        conditions.append(
            {
                "type": "stringOptions",
                "column": "environment",
                "operator": "any of",
                "value": environments,
            }
        )
    is_root = params.get("isRootObservation")
    if is_root is not None and "isRootObservation" not in filtered_columns:
        conditions.append(
            {
                "type": "boolean",
                "column": "isRootObservation",
                "operator": "=",
                "value": _bool_param(is_root, "isRootObservation"),
            }
        )
    if "startTime" not in filtered_columns:
        for param, operator in (("fromStartTime", ">="), ("toStartTime", "<")):
            value = params.get(param)
            if value is not None:
                conditions.append(
                    {
                        "type": "datetime",
                        "column": "startTime",
                        "operator": operator,
                        "value": value,
                    }
                )
    return conditions


# ---------------------------------------------------------------------------
# Scores


def _optional_str(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, got {value!r}")
    return value


def validate_score(item: Any, received: datetime) -> dict[str, Any]:
    """Validate one score of a `POST /api/public/scores` batch.

    Args:
        item: One element of the JSON array (camelCase keys, as the SDK sends them).
        received: Time the request arrived, the default timestamp.

    Returns:
        A row for `Store.upsert_scores`.

    Raises:
        BadRequest: With the reason the score is rejected.
    """
    if not isinstance(item, dict):
        raise BadRequest(f"score must be an object, got {type(item).__name__}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("name is missing or empty")
    value = item.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"score {name!r}: value must be a number or a string, got {value!r}")
    data_type = item.get("dataType")
    if data_type is None:
        data_type = "CATEGORICAL" if isinstance(value, str) else "NUMERIC"
    if data_type not in SCORE_DATA_TYPES:
        raise BadRequest(f"score {name!r}: dataType must be one of {SCORE_DATA_TYPES}")
    number: float | None = None
    text: str | None = None
    if data_type in ("NUMERIC", "BOOLEAN"):
        if isinstance(value, str) or not math.isfinite(value):
            raise BadRequest(f"score {name!r}: {data_type} needs a finite number, got {value!r}")
        if data_type == "BOOLEAN" and value not in (0, 1):
            raise BadRequest(f"score {name!r}: BOOLEAN value must be 0 or 1, got {value!r}")
        number = float(value)
    else:
        if not isinstance(value, str):
            raise BadRequest(f"score {name!r}: {data_type} needs a string value, got {value!r}")
        text = value
    trace_id = _optional_str(item, "traceId")
    observation_id = _optional_str(item, "observationId")
    session_id = _optional_str(item, "sessionId")
    dataset_run_id = _optional_str(item, "datasetRunId")
    if trace_id is None and session_id is None and dataset_run_id is None:
        raise BadRequest(f"score {name!r}: one of traceId, sessionId or datasetRunId is required")
    if observation_id is not None and trace_id is None:
        raise BadRequest(f"score {name!r}: observationId requires traceId")
    metadata = item.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest(f"score {name!r}: metadata must be an object")
    raw_timestamp = item.get("timestamp")
    timestamp = received if raw_timestamp is None else parse_datetime(raw_timestamp, "timestamp")
    timestamp = timestamp.astimezone(UTC)
    source = item.get("source") or "API"
    if source not in ("API", "ANNOTATION"):
        raise BadRequest(f"score {name!r}: source must be API or ANNOTATION, got {source!r}")
    return {
        "id": _optional_str(item, "id") or str(uuid.uuid4()),
        "name": name,
        "day": timestamp.date().isoformat(),
        "trace_id": trace_id,
        "observation_id": observation_id,
        "session_id": session_id,
        "dataset_run_id": dataset_run_id,
        "data_type": data_type,
        "value": number,
        "string_value": text,
        "comment": _optional_str(item, "comment"),
        "metadata": json.dumps(metadata) if metadata is not None else None,
        "environment": _optional_str(item, "environment") or "default",
        "config_id": _optional_str(item, "configId"),
        "queue_id": _optional_str(item, "queueId"),
        "source": source,
        "timestamp": iso_ms(timestamp),
    }


def score_json(row: sqlite3.Row, groups: set[str]) -> dict[str, Any]:
    """Render a score row in the `ScoreV3` wire format for the field groups."""
    data_type = row["data_type"]
    value: Any = row["string_value"]
    if data_type == "NUMERIC":
        value = row["value"]
    elif data_type == "BOOLEAN":
        value = bool(row["value"])
    item: dict[str, Any] = {
        "id": row["id"],
        "projectId": PROJECT_ID,
        "name": row["name"],
        "dataType": data_type,
        "value": value,
        "source": row["source"],
        "timestamp": row["timestamp"],
        "environment": row["environment"],
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }
    if "details" in groups:
        item.update(
            comment=row["comment"],
            configId=row["config_id"],
            metadata=json.loads(row["metadata"]) if row["metadata"] else {},
        )
    if "annotation" in groups:
        item.update(authorUserId=None, queueId=row["queue_id"])
    if "subject" in groups:
        if row["observation_id"] is not None:
            subject = {"kind": "observation", "id": row["observation_id"]}
            subject["traceId"] = row["trace_id"]
        elif row["trace_id"] is not None:
            subject = {"kind": "trace", "id": row["trace_id"]}
        elif row["session_id"] is not None:
            subject = {"kind": "session", "id": row["session_id"]}
        else:
            subject = {"kind": "experiment", "id": row["dataset_run_id"]}
        item["subject"] = subject
    return item


def _csv(raw: str | None) -> list[str]:
    if raw is None:
        return []
    return [part.strip() for part in raw.split(",") if part.strip()]


# ---------------------------------------------------------------------------
# App


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"message": message})


def _check_basic_auth(header: str | None, public_key: str, secret_key: str) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    username, sep, password = decoded.partition(":")
    if not sep:
        return False
    user_ok = secrets.compare_digest(username.encode(), public_key.encode())
    password_ok = secrets.compare_digest(password.encode(), secret_key.encode())
    return user_ok and password_ok


class AuthError(Exception):
    """Missing or wrong Basic auth credentials."""


def create_app(
    db_path: Path, public_key: str, secret_key: str, page_config: PageConfig | None = None
) -> FastAPI:
    """Build the local Langfuse-compatible app.

    Args:
        db_path: SQLite file (created with its parent directories).
        public_key: Basic auth username that the `/api/public/*` routes accept.
        secret_key: Basic auth password that the `/api/public/*` routes accept.
        page_config: Initial page shaping of the v2 observations endpoint.

    Returns:
        The FastAPI app; `app.state.store`, `app.state.page_config` and `app.state.faults`
        give in-process access.
    """
    if not public_key or not secret_key:
        raise ValueError("public_key and secret_key must be non-empty")
    store = Store(db_path)
    app = FastAPI(title="Local Langfuse", version=VERSION, docs_url=None, redoc_url=None)
    app.state.store = store
    app.state.page_config = page_config or PageConfig()
    app.state.reject_rules = []
    install_faults(app)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        logger.warning("400 %s %s: %s", request.method, request.url.path, exc)
        return _error(400, str(exc))

    @app.exception_handler(AuthError)
    async def unauthorized(request: Request, exc: AuthError) -> JSONResponse:
        logger.warning(
            "401 %s %s: invalid or missing credentials", request.method, request.url.path
        )
        return JSONResponse(
            status_code=401,
            content={"message": "Invalid credentials. Confirm that you've configured the keys."},
            headers={"WWW-Authenticate": 'Basic realm="langfuse"'},
        )

    async def require_auth(request: Request) -> None:
        if not _check_basic_auth(request.headers.get("authorization"), public_key, secret_key):
            raise AuthError()

    @app.get("/api/public/health")
    async def health() -> dict[str, str]:
        return {"status": "OK", "version": VERSION}

    api = APIRouter(prefix="/api/public", dependencies=[Depends(require_auth)])

    @api.get("/projects")
    async def projects() -> dict[str, Any]:
        organization = {"id": "local-org", "name": "Local organization"}
        project = {
            "id": PROJECT_ID,
            "name": "Local project",
            "organization": organization,
            "metadata": {},
        }
        return {"data": [project]}

    @api.post("/otel/v1/traces")
    async def otel_traces(request: Request) -> Response:
        body = await request.body()
        observations = parse_otlp(
            body,
            request.headers.get("content-type", "application/x-protobuf"),
            request.headers.get("content-encoding", ""),
        )
        store.upsert_spans(observations)
        if "json" in request.headers.get("content-type", "").lower():
            return JSONResponse(content={})
        reply = ExportTraceServiceResponse().SerializeToString()
        return Response(content=reply, media_type="application/x-protobuf")

    @api.get("/v2/observations")
    async def observations(request: Request) -> dict[str, Any]:
        params = request.query_params
        if params.get("parseIoAsJson", "false").lower() == "true":
            raise BadRequest("parseIoAsJson is deprecated; input and output are raw strings")
        groups = _fields(params.get("fields"), FIELD_GROUPS, {"core", "basic"}) | {"core"}
        limit = _int_param(params.get("limit"), "limit", DEFAULT_LIMIT, OBSERVATION_LIMIT_MAX)

        conditions = parse_filter(params.get("filter"))
        filtered = {c.get("column") for c in conditions if isinstance(c, dict)}
        conditions += query_param_conditions(params, filtered)
        where: list[str] = []
        args: list[Any] = []
        for condition in conditions:
            expr, expr_args = condition_sql(condition)
            where.append(expr)
            args.extend(expr_args)

        page_number = 0
        raw_cursor = params.get("cursor")
        if raw_cursor:
            position = decode_cursor(raw_cursor)
            try:
                key = (int(position["s"]), str(position["t"]), str(position["i"]))
                page_number = int(position.get("n", 0))
            except (KeyError, TypeError, ValueError) as exc:
                raise BadRequest(f"invalid cursor: {raw_cursor!r}") from exc
            where.append("(o.start_ms, o.trace_id, o.id) < (?, ?, ?)")
            args.extend(key)
        else:
            key = None

        config: PageConfig = app.state.page_config
        size = config.page_size(limit, page_number)
        sql = (
            "SELECT o.*, t.name AS trace_name, t.tags AS trace_tags, t.release AS trace_release "
            "FROM observations o LEFT JOIN traces t ON t.id = o.trace_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY o.start_ms DESC, o.trace_id DESC, o.id DESC LIMIT ?"
        )
        fetch = max(size, 1) + 1 if config.lookahead else max(size, 1)
        rows = store.query(sql, [*args, fetch])

        meta: dict[str, Any] = {}
        if size == 0:
            # An injected empty page keeps the position but advances the page number. Page 0
            # is never empty, so `key` is set here.
            if rows and key is not None:
                meta["cursor"] = encode_cursor(
                    {"s": key[0], "t": key[1], "i": key[2], "n": page_number + 1}
                )
            return {"data": [], "meta": meta}

        page = rows[:size]
        more = len(rows) > size if config.lookahead else len(page) == size
        if more and page:
            last = page[-1]
            meta["cursor"] = encode_cursor(
                {
                    "s": last["start_ms"],
                    "t": last["trace_id"],
                    "i": last["id"],
                    "n": page_number + 1,
                }
            )
        return {"data": [observation_json(row, groups) for row in page], "meta": meta}

    @api.post("/scores")
    async def create_scores(request: Request) -> JSONResponse:
        received = datetime.now(UTC)
        try:
            batch = json.loads(await request.body())
        except ValueError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(batch, list):
            raise BadRequest("request body must be a JSON array of scores")
        rejected_names = _take_reject_rule(app.state.reject_rules)
        valid: list[dict[str, Any]] = []
        errors: list[dict[str, str]] = []
        for index, item in enumerate(batch):
            try:
                score = validate_score(item, received)
                if score["name"] in rejected_names:
                    raise BadRequest(
                        f"score {score['name']!r}: rejected by the /_stack/reject_scores rule"
                    )
            except BadRequest as exc:
                errors.append({"message": f"scores[{index}]: {exc}"})
                continue
            valid.append(score)
        store.upsert_scores(valid)
        if errors:
            logger.warning(
                "207 POST /api/public/scores: %d accepted, %d rejected; first error: %s",
                len(valid),
                len(errors),
                errors[0]["message"],
            )
            content = {"accepted": len(valid), "rejected": len(errors), "errors": errors}
            return JSONResponse(status_code=207, content=content)
        return JSONResponse(status_code=202, content={"message": "Accepted"})

    @api.get("/v3/scores")
    async def get_scores(request: Request) -> dict[str, Any]:
        params = request.query_params
        limit = _int_param(params.get("limit"), "limit", DEFAULT_LIMIT, SCORE_LIMIT_MAX)
        groups = _fields(params.get("fields"), SCORE_FIELD_GROUPS, set())
        where, args = _score_conditions(params)
        raw_cursor = params.get("cursor")
        if raw_cursor:
            position = decode_cursor(raw_cursor)
            try:
                cursor_key = (str(position["ts"]), int(position["r"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise BadRequest(f"invalid cursor: {raw_cursor!r}") from exc
            where.append("(timestamp, row_id) < (?, ?)")
            args.extend(cursor_key)
        sql = (
            "SELECT * FROM scores"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY timestamp DESC, row_id DESC LIMIT ?"
        )
        rows = store.query(sql, [*args, limit + 1])
        page = rows[:limit]
        meta: dict[str, Any] = {"limit": limit}
        if len(rows) > limit:
            meta["cursor"] = encode_cursor({"ts": page[-1]["timestamp"], "r": page[-1]["row_id"]})
        return {"data": [score_json(row, groups) for row in page], "meta": meta}

    app.include_router(api)
    _install_admin(app)
    return app


def _take_reject_rule(rules: list[RejectRule]) -> set[str]:
    names: set[str] = set()
    for rule in rules:
        if rule.times is None or rule.times > 0:
            names |= rule.names
            if rule.times is not None:
                rule.times -= 1
    rules[:] = [rule for rule in rules if rule.times is None or rule.times > 0]
    return names


def _score_conditions(params: Any) -> tuple[list[str], list[Any]]:
    """Build the SQL conditions of the v3 scores query filters."""
    where: list[str] = []
    args: list[Any] = []
    trace_ids = _csv(params.get("traceId"))
    session_ids = _csv(params.get("sessionId"))
    observation_ids = _csv(params.get("observationId"))
    experiment_ids = _csv(params.get("experimentId"))
    if observation_ids and not trace_ids:
        raise BadRequest("observationId requires traceId")
    if session_ids and (trace_ids or observation_ids or experiment_ids):
        raise BadRequest("sessionId cannot be combined with traceId, observationId or experimentId")
    if experiment_ids and (trace_ids or observation_ids):
        raise BadRequest("experimentId cannot be combined with traceId or observationId")

    data_types = [value.upper() for value in _csv(params.get("dataType"))]
    lists = {
        "id": _csv(params.get("id")),
        "name": _csv(params.get("name")),
        "upper(source)": [value.upper() for value in _csv(params.get("source"))],
        "data_type": data_types,
        "environment": _csv(params.get("environment")),
        "config_id": _csv(params.get("configId")),
        "queue_id": _csv(params.get("queueId")),
        "trace_id": trace_ids,
        "session_id": session_ids,
        "observation_id": observation_ids,
        "dataset_run_id": experiment_ids,
    }

    if _csv(params.get("authorUserId")):
        # Scores made through this API have no author, so an author filter matches nothing.
        where.append("0")
    for column, values in lists.items():
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)

    for param, operator in (("fromTimestamp", ">="), ("toTimestamp", "<")):
        raw = params.get(param)
        if raw is not None:
            where.append(f"timestamp {operator} ?")
            args.append(iso_ms(parse_datetime(raw, param)))

    value_min, value_max = params.get("valueMin"), params.get("valueMax")
    exact = _csv(params.get("value"))
    if (value_min is not None or value_max is not None) and data_types != ["NUMERIC"]:
        raise BadRequest("valueMin and valueMax require dataType=NUMERIC")
    for raw, operator in ((value_min, ">="), (value_max, "<=")):
        if raw is not None:
            try:
                bound = float(raw)
            except ValueError as exc:
                raise BadRequest(f"valueMin/valueMax must be numbers, got {raw!r}") from exc
            where.append(f"value {operator} ?")
            args.append(bound)

    if exact:
        if len(data_types) != 1 or data_types[0] not in ("NUMERIC", "BOOLEAN", "CATEGORICAL"):
            raise BadRequest("value requires one dataType of NUMERIC, BOOLEAN or CATEGORICAL")
        if data_types[0] == "CATEGORICAL":
            where.append(f"string_value IN ({', '.join('?' * len(exact))})")
            args.extend(exact)
        else:
            numbers = [_exact_number(value, data_types[0]) for value in exact]
            where.append(f"value IN ({', '.join('?' * len(numbers))})")
            args.extend(numbers)

    return where, args


def _exact_number(raw: str, data_type: str) -> float:
    if data_type == "BOOLEAN":
        if raw.lower() not in ("true", "false"):
            raise BadRequest(f"BOOLEAN value must be true or false, got {raw!r}")
        return 1.0 if raw.lower() == "true" else 0.0
    try:
        number = float(raw)
    except ValueError as exc:
        raise BadRequest(f"NUMERIC value must be a number, got {raw!r}") from exc
    if not math.isfinite(number):
        raise BadRequest(f"NUMERIC value must be finite, got {raw!r}")
    return number


def _install_admin(app: FastAPI) -> None:
    """Add the `/_stack/` routes of this server (page shaping, score rejection, data reset)."""
    router = APIRouter(prefix="/_stack", include_in_schema=False)

    @router.get("/config")
    async def get_config() -> PageConfig:
        return app.state.page_config

    @router.post("/config")
    async def set_config(body: PageConfig) -> PageConfig:
        app.state.page_config = body
        return body

    @router.post("/reject_scores")
    async def reject_scores(body: RejectScores) -> dict[str, int]:
        app.state.reject_rules.append(RejectRule(names=set(body.names), times=body.times))
        return {"rules": len(app.state.reject_rules)}

    @router.delete("/reject_scores")
    async def clear_reject_scores() -> dict[str, int]:
        app.state.reject_rules.clear()
        return {"rules": 0}

    @router.delete("/data")
    async def clear_data() -> dict[str, str]:
        app.state.store.clear()
        return {"status": "cleared"}

    app.include_router(router)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `python -m stack.langfuse_server`."""
    parser = argparse.ArgumentParser(description="Local Langfuse-compatible API server.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3030, help="port (default 3030)")
    parser.add_argument(
        "--db",
        type=Path,
        default=Path(os.environ.get(DB_ENV) or DEFAULT_DB),
        help=f"SQLite file (default ${DB_ENV} or {DEFAULT_DB})",
    )
    env_rows = os.environ.get(MAX_PAGE_ROWS_ENV)
    parser.add_argument(
        "--max-page-rows",
        type=int,
        default=int(env_rows) if env_rows else None,
        help=f"cap the rows of a v2 observations page (default ${MAX_PAGE_ROWS_ENV})",
    )
    parser.add_argument(
        "--short-pages", action="store_true", help="serve uneven pages below the limit"
    )
    parser.add_argument(
        "--empty-page-every", type=int, default=None, help="make every Nth page empty (N >= 2)"
    )
    parser.add_argument("--log-level", default="INFO", help="log level (default INFO)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until it is stopped.

    Returns:
        The exit code: 2 when the credentials are not set.
    """
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    public_key = os.environ.get(PUBLIC_KEY_ENV, "")
    secret_key = os.environ.get(SECRET_KEY_ENV, "")
    missing = [
        name
        for name, value in ((PUBLIC_KEY_ENV, public_key), (SECRET_KEY_ENV, secret_key))
        if not value
    ]
    if missing:
        logger.error(
            "missing environment variables %s; set them to the Basic auth keys that "
            "clients must send",
            ", ".join(missing),
        )
        return 2
    import uvicorn

    page_config = PageConfig(
        max_page_rows=args.max_page_rows,
        short_pages=args.short_pages,
        empty_page_every=args.empty_page_every,
    )
    app = create_app(args.db, public_key, secret_key, page_config)
    logger.info(
        "local Langfuse server on http://%s:%d, database %s, pages %s",
        args.host,
        args.port,
        args.db,
        page_config.model_dump(),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
