"""Read a window's tagged root observations through Langfuse's v2 observations API.

Langfuse v4 keeps a trace's name, tags, input and output on its root observation, and
``GET /api/public/v2/observations`` is the read path for them. Every condition goes into the
``filter`` JSON, because a ``startTime`` condition there makes the server ignore the
``fromStartTime`` and ``toStartTime`` query parameters.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import httpx
from langfuse.api import LangfuseAPI
from langfuse.api.commons.types.observation_v2 import ObservationV2
from langfuse.api.core.api_error import ApiError
from langfuse.api.core.request_options import RequestOptions
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any
from tenacity.stop import stop_base
from tenacity.wait import wait_exponential_jitter

from include.langfuse_eval.errors import AuthenticationError, ConfigurationError, TransientError
from include.langfuse_eval.settings import (
    DEFAULT_RETRY_POLICY,
    LANGFUSE_SDK_MAX_RETRIES,
    RetryPolicy,
)
from include.langfuse_eval.window import Window, isoformat_utc, parse_timestamp

log = logging.getLogger(__name__)

MAX_OBSERVATIONS_LIMIT = 1000
"""Largest ``limit`` that the v2 observations endpoint accepts."""

LANGFUSE_MAX_RETRIES = LANGFUSE_SDK_MAX_RETRIES
"""Retries that the SDK makes itself on 408, 409, 429 and 5xx, honouring ``Retry-After``."""

MIN_SPLIT_SPAN = timedelta(seconds=1)
"""Shortest time range that a read splits when the server runs out of its time budget."""

BUDGET_EXCEEDED_STATUS = 422
"""Status of a v2 observations reply when the query ran out of the server's time budget.

NOTE: no Langfuse Cloud reply with this status was observed here. Every 422 of the endpoint is
taken as an exceeded time budget, and a 422 that persists ends at the minimum span.
"""

PLAN_FIELDS = "core"
FETCH_FIELDS = "core,basic,time,io"

MAX_ERROR_BODY_CHARS = 300

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


def request_options(timeout_s: float | None, retry: RetryPolicy) -> RequestOptions:
    """Build the SDK's per-request options: its own retries and, when set, the read timeout.

    Without ``timeout_s`` the client's timeout applies (``LangfuseSettings.timeout_s``).
    """
    options: RequestOptions = {"max_retries": retry.sdk_max_retries}
    if timeout_s is not None:
        if timeout_s <= 0:
            raise ConfigurationError(f"Langfuse timeout {timeout_s!r} s is invalid: use > 0.")
        options["timeout_in_seconds"] = timeout_s  # type: ignore[typeddict-item]
    return options


def _is_tls_error(error: BaseException) -> bool:
    """Tell whether a connection failed in the TLS handshake, such as https to a plain port."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_retryable(error: BaseException) -> bool:
    """Tell whether another call may succeed: transport errors, timeouts, 429 and 5xx.

    A failed TLS handshake is not retried: it means a wrong scheme or certificate, which no
    retry fixes.
    """
    if isinstance(error, httpx.TransportError):
        return not _is_tls_error(error)
    if isinstance(error, ApiError) and error.status_code is not None:
        return error.status_code == 429 or error.status_code >= 500
    return False


def describe_error(error: BaseException) -> str:
    """Describe a failed request by status and body, or by the transport error's type.

    The text contains no request headers, so it never contains the keys.
    """
    if isinstance(error, ApiError):
        body = repr(error.body)
        if len(body) > MAX_ERROR_BODY_CHARS:
            body = body[:MAX_ERROR_BODY_CHARS] + "..."
        return f"HTTP {error.status_code}: {body}"
    detail = str(error) or "no detail"
    return f"{type(error).__name__}: {detail}"


def _retry_after_s(error: BaseException | None) -> float | None:
    if not isinstance(error, ApiError) or not error.headers:
        return None
    headers = {key.lower(): value for key, value in error.headers.items()}
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, TypeError, ValueError):
        return None


