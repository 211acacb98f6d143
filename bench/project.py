"""This project's two ways to run: its page workers in one process, and the DAG under dag.test().

``run_project_workers`` calls the pipeline's own functions (``plan_run``, then per page
``fetch``, ``judge`` for each evaluator and ``push``) with pages running concurrently on a
thread pool sized like the judge pool's slots.

``run_dag_test`` runs the whole DAG under ``dag.test()`` in a subprocess with its own Airflow
home and metadata database, connections from ``AIRFLOW_CONN_*`` variables. That subprocess is
``python -m bench.project RESULT_FILE ARGS_JSON``; it writes its wall time, the DAG run's state
and summary and its peak resident memory to RESULT_FILE.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import Outcome
from include.langfuse_eval import EVALUATOR_VERSION
from include.langfuse_eval.pipeline import (
    EVALUATORS,
    PageWork,
    fetch,
    judge,
    plan_run,
    push,
    summarize,
)
from include.langfuse_eval.planning import PageSpec
from include.langfuse_eval.scores import RunContext
from include.langfuse_eval.settings import JudgeSettings, LangfuseSettings
from include.langfuse_eval.verdicts import Verdict
from include.langfuse_eval.window import Window

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "langfuse_external_eval"
PAGE_SIZE = 10
"""The DAG's default page size."""
JUDGE_CONCURRENCY = 8
"""The DAG's default judge calls in flight per judge task."""
API_SLOTS = 8
"""Slots of the Langfuse API pool that ``make airflow-init`` creates."""
DEFER_MINUTES = 60
"""The DAG's default ``defer_minutes``."""


def run_project_workers(
    langfuse: LangfuseSettings,
    judge_settings: JudgeSettings,
    *,
    tag: str,
    window: Window,
    slots: int,
    page_size: int = PAGE_SIZE,
    judge_concurrency: int = JUDGE_CONCURRENCY,
    api_slots: int = API_SLOTS,
) -> Outcome:
    """Plan the window and run every page's tasks on threads, shaped like the DAG's tasks.

    A page runs ``fetch``, then its two judges at once, then ``push``, as the mapped task
    group does. Two semaphores stand in for the DAG's pools: ``slots`` judge tasks (two per
    page) and ``api_slots`` fetch or push tasks run at once, across all pages.

    Args:
        langfuse: The Langfuse server and keys.
        judge_settings: The judge endpoint and model.
        tag: Trace tag of the evaluated traces.
        window: The window to evaluate.
        slots: Judge tasks in flight at once, like the judge pool's slots.
        page_size: Traces per page before planning grows it.
        judge_concurrency: Judge calls in flight per judge task, at most.
        api_slots: Fetch and push tasks in flight at once, like the Langfuse API pool's slots.

    Returns:
        The evaluated trace ids and the run summary.
    """
    plan, _ = plan_run(
        langfuse,
        tag=tag,
        window=window,
        page_size=page_size,
        max_traces=None,
        evaluators=EVALUATORS,
        evaluator_version=EVALUATOR_VERSION,
    )
    context = RunContext(
        evaluator_version=EVALUATOR_VERSION,
        judge_model=judge_settings.model,
        dag_run_id="bench-project-workers",
        window_start=window.to_dict()["start"],
        window_end=window.to_dict()["end"],
    )
    judge_pool = threading.BoundedSemaphore(slots)
    api_pool = threading.BoundedSemaphore(api_slots)

    def judge_task(evaluator: str, work: PageWork) -> list[Verdict]:
        with judge_pool:
            return judge(evaluator, judge_settings, work, max_concurrency=judge_concurrency)

    def run_page(spec: PageSpec) -> tuple[list[str], dict[str, Any]]:
        with api_pool:
            work = fetch(
                langfuse,
                tag=tag,
                window=window,
                page=spec,
                evaluators=list(EVALUATORS),
                evaluator_version=EVALUATOR_VERSION,
                defer_after=window.end - timedelta(minutes=DEFER_MINUTES),
            )
        with ThreadPoolExecutor(max_workers=len(EVALUATORS)) as judges:
            futures = [judges.submit(judge_task, name, work) for name in EVALUATORS]
            verdicts = [verdict for future in futures for verdict in future.result()]
        with api_pool:
            report = push(
                langfuse,
                work=work,
                traces_owned=len(spec.trace_ids),
                verdicts=verdicts,
                context=context,
                dry_run=False,
            )
        return [item.trace_id for item in work.page.items], report.to_dict()

    # Enough pages in flight to fill every judge slot while other pages fetch or push.
    page_threads = slots + api_slots
    with ThreadPoolExecutor(max_workers=page_threads, thread_name_prefix="page") as pool:
        done = list(pool.map(run_page, plan.pages))
    summary = summarize(
        traces_found=plan.traces_found,
        traces_planned=plan.traces_planned,
        pages=len(plan.pages),
        reports=[report for _, report in done],
    )
    evaluated = [trace_id for ids, _ in done for trace_id in ids]
    extra = {
        "slots": slots,
        "api_slots": api_slots,
        "pages": len(plan.pages),
        "page_size": plan.page_size,
        "judge_concurrency": judge_concurrency,
        "judge_calls": summary["judge_calls"],
        "judge_errors": summary["judge_errors"],
        "scores_written": summary["scores_written"],
    }
    return Outcome(evaluated_ids=evaluated, extra=extra)


