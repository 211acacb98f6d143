"""Integrity checks of the DAG package: parsing, pools, retries, shape, params, serialization.

The DAG is parsed with ``DagBag``, the class the DAG processor uses, so these tests get the
same SDK objects as production. ``AIRFLOW__CORE__UNIT_TEST_MODE`` stays unset because it
replaces cron schedules with another timetable.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.models.dagwarning import DagWarningType
from airflow.sdk import DAG, Param
from airflow.sdk.definitions.taskgroup import MappedTaskGroup
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.definitions.dag import SerializedDAG
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.interval import CronDataIntervalTimetable as CoreCronDataIntervalTimetable

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"
DAG_FILE = DAGS_FOLDER / "langfuse_external_eval.py"
DAG_ID = DAG_FILE.stem
JUDGE_POOL = "langfuse_eval_judge"
LANGFUSE_POOL = "langfuse_eval_api"
KNOWN_POOLS = frozenset({"default_pool", JUDGE_POOL, LANGFUSE_POOL})

GROUP_ID = "evaluate_page"
FETCH = f"{GROUP_ID}.fetch_page"
JUDGE_TONE = f"{GROUP_ID}.judge_tone"
JUDGE_JOY = f"{GROUP_ID}.judge_joyfulness"
PUSH = f"{GROUP_ID}.push_scores"
SUMMARY = "summarize_run"
GROUP_TASKS = (FETCH, JUDGE_TONE, JUDGE_JOY, PUSH)
TASK_IDS = ("resolve_window", "plan_pages", *GROUP_TASKS, SUMMARY)
RETRYING_TASKS = tuple(task_id for task_id in TASK_IDS if task_id != SUMMARY)

# Direct upstream tasks, including the edges that XCom arguments add (the window and the page
# travel to the tasks of the group).
UPSTREAM = {
    "resolve_window": set(),
    "plan_pages": {"resolve_window"},
    FETCH: {"resolve_window", "plan_pages"},
    JUDGE_TONE: {FETCH},
    JUDGE_JOY: {FETCH},
    PUSH: {"resolve_window", "plan_pages", FETCH, JUDGE_TONE, JUDGE_JOY},
    SUMMARY: {PUSH},
}

PARAM_DEFAULTS: dict[str, Any] = {
    "tag": "ext_eval_pipelines",
    "page_size": 10,
    "max_traces": 50,
    "evaluators": ["tone", "joyfulness"],
    "window_start": None,
    "window_end": None,
    "dry_run": False,
    "force": False,
    "redact": True,
    "lookback_hours": 2,
    "defer_minutes": 60,
    "max_judge_error_ratio": 0.2,
    "judge_concurrency": 8,
}

# A parse in a fresh interpreter: which modules the DAG file pulls in, and how long it takes.
PARSE_SCRIPT = """
import json, sys, time
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag

before = "deepeval" in sys.modules
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - started
report = {
    "dag_ids": sorted(bag.dags),
    "import_errors": bag.import_errors,
    "deepeval_before": before,
    "deepeval_after": "deepeval" in sys.modules,
    "seconds": seconds,
    "timeout": conf.getfloat("core", "dagbag_import_timeout"),
}
with open(sys.argv[2], "w") as out:
    json.dump(report, out)
"""


def parse_dags(known_pools: set[str]) -> DagBag:
    """Parse the dags folder with the DAG's default settings (no timezone override)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("LANGFUSE_EVAL_TIMEZONE", raising=False)
        return DagBag(dag_folder=DAGS_FOLDER, known_pools=known_pools)


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return parse_dags(set(KNOWN_POOLS))


@pytest.fixture(scope="module")
def dag(dagbag: DagBag) -> DAG:
    return dagbag.dags[DAG_ID]


@pytest.fixture(scope="module")
def serialized_dag(dag: DAG) -> SerializedDAG:
    """Round-trip the DAG through the JSON form that the DAG processor stores."""
    encoded = json.dumps(DagSerialization.to_dict(dag))
    return DagSerialization.from_dict(json.loads(encoded))


@pytest.fixture(scope="module")
def parse_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("parse") / "report.json"
    env = os.environ.copy()
    env.pop("LANGFUSE_EVAL_TIMEZONE", None)
    subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(DAGS_FOLDER), str(out)],
        check=True,
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    return json.loads(out.read_text())


def resolve_copy(dag: DAG, name: str, value: Any) -> Any:
    """Validate a value against a copy of the DAG's param, leaving the DAG untouched."""
    param: Param = copy.copy(dag.params.get_param(name))
    return param.resolve(value)


