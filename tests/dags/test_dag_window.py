"""The DAG's evaluation window: the timetable, DST days, and ``resolve_run_window``.

The parsed DAG contains the SDK timetable, which only describes the schedule. The scheduler
computes windows with the core timetable decoded from the serialized DAG, so the window
arithmetic is checked on that core timetable.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG, CronDataIntervalTimetable
from airflow.sdk.exceptions import AirflowFailException
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables.base import DataInterval, TimeRestriction, Timetable

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"
DAG_FILE = DAGS_FOLDER / "langfuse_external_eval.py"
DAG_ID = DAG_FILE.stem
TZ_ENV = "LANGFUSE_EVAL_TIMEZONE"
BERLIN = "Europe/Berlin"
DAY = timedelta(hours=24)


@dataclass(frozen=True)
class FakeDagRun:
    """The two fields of a dag run that ``resolve_run_window`` reads."""

    run_id: str
    run_after: pendulum.DateTime


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


def berlin(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz=BERLIN)


def parse_dag(timezone: str | None) -> DAG:
    """Parse the dags folder afresh with LANGFUSE_EVAL_TIMEZONE set or unset."""
    with pytest.MonkeyPatch.context() as patch:
        if timezone is None:
            patch.delenv(TZ_ENV, raising=False)
        else:
            patch.setenv(TZ_ENV, timezone)
        bag = DagBag(dag_folder=DAGS_FOLDER)
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def scheduler_timetable(dag: DAG) -> Timetable:
    """Return the core timetable that the scheduler decodes from the serialized DAG."""
    return decode_timetable(encode_timetable(dag.timetable))


def manual_window(timetable: Timetable, run_after: pendulum.DateTime) -> DataInterval:
    return timetable.infer_manual_data_interval(run_after=run_after)


def next_window(timetable: Timetable, previous: DataInterval) -> DataInterval:
    info = timetable.next_dagrun_info(
        last_automated_data_interval=previous,
        restriction=TimeRestriction(earliest=utc(2026, 1, 1), latest=None, catchup=True),
    )
    assert info is not None
    return info.data_interval


@pytest.fixture(scope="module")
def dag() -> DAG:
    return parse_dag(None)


@pytest.fixture(scope="module")
def timetable(dag: DAG) -> Timetable:
    return scheduler_timetable(dag)


@pytest.fixture(scope="module")
def berlin_timetable() -> Timetable:
    return scheduler_timetable(parse_dag(BERLIN))


@pytest.fixture(scope="module")
def dag_module() -> ModuleType:
    """Import the DAG file by path under a name of its own, without the timezone override."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(TZ_ENV, raising=False)
        spec = importlib.util.spec_from_file_location("langfuse_external_eval_window", DAG_FILE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def window_context(
    dag: Any,
    *,
    window_start: str | None = None,
    window_end: str | None = None,
    interval: tuple[pendulum.DateTime, pendulum.DateTime] | None = None,
    run_after: pendulum.DateTime | None = None,
) -> dict[str, Any]:
    """Build the part of a task context that ``resolve_run_window`` reads."""
    context: dict[str, Any] = {
        "params": {"window_start": window_start, "window_end": window_end},
        "dag": dag,
        "dag_run": FakeDagRun(run_id="manual__test", run_after=run_after or utc(2026, 12, 4, 12)),
    }
    if interval is not None:
        context["data_interval_start"], context["data_interval_end"] = interval
    return context


# The timetable


def test_timetable_is_cron_interval(dag: DAG) -> None:
    assert isinstance(dag.timetable, CronDataIntervalTimetable)


def test_timetable_cron_expression(dag: DAG) -> None:
    assert dag.timetable.expression == "0 5 * * *"


def test_default_timezone_is_utc(dag: DAG) -> None:
    assert dag.timetable.timezone == "UTC"


def test_env_sets_timezone() -> None:
    assert parse_dag(BERLIN).timetable.timezone == BERLIN


@pytest.mark.parametrize(
    ("run_after", "start"),
    [
        pytest.param(utc(2026, 12, 4, 12), utc(2026, 12, 3, 5), id="midday"),
        pytest.param(utc(2026, 12, 4, 4, 59), utc(2026, 12, 2, 5), id="before-05"),
        pytest.param(utc(2026, 12, 4, 5), utc(2026, 12, 3, 5), id="at-05"),
        pytest.param(utc(2026, 3, 29, 12), utc(2026, 3, 28, 5), id="berlin-spring-day"),
    ],
)
def test_manual_window_utc(
    timetable: Timetable, run_after: pendulum.DateTime, start: pendulum.DateTime
) -> None:
    interval = manual_window(timetable, run_after)
    assert interval.start == start
    assert interval.end == start + DAY


@pytest.mark.parametrize(
    "previous_start",
    [
        pytest.param(utc(2026, 12, 2, 5), id="december"),
        pytest.param(utc(2026, 3, 28, 5), id="berlin-spring-day"),
        pytest.param(utc(2026, 10, 24, 5), id="berlin-fall-day"),
    ],
)
def test_next_window_utc(timetable: Timetable, previous_start: pendulum.DateTime) -> None:
    previous = DataInterval(previous_start, previous_start + DAY)
    interval = next_window(timetable, previous)
    assert interval.start == previous.end
    assert interval.end - interval.start == DAY


def test_first_window_from_start(timetable: Timetable) -> None:
    info = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=utc(2026, 1, 1), latest=None, catchup=True),
    )
    assert info is not None
    assert info.data_interval == DataInterval(utc(2026, 1, 1, 5), utc(2026, 1, 2, 5))