def airflow_env(home: Path, connections: dict[str, str]) -> dict[str, str]:
    """Return the environment of an isolated Airflow home pointed at this repository's DAG."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "DEEPEVAL_TELEMETRY_OPT_OUT": "1",
            "DEEPEVAL_DISABLE_DOTENV": "1",
            "DEEPEVAL_FILE_SYSTEM": "READ_ONLY",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT), str(REPO_ROOT / "plugins"), env.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep),
            **connections,
        }
    )
    return env


def connection_env(langfuse: LangfuseSettings, judge_settings: JudgeSettings) -> dict[str, str]:
    """Return the ``AIRFLOW_CONN_*`` variables of the two connections the DAG reads."""
    return {
        "AIRFLOW_CONN_LANGFUSE_DEFAULT": json.dumps(
            {
                "conn_type": "http",
                "host": langfuse.host,
                "login": langfuse.public_key,
                "password": langfuse.secret_key,
            }
        ),
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {
                "conn_type": "openai",
                "host": judge_settings.base_url,
                "password": judge_settings.api_key,
                "extra": {"model": judge_settings.model},
            }
        ),
    }


def run_dag_test(
    langfuse: LangfuseSettings,
    judge_settings: JudgeSettings,
    *,
    tag: str,
    window: Window,
    work_dir: Path,
    page_size: int = PAGE_SIZE,
) -> Outcome:
    """Run the DAG once under ``dag.test()`` in a subprocess and return what it evaluated.

    The metadata database is migrated first; that time is not counted. The wall time is the
    ``dag.test()`` call as the subprocess measured it.

    Raises:
        RuntimeError: The migration or the subprocess failed.
    """
    home = Path(tempfile.mkdtemp(prefix="airflow-home-", dir=work_dir))
    env = airflow_env(home, connection_env(langfuse, judge_settings))
    log_path = work_dir / "dag-test.log"
    with log_path.open("ab") as log_file:
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            env=env,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        result_path = work_dir / "dag-test.json"
        args = {
            "tag": tag,
            "page_size": page_size,
            "window_start": window.to_dict()["start"],
            "window_end": window.to_dict()["end"],
        }
        completed = subprocess.run(
            [sys.executable, "-m", "bench.project", str(result_path), json.dumps(args)],
            env=env,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    if completed.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"dag.test() subprocess failed ({completed.returncode}): see {log_path}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    summary = result.get("summary") or {}
    extra = {
        "state": result["state"],
        "pages": summary.get("pages"),
        "judge_calls": summary.get("judge_calls"),
        "judge_errors": summary.get("judge_errors"),
        "scores_written": summary.get("scores_written"),
        "log": str(log_path),
    }
    return Outcome(
        evaluated_ids=None,
        evaluated=int(summary.get("evaluated") or 0),
        extra=extra,
        wall_s=float(result["seconds"]),
        cpu_s=float(result["cpu_s"]),
        peak_mib=float(result["maxrss_kib"]) / 1024,
        note=f"run state {result['state']}; wall time is the dag.test() call, "
        "without interpreter start, DAG parsing and db migrate",
    )


def _dag_test_child(result_path: Path, args: dict[str, Any]) -> int:
    """Parse the DAG, run it once with ``dag.test()`` and write the result file."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[DAG_ID]
    logical_date = datetime.now(UTC).replace(microsecond=0)
    conf = {
        "tag": args["tag"],
        "page_size": args["page_size"],
        "max_traces": None,
        "window_start": args["window_start"],
        "window_end": args["window_end"],
    }
    started = time.perf_counter()
    cpu_started = time.process_time()
    dag_run = dag.test(run_after=logical_date, logical_date=logical_date, run_conf=conf)
    seconds = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    with create_session() as session:
        query = XComModel.get_many(
            run_id=dag_run.run_id, dag_ids=DAG_ID, task_ids="summarize_run", key="return_value"
        )
        row = session.scalars(query).first()
        summary = XComModel.deserialize_value(row) if row is not None else None
    maxrss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    result = {
        "state": str(dag_run.state),
        "seconds": seconds,
        "cpu_s": cpu_s,
        "summary": summary,
        "maxrss_kib": maxrss,
    }
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_dag_test_child(Path(sys.argv[1]), json.loads(sys.argv[2])))


