"""Read a window's tagged root observations through Langfuse's v2 observations API.

Langfuse v4 keeps a trace's name, tags, input and output on its root observation, and
``GET /api/public/v2/observations`` is the read path for them. Every condition goes into the
``filter`` JSON, because a ``startTime`` condition there makes the server ignore the
``fromStartTime`` and ``toStartTime`` query parameters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from langfuse.api import LangfuseAPI
from langfuse.api.commons.types.observation_v2 import ObservationV2
from langfuse.api.core.api_error import ApiError

from include.langfuse_eval.errors import AuthenticationError, ConfigurationError
from include.langfuse_eval.settings import LANGFUSE_READ_TIMEOUT_S
from include.langfuse_eval.window import Window, isoformat_utc

log = logging.getLogger(__name__)

MAX_OBSERVATIONS_LIMIT = 1000
"""Largest ``limit`` that the v2 observations endpoint accepts."""

LANGFUSE_MAX_RETRIES = 3
"""Retries that the SDK makes itself on 408, 409, 429 and 5xx, honouring ``Retry-After``."""

PLAN_FIELDS = "core"
FETCH_FIELDS = "core,basic,time,io"

T = TypeVar("T")


def build_filter(
    tag: str,
    *,
    start_at_or_after: datetime,
    end_before: datetime | None = None,
    end_at_or_before: datetime | None = None,
) -> str:
    """Build the ``filter`` JSON for root observations that carry ``tag`` in a time range.

    Exactly one of ``end_before`` (exclusive) and ``end_at_or_before`` (inclusive) is set.
    """
    if (end_before is None) == (end_at_or_before is None):
        raise ValueError("Set exactly one of end_before and end_at_or_before.")
    conditions: list[dict[str, Any]] = [
        {"type": "arrayOptions", "column": "traceTags", "operator": "all of", "value": [tag]},
        {"type": "boolean", "column": "isRootObservation", "operator": "=", "value": True},
        {
            "type": "datetime",
            "column": "startTime",
            "operator": ">=",
            "value": isoformat_utc(start_at_or_after, "microseconds"),
        },
    ]
    if end_before is not None:
        end_condition = {"operator": "<", "value": isoformat_utc(end_before, "microseconds")}
    else:
        assert end_at_or_before is not None
        end_condition = {"operator": "<=", "value": isoformat_utc(end_at_or_before, "microseconds")}
    conditions.append({"type": "datetime", "column": "startTime", **end_condition})
    return json.dumps(conditions)


def call_langfuse(operation: Callable[..., T], /, *, what: str, **kwargs: Any) -> T:
    """Run one SDK request and turn rejected credentials and settings into permanent errors.

    Other API errors and transport errors propagate unchanged, so the caller's retry policy
    (Airflow task retries) decides about them.
    """
    try:
        return operation(**kwargs)
    except ApiError as error:
        if error.status_code in (401, 403):
            raise AuthenticationError(
                f"Langfuse rejected the credentials while trying to {what} (HTTP "
                f"{error.status_code}): check the host, the public key (login) and the secret "
                "key (password) of the Langfuse connection."
            ) from error
        if error.status_code in (400, 404):
            raise ConfigurationError(
                f"Langfuse rejected the request to {what} (HTTP {error.status_code}): "
                f"{error.body!r}. Check the host of the Langfuse connection and the run "
                "parameters."
            ) from error
        raise


def iter_observations(
    api: LangfuseAPI,
    *,
    filter_json: str,
    fields: str,
    limit: int = MAX_OBSERVATIONS_LIMIT,
    timeout_s: float = LANGFUSE_READ_TIMEOUT_S,
) -> Iterator[ObservationV2]:
    """Yield every observation that matches a filter, following the cursor to its end.

    Pages may be short or empty while more rows remain, so only a missing cursor ends the walk.
    """
    if not 1 <= limit <= MAX_OBSERVATIONS_LIMIT:
        raise ConfigurationError(
            f"Observation page limit {limit} is invalid: use 1 to {MAX_OBSERVATIONS_LIMIT}."
        )
    cursor: str | None = None
    requests = 0
    while True:
        response = call_langfuse(
            api.observations.get_many,
            what="read observations",
            fields=fields,
            limit=limit,
            cursor=cursor,
            filter=filter_json,
            request_options={
                "timeout_in_seconds": int(timeout_s),
                "max_retries": LANGFUSE_MAX_RETRIES,
            },
        )
        requests += 1
        yield from response.data
        cursor = response.meta.cursor
        if not cursor:
            log.debug("Read observations in %d requests", requests)
            return


def _freshness(observation: ObservationV2) -> tuple[float, float]:
    updated = observation.updated_at.timestamp() if observation.updated_at else 0.0
    return (updated, observation.start_time.timestamp())


def _has_output(observation: ObservationV2) -> bool:
    return observation.output not in (None, "")


def dedupe_roots(observations: list[ObservationV2]) -> dict[str, ObservationV2]:
    """Reduce root observations to one per trace.

    Duplicated rows of one observation keep the newest ``updatedAt``. Of several roots of one
    trace, the one with an output wins, then the newest. Returns the roots by trace id in the
    order in which each trace was first seen.
    """
    by_id: dict[str, ObservationV2] = {}
    for observation in observations:
        kept = by_id.get(observation.id)
        if kept is None or _freshness(observation) > _freshness(kept):
            by_id[observation.id] = observation

    by_trace: dict[str, ObservationV2] = {}
    for observation in by_id.values():
        kept = by_trace.get(observation.trace_id)
        rank = (_has_output(observation), *_freshness(observation))
        if kept is None or rank > (_has_output(kept), *_freshness(kept)):
            by_trace[observation.trace_id] = observation
    return by_trace


@dataclass(frozen=True)
class TraceRef:
    """A trace of the window and the start-time range of its root observations."""

    trace_id: str
    newest_start: datetime
    oldest_start: datetime


def list_window_traces(api: LangfuseAPI, *, tag: str, window: Window) -> list[TraceRef]:
    """List every tagged trace in the window, newest first.

    This is the planning pass: it reads the core field group only, so it stays cheap on a
    large day. A trace with several root rows appears once, with the range of their start
    times, so the page that owns it fetches all of them.
    """
    filter_json = build_filter(tag, start_at_or_after=window.start, end_before=window.end)
    ranges: dict[str, list[datetime]] = {}
    for observation in iter_observations(api, filter_json=filter_json, fields=PLAN_FIELDS):
        if not observation.trace_id:
            continue
        bounds = ranges.setdefault(observation.trace_id, [observation.start_time] * 2)
        bounds[0] = max(bounds[0], observation.start_time)
        bounds[1] = min(bounds[1], observation.start_time)
    return [TraceRef(trace_id, newest, oldest) for trace_id, (newest, oldest) in ranges.items()]