# Parsing and pools


def test_no_import_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}


def test_no_dag_warnings(dagbag: DagBag) -> None:
    assert [warning.message for warning in dagbag.dag_warnings] == []


@pytest.mark.parametrize("missing", [JUDGE_POOL, LANGFUSE_POOL])
def test_missing_pool_is_reported(missing: str) -> None:
    warnings = parse_dags(set(KNOWN_POOLS) - {missing}).dag_warnings
    assert {(w.dag_id, w.warning_type) for w in warnings} == {
        (DAG_ID, DagWarningType.NONEXISTENT_POOL)
    }
    assert all(missing in w.message for w in warnings)


def test_dag_id_is_file_stem(dagbag: DagBag) -> None:
    assert list(dagbag.dags) == [DAG_ID]


def test_dag_defined_in_file(dag: DAG) -> None:
    assert Path(dag.fileloc) == DAG_FILE


def test_parse_skips_deepeval(parse_report: dict[str, Any], record_property) -> None:
    record_property("parse_seconds", round(parse_report["seconds"], 3))
    record_property("dagbag_import_timeout", parse_report["timeout"])
    assert parse_report["deepeval_before"] is False
    assert parse_report["deepeval_after"] is False


def test_subprocess_parse_loads_dag(parse_report: dict[str, Any]) -> None:
    assert parse_report["import_errors"] == {}
    assert parse_report["dag_ids"] == [DAG_ID]


# DAG-level settings


def test_tags_not_empty(dag: DAG) -> None:
    assert dag.tags


def test_doc_md_set(dag: DAG) -> None:
    assert isinstance(dag.doc_md, str)
    assert dag.doc_md.strip()


def test_catchup_disabled(dag: DAG) -> None:
    assert dag.catchup is False


# Tasks: retries, timeouts, pools


def test_task_ids_match(dag: DAG) -> None:
    assert sorted(dag.task_ids) == sorted(TASK_IDS)


@pytest.mark.parametrize("task_id", RETRYING_TASKS)
def test_task_retries_at_least_once(dag: DAG, task_id: str) -> None:
    assert dag.get_task(task_id).retries >= 1


def test_summarize_run_never_retries(dag: DAG) -> None:
    assert dag.get_task(SUMMARY).retries == 0


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_backoff_is_float_multiplier(dag: DAG, task_id: str) -> None:
    backoff = dag.get_task(task_id).retry_exponential_backoff
    assert type(backoff) is float
    assert backoff == 2.0


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_max_retry_delay_set(dag: DAG, task_id: str) -> None:
    assert dag.get_task(task_id).max_retry_delay is not None


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_execution_timeout_set(dag: DAG, task_id: str) -> None:
    assert dag.get_task(task_id).execution_timeout is not None


@pytest.mark.parametrize("task_id", [JUDGE_TONE, JUDGE_JOY])
def test_judge_uses_judge_pool(dag: DAG, task_id: str) -> None:
    assert dag.get_task(task_id).pool == JUDGE_POOL


@pytest.mark.parametrize(
    "task_id", ["plan_pages", "evaluate_page.fetch_page", "evaluate_page.push_scores"]
)
def test_api_tasks_use_langfuse_pool(dag: DAG, task_id: str) -> None:
    assert dag.get_task(task_id).pool == LANGFUSE_POOL


# Shape


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_direct_upstream_tasks(dag: DAG, task_id: str) -> None:
    assert dag.get_task(task_id).upstream_task_ids == UPSTREAM[task_id]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(JUDGE_TONE, JUDGE_JOY, id="tone-before-joyfulness"),
        pytest.param(JUDGE_JOY, JUDGE_TONE, id="joyfulness-before-tone"),
    ],
)
def test_judges_run_in_parallel(dag: DAG, first: str, second: str) -> None:
    assert first not in dag.get_task(second).get_flat_relative_ids(upstream=True)


def test_single_root_task(dag: DAG) -> None:
    assert [task.task_id for task in dag.roots] == ["resolve_window"]


def test_summarize_run_is_leaf(dag: DAG) -> None:
    assert [task.task_id for task in dag.leaves] == [SUMMARY]


def test_group_is_mapped(dag: DAG) -> None:
    assert isinstance(dag.task_group_dict[GROUP_ID], MappedTaskGroup)


@pytest.mark.parametrize("task_id", GROUP_TASKS)
def test_group_tasks_expand(dag: DAG, task_id: str) -> None:
    task = dag.get_task(task_id)
    assert task.get_closest_mapped_task_group() is dag.task_group_dict[GROUP_ID]
    assert task.get_needs_expansion() is True