# DST days in Europe/Berlin

DST_CASES = [
    # (run_after of a manual run, window start, window end, length)
    pytest.param(
        berlin(2026, 3, 29, 12),
        berlin(2026, 3, 28, 5),
        berlin(2026, 3, 29, 5),
        timedelta(hours=23),
        id="spring-forward",
    ),
    pytest.param(
        berlin(2026, 10, 25, 12),
        berlin(2026, 10, 24, 5),
        berlin(2026, 10, 25, 5),
        timedelta(hours=25),
        id="fall-back",
    ),
]


@pytest.mark.parametrize(("run_after", "start", "end", "length"), DST_CASES)
def test_manual_window_on_dst(
    berlin_timetable: Timetable,
    run_after: pendulum.DateTime,
    start: pendulum.DateTime,
    end: pendulum.DateTime,
    length: timedelta,
) -> None:
    interval = manual_window(berlin_timetable, run_after)
    assert interval.start == start
    assert interval.end == end
    assert interval.end - interval.start == length


@pytest.mark.parametrize(("run_after", "start", "end", "length"), DST_CASES)
def test_next_window_on_dst(
    berlin_timetable: Timetable,
    run_after: pendulum.DateTime,
    start: pendulum.DateTime,
    end: pendulum.DateTime,
    length: timedelta,
) -> None:
    previous = DataInterval(start.subtract(days=1), start)
    interval = next_window(berlin_timetable, previous)
    assert interval.start == start
    assert interval.end == end
    assert interval.end - interval.start == length


@pytest.mark.parametrize(
    "run_after",
    [
        pytest.param(berlin(2026, 3, 29, 12), id="spring-forward"),
        pytest.param(berlin(2026, 10, 25, 12), id="fall-back"),
    ],
)
def test_dst_window_bounds_at_05_local(
    berlin_timetable: Timetable, run_after: pendulum.DateTime
) -> None:
    interval = manual_window(berlin_timetable, run_after)
    local = [moment.in_timezone(BERLIN) for moment in (interval.start, interval.end)]
    assert [(moment.hour, moment.minute) for moment in local] == [(5, 0), (5, 0)]


# resolve_run_window


def test_params_override_window(dag_module: ModuleType, dag: DAG) -> None:
    context = window_context(
        dag,
        window_start="2026-12-01T06:00:00+01:00",
        window_end="2026-12-02T05:00:00Z",
        interval=(utc(2026, 12, 3, 5), utc(2026, 12, 4, 5)),
    )
    window = dag_module.resolve_run_window(context)
    assert window.start == utc(2026, 12, 1, 5)
    assert window.end == utc(2026, 12, 2, 5)


@pytest.mark.parametrize(
    "bounds",
    [
        pytest.param({"window_start": "2026-12-01T05:00:00Z"}, id="start-only"),
        pytest.param({"window_end": "2026-12-02T05:00:00Z"}, id="end-only"),
    ],
)
def test_half_override_fails(dag_module: ModuleType, dag: DAG, bounds: dict[str, str]) -> None:
    context = window_context(dag, interval=(utc(2026, 12, 3, 5), utc(2026, 12, 4, 5)), **bounds)
    with pytest.raises(AirflowFailException):
        dag_module.resolve_run_window(context)


def test_data_interval_is_window(dag_module: ModuleType, dag: DAG) -> None:
    context = window_context(dag, interval=(utc(2026, 12, 3, 5), utc(2026, 12, 4, 5)))
    window = dag_module.resolve_run_window(context)
    assert window.start == utc(2026, 12, 3, 5)
    assert window.end == utc(2026, 12, 4, 5)


def test_no_logical_date_window(dag_module: ModuleType, dag: DAG) -> None:
    context = window_context(dag, run_after=utc(2026, 12, 4, 12))
    window = dag_module.resolve_run_window(context)
    assert window.start == utc(2026, 12, 3, 5)
    assert window.end == utc(2026, 12, 4, 5)


def test_no_logical_date_core_timetable(dag_module: ModuleType, timetable: Timetable) -> None:
    # The same run with a stand-in dag that carries the scheduler's timetable gets the
    # expected result, the last complete window before run_after.
    context = window_context(SimpleNamespace(timetable=timetable), run_after=utc(2026, 12, 4, 12))
    window = dag_module.resolve_run_window(context)
    assert window.start == utc(2026, 12, 3, 5)
    assert window.end == utc(2026, 12, 4, 5)


def test_empty_interval_fails(dag_module: ModuleType, dag: DAG) -> None:
    moment = utc(2026, 12, 4, 5)
    context = window_context(dag, interval=(moment, moment))
    with pytest.raises(AirflowFailException):
        dag_module.resolve_run_window(context)
