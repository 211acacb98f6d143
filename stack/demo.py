"""Run the daily DAG once against the local stack and print what it wrote.

The demo starts the local Langfuse-compatible server and the offline judge on free ports with
fresh random keys, seeds a JSON Lines file of ``{"input", "output"}`` records as tagged traces
through the Langfuse SDK, and runs ``airflow dags test`` for the window that contains them: the run
that the next 05:00 would make. It then reads the scores back through the SDK, prints one row
per trace and the run summary, and writes the summary to ``.demo/summary.json``.

Usage: ``python -m stack.demo [--data FILE] [--state-dir DIR]``. ``make demo`` sets up the
virtualenv and the Airflow metadata database first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from langfuse.api import LangfuseAPI

from include.langfuse_eval.extraction import extract_output
from include.langfuse_eval.scores import read_trace_scores
from stack.process import REPO_ROOT, ServerProcess, free_port, start_server
from stack.seed import SeedFileError, load_records

log = logging.getLogger(__name__)

DAG_ID = "langfuse_external_eval"
DEFAULT_DATA = REPO_ROOT / "stack" / "data" / "demo.jsonl"
DEFAULT_TAG = "ext_eval_pipelines"
SCHEDULE_HOUR = 5
JUDGE_MODEL = "gpt-4.1-mini"
SCORE_NAMES = ("tone", "joyfulness")


def window_holding(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """Return the 05:00-to-05:00 window in ``timezone`` that contains ``now``."""
    local = now.astimezone(ZoneInfo(timezone))
    start = local.replace(hour=SCHEDULE_HOUR, minute=0, second=0, microsecond=0)
    if local < start:
        start = (start - timedelta(days=1)).replace(hour=SCHEDULE_HOUR)
    end = (start + timedelta(days=1)).replace(hour=SCHEDULE_HOUR)
    return start, end


def connection_env(langfuse: ServerProcess, judge: ServerProcess, keys: dict[str, str]) -> dict:
    """Build the ``AIRFLOW_CONN_*`` variables that point the DAG at the local stack."""
    return {
        "AIRFLOW_CONN_LANGFUSE_DEFAULT": json.dumps(
            {
                "conn_type": "http",
                "host": langfuse.base_url,
                "login": keys["public"],
                "password": keys["secret"],
            }
        ),
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {
                "conn_type": "openai",
                "host": f"{judge.base_url}/v1",
                "password": keys["judge"],
                "extra": {"model": JUDGE_MODEL},
            }
        ),
    }


def read_run_summary(run_id: str | None = None) -> tuple[str, str, dict[str, Any] | None]:
    """Read the latest run of the DAG and its summary from the Airflow metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = DagRun.find(dag_id=DAG_ID, session=session)
        if not runs:
            raise RuntimeError(f"No run of {DAG_ID} found in the metadata database.")
        run = max(runs, key=lambda dag_run: dag_run.run_after)
        query = XComModel.get_many(
            run_id=run.run_id, dag_ids=DAG_ID, task_ids="summarize_run", key="return_value"
        )
        row = session.scalars(query).first()
        summary = XComModel.deserialize_value(row) if row is not None else None
        return run.run_id, str(run.state), summary


