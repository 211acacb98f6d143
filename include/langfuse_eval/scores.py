"""Build score requests with deterministic ids and write them synchronously to Langfuse.

Langfuse replaces a score, instead of adding one, when it receives the same ``id``, ``name``
and UTC day of ``timestamp`` again. So every score gets an id derived from its trace and name,
and the trace's start time as its timestamp: a retry, a backfill or a forced re-run of a window
overwrites the same scores in place.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from langfuse.api import LangfuseAPI
from langfuse.api.core.api_error import ApiError
from langfuse.api.scores.types.create_score_batch_results import CreateScoreBatchResults
from langfuse.api.scores.types.create_score_request import CreateScoreRequest

from include.langfuse_eval.errors import ScoreWriteRejected
from include.langfuse_eval.observations import call_langfuse, request_options
from include.langfuse_eval.planning import TraceItem
from include.langfuse_eval.settings import DEFAULT_RETRY_POLICY, RetryPolicy
from include.langfuse_eval.verdicts import Verdict
from include.langfuse_eval.window import parse_timestamp

log = logging.getLogger(__name__)

SCORE_ID_NAMESPACE = uuid.UUID("6f1c2a52-8d4b-4f3e-9a57-0c1f5e2b7d90")
"""Namespace of the UUIDv5 score ids. Changing it would duplicate every score already written."""

SCORE_BATCH_SIZE = 1000
"""Scores per ``POST /api/public/scores``. A batch that the server refuses as too large
(HTTP 413) is split in halves and sent again."""
TRACE_ID_QUERY_CHARS = 7000
"""Budget of the URL-encoded ``trace_id`` list of one v3 scores read: with 32-character ids
it contains 200 of them, and the request line stays under the 8 KiB that common proxies accept."""
MAX_COMMENT_CHARS = 2000
MAX_NAMED_REJECTIONS = 20
"""Rejected scores that a :class:`ScoreWriteRejected` message names one by one."""

_ERROR_INDEX = re.compile(r"^\s*\w*\[(\d+)\]")
"""Position of the rejected score in its batch, as in ``scores[3]: ...``.

NOTE: this is the message form of the local server. Messages of another form are reported
as they are.
"""

DATA_TYPES = {"tone": "CATEGORICAL", "joyfulness": "NUMERIC"}
"""Score data type by score name."""


def score_id(trace_id: str, name: str) -> str:
    """Return the deterministic id of the score ``name`` on a trace."""
    return str(uuid.uuid5(SCORE_ID_NAMESPACE, f"{trace_id}:{name}"))


@dataclass(frozen=True)
class RunContext:
    """Run facts that every score's metadata records."""

    evaluator_version: str
    judge_model: str
    dag_run_id: str | None
    window_start: str
    window_end: str

    def metadata(self) -> dict[str, Any]:
        """Return the metadata fields of the run."""
        return {
            "evaluator_version": self.evaluator_version,
            "judge_model": self.judge_model,
            "dag_run_id": self.dag_run_id,
            "window_start": self.window_start,
            "window_end": self.window_end,
        }


def _valid_value(verdict: Verdict) -> bool:
    data_type = DATA_TYPES.get(verdict.name)
    if data_type == "NUMERIC":
        value = verdict.value
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0.0 <= value <= 1.0
        )
    if data_type == "CATEGORICAL":
        return isinstance(verdict.value, str) and bool(verdict.value)
    return False


def build_score_requests(
    items: list[TraceItem],
    verdicts: list[Verdict],
    context: RunContext,
    timestamps: dict[str, dict[str, str]] | None = None,
) -> list[CreateScoreRequest]:
    """Turn successful verdicts into score requests.

    Verdicts with an error, or with a value outside the score's range, produce no request.
    A score's timestamp is the one of the score it replaces, from ``timestamps`` (by trace id,
    then score name), else the trace's start time.

    Raises:
        ValueError: A verdict names a trace that is not on the page or a score name that
            has no data type.
    """
    by_trace = {item.trace_id: item for item in items}
    requests = []
    for verdict in verdicts:
        if verdict.name not in DATA_TYPES:
            raise ValueError(f"Score name {verdict.name!r} has no data type.")
        item = by_trace.get(verdict.trace_id)
        if item is None:
            raise ValueError(f"Verdict for trace {verdict.trace_id} has no trace on this page.")
        if not verdict.ok:
            continue
        if not _valid_value(verdict):
            log.warning(
                "Score %s on trace %s has an invalid value %r; not written",
                verdict.name,
                verdict.trace_id,
                verdict.value,
            )
            continue
        comment = verdict.comment[:MAX_COMMENT_CHARS] if verdict.comment else None
        requests.append(
            CreateScoreRequest(
                id=score_id(item.trace_id, verdict.name),
                trace_id=item.trace_id,
                name=verdict.name,
                value=verdict.value,
                data_type=DATA_TYPES[verdict.name],
                comment=comment,
                metadata={**verdict.metadata, **context.metadata()},
                environment=item.environment or None,
                timestamp=parse_timestamp(
                    (timestamps or {}).get(item.trace_id, {}).get(verdict.name, item.start_time)
                ),
            )
        )
    return requests


@dataclass
class WriteReport:
    """How many scores were written, by name."""

    written: dict[str, int] = field(default_factory=dict)
    requests: int = 0


def describe_rejection(batch: list[CreateScoreRequest], message: str) -> str:
    """Name the score that a 207 error message is about.

    When the message starts with the score's position in the batch (``scores[3]: ...``), the
    score's trace id and name are put first. Otherwise the message is returned as it is.
    """
    match = _ERROR_INDEX.match(message)
    if match is not None:
        index = int(match.group(1))
        if 0 <= index < len(batch):
            score = batch[index]
            return f"trace {score.trace_id} score {score.name!r} ({message})"
    return message


