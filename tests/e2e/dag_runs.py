"""Helpers that run the DAG under ``dag.test()`` and inspect the local stack afterwards."""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections import Counter
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from langfuse.api import LangfuseAPI

from include.langfuse_eval.scores import read_trace_scores

DAG_ID = "langfuse_external_eval"

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / f"{DAG_ID}.py"

_run_counter = itertools.count(1)


@cache
def default_params() -> dict[str, Any]:
    """Return the param defaults written in the DAG file."""
    spec = importlib.util.spec_from_file_location("dag_file_for_defaults", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: param.value for name, param in module.PARAMS.items()}


def window_end_after(moment: datetime) -> datetime:
    """Return the next 05:00 UTC after ``moment``: the run that evaluates its window."""
    end = moment.replace(hour=5, minute=0, second=0, microsecond=0)
    return end if end > moment else end + timedelta(days=1)


def run_dag(
    dag: Any,
    local_stack: Any,
    conf: dict[str, Any],
    run_after: datetime,
    env: dict[str, str] | None = None,
) -> Any:
    """Run the DAG once with ``dag.test()`` and return the DagRun.

    ``dag.test()`` reuses an existing run, conf included, when the logical date repeats, so
    each call moves the logical date a few seconds past ``run_after``. A manual run's window
    is the last complete one before its logical date, so the window stays the same.
    Params set by an earlier ``dag.test()`` in the same process carry over to later runs, so
    every call passes every param, the defaults of the DAG file filled in. ``env`` overrides
    the connection variables.
    """
    conf = {**default_params(), **conf}
    logical_date = run_after + timedelta(seconds=next(_run_counter))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**local_stack.connection_env(), **(env or {})}.items():
            patch.setenv(name, value)
        return dag.test(run_after=logical_date, logical_date=logical_date, run_conf=conf)


def scores_by_trace(api: LangfuseAPI, trace_ids: list[str]) -> dict[str, Counter[str]]:
    """Count the scores of each trace by name."""
    return {
        trace_id: Counter(score.name for score in scores)
        for trace_id, scores in read_trace_scores(api, trace_ids).items()
    }


def stored_outputs(api: LangfuseAPI, tag: str) -> dict[str, Any]:
    """Return the raw output of every root observation with ``tag``, by trace id."""
    condition = {"type": "arrayOptions", "column": "traceTags", "operator": "all of"}
    response = api.observations.get_many(
        fields="core,io", limit=1000, filter=json.dumps([{**condition, "value": [tag]}])
    )
    return {observation.trace_id: observation.output for observation in response.data}


def judge_requests(local_stack: Any) -> int:
    """Return how many chat completions the offline judge has served."""
    stats = httpx.get(f"{local_stack.judge.base_url}/_judge/stats", timeout=10).json()
    return sum(stats["requests"].values())


def score_writes(local_stack: Any) -> int:
    """Return how many score batches the local Langfuse server has received."""
    stats = httpx.get(f"{local_stack.langfuse.base_url}/_stack/stats", timeout=10).json()
    return stats["requests"].get("POST /api/public/scores", 0)


def run_summary(run_id: str) -> dict[str, Any] | None:
    """Return the summary that ``summarize_run`` returned in a run, or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=run_id, dag_ids=DAG_ID, task_ids="summarize_run", key="return_value"
        )
        row = session.scalars(query).first()
        return XComModel.deserialize_value(row) if row is not None else None