def print_table(trace_rows: list[dict[str, Any]]) -> None:
    """Print one line per trace: id, tone, joyfulness and the start of the reason."""
    print(f"{'trace':<14} {'tone':<11} {'joyfulness':>10}  reason")
    for row in trace_rows:
        joy = "-" if row["joyfulness"] is None else f"{row['joyfulness']:.2f}"
        print(f"{row['trace_id'][:12]:<14} {row['tone'] or '-':<11} {joy:>10}  {row['reason']}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo and return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("DEMO_DATA") or DEFAULT_DATA)
    )
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".demo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not args.data.is_file():
        print(f"Demo data file {args.data} not found: set DEMO_DATA to a JSON Lines file.")
        return 2
    try:
        load_records(args.data)
    except SeedFileError as error:
        print(f"error: {error}")
        return 2
    # A SIGTERM ends the demo through the finally clauses, which stop both servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    state_dir: Path = args.state_dir
    (state_dir / "summary.json").unlink(missing_ok=True)
    shutil.rmtree(state_dir / "langfuse", ignore_errors=True)
    (state_dir / "langfuse").mkdir(parents=True)
    keys = {
        "public": f"pk-lf-{secrets.token_hex(8)}",
        "secret": f"sk-lf-{secrets.token_hex(16)}",
        "judge": f"sk-judge-{secrets.token_hex(16)}",
    }
    timezone = os.environ.get("LANGFUSE_EVAL_TIMEZONE", "UTC")

    langfuse = start_server(
        "stack.langfuse_server",
        free_port(),
        {"LOCAL_LANGFUSE_PUBLIC_KEY": keys["public"], "LOCAL_LANGFUSE_SECRET_KEY": keys["secret"]},
        state_dir / "langfuse-server.log",
        args=["--db", str(state_dir / "langfuse" / "langfuse.db")],
    )
    judge = None
    try:
        judge = start_server(
            "stack.judge_server",
            free_port(),
            {"LOCAL_JUDGE_API_KEY": keys["judge"]},
            state_dir / "judge-server.log",
            health_path="/health",
        )
        seed_env = {
            **os.environ,
            "LANGFUSE_PUBLIC_KEY": keys["public"],
            "LANGFUSE_SECRET_KEY": keys["secret"],
            "LANGFUSE_BASE_URL": langfuse.base_url,
        }
        seeded = subprocess.run(
            [sys.executable, "-m", "stack.seed", "--file", str(args.data), "--tag", DEFAULT_TAG],
            env=seed_env,
            check=False,
        )
        if seeded.returncode != 0:
            print(f"Seeding failed with exit code {seeded.returncode}; see the message above.")
            return seeded.returncode

        window_start, window_end = window_holding(datetime.now(ZoneInfo("UTC")), timezone)
        print(f"Running {DAG_ID} for the window {window_start} to {window_end}")
        run_env = {**os.environ, **connection_env(langfuse, judge, keys)}
        test_log = state_dir / "dags-test.log"
        with test_log.open("w") as log_file:
            completed = subprocess.run(
                [
                    "airflow",
                    "dags",
                    "test",
                    DAG_ID,
                    window_end.isoformat(),
                    # Evaluate every seeded trace, not only the daily default of 50.
                    "--conf",
                    json.dumps({"max_traces": None}),
                ],
                env=run_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                check=False,
            )
        run_id, state, summary = read_run_summary()
        print(f"airflow dags test exited {completed.returncode}; run {run_id} is {state}")

        api = LangfuseAPI(
            base_url=langfuse.base_url, username=keys["public"], password=keys["secret"]
        )
        return report(api, args.data, state, summary, state_dir, test_log)
    finally:
        if judge is not None:
            judge.stop()
        langfuse.stop()


def report(
    api: LangfuseAPI,
    data: Path,
    state: str,
    summary: dict[str, Any] | None,
    state_dir: Path,
    test_log: Path,
) -> int:
    """Print the per-trace table and the summary, and check that every trace was scored once."""
    observations = api.observations.get_many(
        fields="core,io",
        limit=1000,
        filter=json.dumps(
            [{"type": "boolean", "column": "isRootObservation", "operator": "=", "value": True}]
        ),
    ).data
    roots = sorted(observations, key=lambda observation: observation.start_time)
    scores = read_trace_scores(api, [root.trace_id for root in roots])
    rows = []
    problems = []
    for root in roots:
        trace_scores = scores.get(root.trace_id, [])
        tone = [score for score in trace_scores if score.name == "tone"]
        joy = [score for score in trace_scores if score.name == "joyfulness"]
        reason = (joy[0].comment or "") if joy else ""
        rows.append(
            {
                "trace_id": root.trace_id,
                "tone": tone[0].value if tone else None,
                "joyfulness": joy[0].value if joy else None,
                "reason": reason[:60],
            }
        )
        has_output = extract_output(root.output)[0] is not None
        for name, found in (("tone", tone), ("joyfulness", joy)):
            if len(found) > 1:
                problems.append(f"trace {root.trace_id} has {len(found)} {name} scores")
            if has_output and not found:
                problems.append(f"trace {root.trace_id} has no {name} score")
    print_table(rows)
    print(f"\nSeeded {len(roots)} traces from {data}")
    print("Run summary:")
    print(json.dumps(summary, indent=2, sort_keys=True))
    (state_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if state != "success" or summary is None:
        print(f"The DAG run is {state}: see {test_log}")
        return 1
    if problems:
        print("Score check failed:\n  " + "\n  ".join(problems))
        return 1
    print(
        f"Every trace with output has exactly one score per name. Summary: {state_dir}/summary.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