class _Wait:
    """Jittered exponential wait, raised to a reply's ``Retry-After`` up to the cap."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = wait_exponential_jitter(
            initial=policy.initial_wait_s, max=policy.max_wait_s, jitter=policy.initial_wait_s
        )

    def __call__(self, state: RetryCallState) -> float:
        delay = min(self.backoff(state), self.policy.max_wait_s)
        error = state.outcome.exception() if state.outcome else None
        retry_after = _retry_after_s(error)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.policy.max_wait_s))
        return delay


class _StopAfterWaiting(stop_base):
    """Stop when the next wait would take the summed waits past a budget."""

    def __init__(self, max_total_wait_s: float) -> None:
        self.max_total_wait_s = max_total_wait_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.idle_for + retry_state.upcoming_sleep > self.max_total_wait_s


def _call_once(operation: Callable[..., T], what: str, kwargs: dict[str, Any]) -> T:
    try:
        return operation(**kwargs)
    except httpx.TransportError as error:
        if _is_tls_error(error):
            raise ConfigurationError(
                f"The TLS handshake with Langfuse failed while trying to {what} "
                f"({describe_error(error)}): check the scheme of the Langfuse connection's host "
                "(http:// for a server without TLS) and its certificate."
            ) from error
        raise
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


def call_langfuse(
    operation: Callable[..., T],
    /,
    *,
    what: str,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    **kwargs: Any,
) -> T:
    """Run one SDK request, retry what may pass, and classify what fails.

    Transport errors, timeouts and the 429 and 5xx replies that the SDK's own retries gave up
    on are retried with jittered exponential waits, within the attempts and the wait budget of
    ``retry_policy``. Each retry is logged at warning level. Rejected credentials and rejected
    requests fail at once. Other API errors (such as 422) propagate unchanged.

    Args:
        operation: The SDK method.
        what: What the request does, for messages, such as ``"read observations"``.
        retry_policy: Attempts and waits of the retries.
        **kwargs: Arguments of ``operation``.

    Raises:
        AuthenticationError: HTTP 401 or 403.
        ConfigurationError: HTTP 400 or 404.
        TransientError: The last attempt failed with a retryable error, so Airflow's task
            retry takes over.
    """

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "Langfuse request to %s failed on attempt %d of %d (%s), retrying in %.2f s",
            what,
            state.attempt_number,
            retry_policy.attempts,
            describe_error(error) if error else "no error",
            state.upcoming_sleep,
        )

    retrying = Retrying(
        stop=stop_any(
            stop_after_attempt(retry_policy.attempts),
            _StopAfterWaiting(retry_policy.max_total_wait_s),
        ),
        wait=_Wait(retry_policy),
        retry=retry_if_exception(_is_retryable),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        return retrying(_call_once, operation, what, kwargs)
    except (httpx.TransportError, ApiError) as error:
        if not _is_retryable(error):
            raise
        attempts = retrying.statistics.get("attempt_number", 1)
        raise TransientError(
            f"Langfuse request to {what} failed after {attempts} attempt(s): "
            f"{describe_error(error)}. Airflow's task retry may succeed later."
        ) from error


@dataclass(frozen=True, slots=True)
class CoreRow:
    """The fields of an observation row that planning uses, from the ``core`` field group."""

    id: str
    trace_id: str | None
    start_time: datetime


@dataclass(frozen=True)
class _CorePageMeta:
    cursor: str | None


@dataclass(frozen=True)
class _CorePage:
    data: list[CoreRow]
    meta: _CorePageMeta


def get_core_page(
    api: LangfuseAPI,
    *,
    fields: str,
    limit: int,
    cursor: str | None,
    filter: str,
    request_options: RequestOptions,
) -> _CorePage:
    """Read one page of v2 observations, keeping only the fields planning uses.

    The SDK turns every row into its full model through a generic converter that costs about
    0.5 ms per row here: 50 s of a 100,000-trace day for three fields per row. This reads the
    same page through the SDK's own HTTP client (base URL, keys, retries, timeouts) and takes
    the three fields from the JSON. Failures raise the SDK's ``ApiError``, as ``get_many``
    does. A stand-in client without that HTTP client is read through ``get_many``.

    NOTE: the SDK's HTTP client is its private ``_client_wrapper.httpx_client``; a new SDK
    version has to be checked against it.
    """
    wrapper = getattr(api, "_client_wrapper", None)
    if wrapper is None:
        page = api.observations.get_many(
            fields=fields,
            limit=limit,
            cursor=cursor,
            filter=filter,
            request_options=request_options,
        )
        rows = [CoreRow(row.id, row.trace_id, row.start_time) for row in page.data]
        return _CorePage(rows, _CorePageMeta(page.meta.cursor))
    response = wrapper.httpx_client.request(
        "api/public/v2/observations",
        method="GET",
        params={"fields": fields, "limit": limit, "cursor": cursor, "filter": filter},
        request_options=request_options,
    )
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if not 200 <= response.status_code < 300:
        raise ApiError(status_code=response.status_code, headers=dict(response.headers), body=body)
    rows = [
        CoreRow(item["id"], item.get("traceId"), parse_timestamp(item["startTime"]))
        for item in body.get("data") or []
    ]
    return _CorePage(rows, _CorePageMeta((body.get("meta") or {}).get("cursor")))


def iter_observations(
    api: LangfuseAPI,
    *,
    filter_json: str,
    fields: str,
    limit: int = MAX_OBSERVATIONS_LIMIT,
    timeout_s: float | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> Iterator[ObservationV2 | CoreRow]:
    """Yield every observation that matches a filter, following the cursor to its end.

    Pages may be short or empty while more rows remain, so only a missing cursor ends the walk.
    With ``fields`` of only the core group, the rows are :class:`CoreRow` values read by
    :func:`get_core_page`; otherwise they are the SDK's ``ObservationV2`` models.

    Args:
        api: The SDK client.
        filter_json: The ``filter`` JSON.
        fields: The field groups to read.
        limit: Rows per page, 1 to 1000.
        timeout_s: Read timeout of each request, or None for the client's timeout.
        retry_policy: Retries of each request, see :func:`call_langfuse`.
    """
    if not 1 <= limit <= MAX_OBSERVATIONS_LIMIT:
        raise ConfigurationError(
            f"Observation page limit {limit} is invalid: use 1 to {MAX_OBSERVATIONS_LIMIT}."
        )
    options = request_options(timeout_s, retry_policy)
    cursor: str | None = None
    requests = 0
    core_only = fields == PLAN_FIELDS
    while True:
        response = call_langfuse(
            partial(get_core_page, api) if core_only else api.observations.get_many,
            what="read observations",
            retry_policy=retry_policy,
            fields=fields,
            limit=limit,
            cursor=cursor,
            filter=filter_json,
            request_options=options,
        )
        requests += 1
        yield from response.data
        cursor = response.meta.cursor
        if not cursor:
            log.debug("Read observations in %d requests", requests)
            return


def _split_point(start: datetime, end: datetime) -> datetime:
    """Return the middle of a range, on a whole millisecond, the server's time precision."""
    middle = start + (end - start) / 2
    return middle.replace(microsecond=middle.microsecond // 1000 * 1000)


def iter_time_range(
    api: LangfuseAPI,
    *,
    tag: str,
    start: datetime,
    end: datetime,
    end_inclusive: bool,
    fields: str,
    limit: int = MAX_OBSERVATIONS_LIMIT,
    timeout_s: float | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    min_split_span: timedelta = MIN_SPLIT_SPAN,
) -> Iterator[ObservationV2 | CoreRow]:
    """Yield the tagged root observations of a start-time range, newest first, page by page.

    Rows are yielded as each page arrives, so a caller that folds them into a summary keeps
    one page at a time in memory. When the server runs out of its time budget (HTTP 422, on
    any page of the walk), the range is read again as two halves, newer half first, and
    halves are split again as needed. The rows yielded before the 422 come again from the
    halves, so a caller must treat a row seen twice as one (the planning fold and
    :func:`dedupe_roots` do).

    Args:
        api: The SDK client.
        tag: Trace tag the rows must carry.
        start: Inclusive start of the range.
        end: End of the range.
        end_inclusive: Whether ``end`` itself belongs to the range.
        fields: The field groups to read.
        limit: Rows per page.
        timeout_s: Read timeout of each request, or None for the client's timeout.
        retry_policy: Retries of each request, see :func:`call_langfuse`.
        min_split_span: A range this short or shorter is not split again.

    Raises:
        TransientError: A range of at most ``min_split_span`` still got HTTP 422, or a request
            kept failing.
    """
    bound = {"end_at_or_before": end} if end_inclusive else {"end_before": end}
    filter_json = build_filter(tag, start_at_or_after=start, **bound)
    try:
        yield from iter_observations(
            api,
            filter_json=filter_json,
            fields=fields,
            limit=limit,
            timeout_s=timeout_s,
            retry_policy=retry_policy,
        )
        return
    except ApiError as error:
        if error.status_code != BUDGET_EXCEEDED_STATUS:
            raise
        described = describe_error(error)
    span = end - start
    if span <= min_split_span:
        raise TransientError(
            f"Langfuse could not read observations from {isoformat_utc(start)} to "
            f"{isoformat_utc(end)} within its time budget ({described}), and the range is "
            f"already at the minimum span of {min_split_span.total_seconds():g} s. The server "
            "is overloaded, so Airflow's task retry may succeed later."
        )
    middle = _split_point(start, end)
    log.warning(
        "Langfuse ran out of its time budget reading observations from %s to %s (%s). "
        "Reading the range as two halves split at %s",
        isoformat_utc(start),
        isoformat_utc(end),
        described,
        isoformat_utc(middle),
    )
    shared: dict[str, Any] = {
        "tag": tag,
        "fields": fields,
        "limit": limit,
        "timeout_s": timeout_s,
        "retry_policy": retry_policy,
        "min_split_span": min_split_span,
    }
    yield from iter_time_range(api, start=middle, end=end, end_inclusive=end_inclusive, **shared)
    yield from iter_time_range(api, start=start, end=middle, end_inclusive=False, **shared)


def read_time_range(api: LangfuseAPI, **kwargs: Any) -> list[ObservationV2]:
    """Return the rows of :func:`iter_time_range` as a list, for a range of one page's size."""
    return list(iter_time_range(api, **kwargs))


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


@dataclass(frozen=True, slots=True)
class TraceRef:
    """A trace of the window and the start-time range of its root observations."""

    trace_id: str
    newest_start: datetime
    oldest_start: datetime


def list_window_traces(
    api: LangfuseAPI,
    *,
    tag: str,
    window: Window,
    timeout_s: float | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    min_split_span: timedelta = MIN_SPLIT_SPAN,
) -> list[TraceRef]:
    """List every tagged trace in the window, newest first.

    This is the planning pass: it reads the core field group only, so it stays cheap on a
    large day. A trace with several root rows appears once, with the range of their start
    times, so the page that owns it fetches all of them. The read splits its time range when
    the server runs out of its time budget, see :func:`iter_time_range`.

    Args:
        api: The SDK client.
        tag: Trace tag of the evaluated traces.
        window: The run's window.
        timeout_s: Read timeout of each request, or None for the client's timeout.
        retry_policy: Retries of each request, see :func:`call_langfuse`.
        min_split_span: Shortest range that a 422 reply splits.
    """
    rows = iter_time_range(
        api,
        tag=tag,
        start=window.start,
        end=window.end,
        end_inclusive=False,
        fields=PLAN_FIELDS,
        timeout_s=timeout_s,
        retry_policy=retry_policy,
        min_split_span=min_split_span,
    )
    # One small object per trace, replaced only for a trace with several roots: at 100,000
    # traces this fold is most of the planning task's memory.
    refs: dict[str, TraceRef] = {}
    for observation in rows:
        trace_id, start = observation.trace_id, observation.start_time
        if not trace_id:
            continue
        ref = refs.get(trace_id)
        if ref is None:
            refs[trace_id] = TraceRef(trace_id, start, start)
        elif start > ref.newest_start or start < ref.oldest_start:
            refs[trace_id] = TraceRef(
                trace_id, max(ref.newest_start, start), min(ref.oldest_start, start)
            )
    return list(refs.values())