def run_scheduler(
    langfuse: LangfuseSettings,
    judge_settings: JudgeSettings,
    *,
    tag: str,
    window: Window,
    work_dir: Path,
    page_size: int = PAGE_SIZE,
) -> Outcome:
    """Trigger the DAG once on a real Airflow deployment and time the run.

    ``stack.airflow_cluster`` starts the API server, scheduler and DAG processor with the
    LocalExecutor on a new PostgreSQL database, with the pools of ``make airflow-init``. The
    scheduler creates no scheduled run (``max_dagruns_to_create_per_loop`` is 0), so the
    triggered run is the only one. The wall time is the run's own, from its start to its end
    as Airflow records them. Starting the deployment and parsing the DAG are not counted.

    Raises:
        RuntimeError: PostgreSQL is not reachable on 127.0.0.1, or the run did not succeed.
    """
    from stack.airflow_cluster import AirflowCluster, postgres_available, postgres_database

    if not postgres_available():
        raise RuntimeError("The scheduler method needs PostgreSQL on 127.0.0.1:5432.")
    home = Path(tempfile.mkdtemp(prefix="airflow-scheduler-", dir=work_dir))
    extra_env = {
        **connection_env(langfuse, judge_settings),
        "AIRFLOW__SCHEDULER__MAX_DAGRUNS_TO_CREATE_PER_LOOP": "0",
    }
    conf = {
        "tag": tag,
        "max_traces": None,
        "page_size": page_size,
        "window_start": window.to_dict()["start"],
        "window_end": window.to_dict()["end"],
    }
    with (
        postgres_database("bench_scheduler") as database_url,
        AirflowCluster(
            home, database_url=database_url, executor="LocalExecutor", extra_env=extra_env
        ) as cluster,
    ):
        cluster.wait_for_dag(DAG_ID)
        cluster.client.set_paused(DAG_ID, paused=False)
        triggered = time.perf_counter()
        run = cluster.client.trigger_run(DAG_ID, conf=conf)
        finished = cluster.client.wait_for_run(DAG_ID, run["dag_run_id"], timeout_s=3600)
        trigger_to_end_s = time.perf_counter() - triggered
        summary = cluster.client.xcom(DAG_ID, run["dag_run_id"], "summarize_run")
        tasks = cluster.client.task_instances(DAG_ID, run["dag_run_id"])
    if finished["state"] != "success":
        raise RuntimeError(f"The scheduler run ended {finished['state']}: see {home / 'logs'}")
    started = datetime.fromisoformat(finished["start_date"])
    ended = datetime.fromisoformat(finished["end_date"])
    summary = summary if isinstance(summary, dict) else {}
    extra = {
        "state": finished["state"],
        "pages": summary.get("pages"),
        "task_instances": len(tasks),
        "judge_calls": summary.get("judge_calls"),
        "judge_errors": summary.get("judge_errors"),
        "scores_written": summary.get("scores_written"),
        "trigger_to_end_s": trigger_to_end_s,
        "page_size": page_size,
    }
    return Outcome(
        evaluated_ids=None,
        evaluated=int(summary.get("evaluated") or 0),
        extra=extra,
        wall_s=(ended - started).total_seconds(),
        note=f"run state {finished['state']}, {len(tasks)} task instances, page size "
        f"{page_size}; wall time is the run's start to end as Airflow records them "
        f"({trigger_to_end_s:.1f} s from the REST trigger)",
    )