def test_summarize_run_all_done(dag: DAG) -> None:
    assert dag.get_task(SUMMARY).trigger_rule == "all_done"


# Params


def test_param_names_match(dag: DAG) -> None:
    assert sorted(dag.params) == sorted(PARAM_DEFAULTS)


@pytest.mark.parametrize(("name", "default"), PARAM_DEFAULTS.items(), ids=list(PARAM_DEFAULTS))
def test_param_default_value(dag: DAG, name: str, default: Any) -> None:
    assert dag.params.get_param(name).value == default


@pytest.mark.parametrize("name", list(PARAM_DEFAULTS))
def test_param_has_title_and_description(dag: DAG, name: str) -> None:
    # The trigger form labels a field with its title and shows the description under it.
    param = dag.params.get_param(name)
    assert param.schema.get("title")
    assert param.description


def test_defaults_pass_validation(dag: DAG) -> None:
    assert copy.deepcopy(dag.params).validate() == PARAM_DEFAULTS


@pytest.mark.parametrize("name", list(PARAM_DEFAULTS))
def test_param_resolves_without_value(dag: DAG, name: str) -> None:
    # A scheduled run passes no conf: every param must resolve from its default alone.
    assert copy.copy(dag.params.get_param(name)).resolve() == PARAM_DEFAULTS[name]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("page_size", 0, id="page-size-zero"),
        pytest.param("max_traces", 0, id="max-traces-zero"),
        pytest.param("evaluators", ["bogus"], id="unknown-evaluator"),
        pytest.param("evaluators", [], id="no-evaluators"),
        pytest.param("evaluators", ["tone", "tone"], id="repeated-evaluator"),
        pytest.param("tag", "", id="empty-tag"),
        pytest.param("judge_concurrency", 0, id="judge-concurrency-zero"),
        pytest.param("dry_run", "yes", id="dry-run-string"),
        pytest.param("force", "yes", id="force-string"),
        pytest.param("redact", "no", id="redact-string"),
        pytest.param("lookback_hours", -1, id="lookback-negative"),
        pytest.param("defer_minutes", -5, id="defer-negative"),
        pytest.param("max_judge_error_ratio", 1.5, id="error-ratio-above-one"),
    ],
)
def test_schema_rejects_bad_value(dag: DAG, name: str, value: Any) -> None:
    with pytest.raises(ParamValidationError):
        resolve_copy(dag, name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("max_traces", None, id="max-traces-null"),
        pytest.param("evaluators", ["joyfulness"], id="one-evaluator"),
        pytest.param("page_size", 1, id="page-size-one"),
        pytest.param("window_start", "2026-12-03T05:00:00+00:00", id="window-start-iso"),
    ],
)
def test_schema_accepts_good_value(dag: DAG, name: str, value: Any) -> None:
    assert resolve_copy(dag, name, value) == value


def test_validate_rejects_updated_copy(dag: DAG) -> None:
    params = copy.deepcopy(dag.params)
    params.get_param("page_size").value = 0
    with pytest.raises(ParamValidationError):
        params.validate()


def test_schema_rejects_bad_timestamp(dag: DAG) -> None:
    with pytest.raises(ParamValidationError):
        resolve_copy(dag, "window_start", "yesterday")


# Serialization


def test_round_trip_keeps_timetable(serialized_dag: SerializedDAG) -> None:
    timetable = serialized_dag.timetable
    assert isinstance(timetable, CoreCronDataIntervalTimetable)
    assert timetable.serialize() == {"expression": "0 5 * * *", "timezone": "UTC"}


def test_round_trip_keeps_param_values(dag: DAG, serialized_dag: SerializedDAG) -> None:
    assert dict(serialized_dag.params.dump()) == dag.params.dump()


def test_round_trip_keeps_param_schemas(dag: DAG, serialized_dag: SerializedDAG) -> None:
    schemas = {name: serialized_dag.params.get_param(name).schema for name in serialized_dag.params}
    assert schemas == {name: dag.params.get_param(name).schema for name in dag.params}


def test_round_trip_keeps_pools(dag: DAG, serialized_dag: SerializedDAG) -> None:
    pools = {task.task_id: task.pool for task in serialized_dag.tasks}
    assert pools == {task.task_id: task.pool for task in dag.tasks}


def test_round_trip_keeps_mapped_group(serialized_dag: SerializedDAG) -> None:
    group = serialized_dag.task_group_dict[GROUP_ID]
    assert type(group).__name__ == "SerializedMappedTaskGroup"