def write_scores(
    api: LangfuseAPI,
    scores: list[CreateScoreRequest],
    batch_size: int = SCORE_BATCH_SIZE,
    *,
    timeout_s: float | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> WriteReport:
    """Send scores in synchronous batches of ``POST /api/public/scores``.

    A batch refused with HTTP 413 is split in halves until the server takes it. Every batch
    is sent, also after a batch was only partly accepted, so that one rejected
    score does not hold back the others. Requests are retried as :func:`call_langfuse`
    describes. This is safe because a score sent again with its id replaces itself.

    Args:
        api: The SDK client.
        scores: The score requests, from :func:`build_score_requests`.
        batch_size: Scores per request.
        timeout_s: Read timeout of each request, or None for the client's timeout.
        retry_policy: Retries of each request.

    Raises:
        ScoreWriteRejected: Some batches were only partly accepted (HTTP 207). The message
            names the rejected scores by trace id and name where the server's errors give
            their position, else by the server's messages. A task retry sends every score
            again: the accepted ones are replaced in place.
        TransientError: A request kept failing with a timeout, a transport error, 429 or 5xx.
    """
    if batch_size < 1:
        raise ValueError(f"Score batch size {batch_size} is invalid: use 1 or more.")
    options = request_options(timeout_s, retry_policy)
    report = WriteReport()
    rejections: list[str] = []
    rejected = 0
    pending = [scores[offset : offset + batch_size] for offset in range(0, len(scores), batch_size)]
    while pending:
        batch = pending.pop(0)
        try:
            reply = call_langfuse(
                api.scores.create,
                what="write scores",
                retry_policy=retry_policy,
                request=batch,
                request_options=options,
            )
        except ApiError as error:
            if error.status_code != 413:
                raise
            if len(batch) < 2:
                raise ScoreWriteRejected(
                    f"Langfuse rejected the {batch[0].name!r} score of trace {batch[0].trace_id} "
                    "as too large (HTTP 413), even alone."
                ) from error
            half = len(batch) // 2
            log.info(
                "Langfuse rejected %d scores as too large (HTTP 413); sending them in halves",
                len(batch),
            )
            pending[:0] = [batch[:half], batch[half:]]
            report.requests += 1
            continue
        report.requests += 1
        if isinstance(reply, CreateScoreBatchResults) and reply.rejected:
            rejected += reply.rejected
            rejections.extend(describe_rejection(batch, error.message) for error in reply.errors)
            log.warning(
                "Langfuse accepted %d and rejected %d scores of a batch of %d",
                reply.accepted,
                reply.rejected,
                len(batch),
            )
            continue
        for score in batch:
            report.written[score.name] = report.written.get(score.name, 0) + 1
    if rejected:
        named = "; ".join(rejections[:MAX_NAMED_REJECTIONS])
        more = len(rejections) - MAX_NAMED_REJECTIONS
        if more > 0:
            named += f"; and {more} more"
        raise ScoreWriteRejected(
            f"Langfuse rejected {rejected} of {len(scores)} scores: {named}. The other "
            "scores were written. A retry sends all scores again and replaces them in place."
        )
    return report


def score_trace_id(score: Any) -> str | None:
    """Return the trace id of a v3 score read with ``fields=subject``."""
    subject = getattr(score, "subject", None)
    if subject is None:
        return None
    if subject.kind == "trace":
        return subject.id
    return getattr(subject, "trace_id", None)


def trace_id_chunks(trace_ids: list[str], budget: int = TRACE_ID_QUERY_CHARS) -> list[list[str]]:
    """Split trace ids into lists whose URL-encoded, comma-joined form fits ``budget``."""
    chunks: list[list[str]] = []
    chunk: list[str] = []
    used = 0
    for trace_id in trace_ids:
        # The comma before each further id is encoded as %2C.
        cost = len(quote(trace_id, safe="")) + (3 if chunk else 0)
        if chunk and used + cost > budget:
            chunks.append(chunk)
            chunk, used, cost = [], 0, cost - 3
        chunk.append(trace_id)
        used += cost
    if chunk:
        chunks.append(chunk)
    return chunks


def read_trace_scores(
    api: LangfuseAPI,
    trace_ids: list[str],
    *,
    query_chars: int = TRACE_ID_QUERY_CHARS,
    timeout_s: float | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> dict[str, list[Any]]:
    """Read every score of the given traces through the v3 scores API, by trace id.

    Reads other than v2 observations can lag about 10 minutes behind writes on Langfuse Cloud.

    Args:
        api: The SDK client.
        trace_ids: The traces.
        query_chars: Budget of the encoded trace id list of one request, see
            :func:`trace_id_chunks`.
        timeout_s: Read timeout of each request, or None for the client's timeout.
        retry_policy: Retries of each request, see :func:`call_langfuse`.
    """
    options = request_options(timeout_s, retry_policy)
    scores: dict[str, list[Any]] = {trace_id: [] for trace_id in trace_ids}
    for chunk in trace_id_chunks(trace_ids, query_chars):
        cursor: str | None = None
        while True:
            page = call_langfuse(
                api.scores.get_many,
                what="read scores",
                retry_policy=retry_policy,
                trace_id=",".join(chunk),
                fields="details,subject",
                limit=100,
                cursor=cursor,
                request_options=options,
            )
            for score in page.data:
                trace_id = score_trace_id(score)
                if trace_id is not None:
                    scores.setdefault(trace_id, []).append(score)
            cursor = getattr(page.meta, "cursor", None)
            if not cursor:
                break
    return scores
