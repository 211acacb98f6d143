"""Decide which traces of a page still need each judge, from the scores already on them.

A page reads its traces' existing scores before judging. A trace that already has a score of
a name written by the same evaluator version is not judged again for that name, so a retried
task, a cleared run or a backfill over scored days makes no judge calls. A score written by
another evaluator version is judged again and overwritten in place, because score ids do not
depend on the version. ``force`` judges everything again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from langfuse.api import LangfuseAPI

from include.langfuse_eval.scores import read_trace_scores
from include.langfuse_eval.window import isoformat_utc

log = logging.getLogger(__name__)


@dataclass
class JudgingPlan:
    """The trace ids that each judge still has to judge, and those it can skip."""

    pending: dict[str, list[str]] = field(default_factory=dict)
    already_scored: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Serialize for XCom."""
        return {"pending": self.pending, "already_scored": self.already_scored}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> JudgingPlan:
        """Parse the form written by :meth:`to_dict`."""
        return cls(
            pending={name: list(ids) for name, ids in value["pending"].items()},
            already_scored={name: list(ids) for name, ids in value["already_scored"].items()},
        )


@dataclass
class ExistingScores:
    """The evaluator version and timestamp of each score name on each trace."""

    versions: dict[str, dict[str, str | None]] = field(default_factory=dict)
    timestamps: dict[str, dict[str, str]] = field(default_factory=dict)


def read_existing_scores(api: LangfuseAPI, trace_ids: list[str]) -> ExistingScores:
    """Read the scores already on the traces: their evaluator versions and timestamps.

    A rewrite reuses an existing score's timestamp, because Langfuse replaces a score only
    when id, name and the UTC day of the timestamp all match.
    """
    existing = ExistingScores()
    for trace_id, scores in read_trace_scores(api, trace_ids).items():
        for score in scores:
            metadata = score.metadata if isinstance(score.metadata, dict) else {}
            version = metadata.get("evaluator_version")
            existing.versions.setdefault(trace_id, {})[score.name] = (
                str(version) if version is not None else None
            )
            if score.timestamp is not None:
                existing.timestamps.setdefault(trace_id, {})[score.name] = isoformat_utc(
                    score.timestamp, "microseconds"
                )
    return existing


def plan_judging(
    trace_ids: Iterable[str],
    *,
    evaluators: Iterable[str],
    existing: dict[str, dict[str, str | None]],
    evaluator_version: str,
    force: bool,
) -> JudgingPlan:
    """Split a page's trace ids, per judge, into those to judge and those already scored."""
    plan = JudgingPlan()
    ids = list(trace_ids)
    for name in evaluators:
        pending = plan.pending.setdefault(name, [])
        skipped = plan.already_scored.setdefault(name, [])
        for trace_id in ids:
            version = existing.get(trace_id, {}).get(name, "")
            if not force and version == evaluator_version:
                skipped.append(trace_id)
            else:
                pending.append(trace_id)
    for name, skipped in plan.already_scored.items():
        if skipped:
            log.info(
                "%d traces already have a %s score from evaluator version %s; not judged again",
                len(skipped),
                name,
                evaluator_version,
            )
    return plan
