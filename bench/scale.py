"""Planning time and task memory at a day's volume: ``python -m bench.scale --sizes 10000 100000``.

For each size the local Langfuse server gets that many tagged traces, written straight into
its SQLite file (seeding 100,000 traces through OTLP would take longer than the measurement).
Then the DAG's task functions run one after the other. Each runs in a new interpreter that
first imports the DAG file, as an Airflow task process does. ``plan_pages`` covers the whole
window; ``fetch_page``, ``judge_tone``, ``judge_joyfulness`` and ``push_scores`` then run for
the first page. Each step reads its input from the previous step's JSON file, the way XCom
hands it on. Every step reports its wall time and its peak resident memory (``ru_maxrss``).

Memory that stays flat with the day's volume shows as a 100,000 over 10,000 ratio near 1.0 for
every task. A task that held every trace of the window would grow with it.
"""

from __future__ import annotations

import os

# deepeval reads these when it is imported: no telemetry, no .env, no local files.
os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "1")
os.environ.setdefault("DEEPEVAL_DISABLE_DOTENV", "1")
os.environ.setdefault("DEEPEVAL_FILE_SYSTEM", "READ_ONLY")

import argparse
import json
import logging
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.run import REPO_ROOT, TAG, Stack, bench_window, fresh_stack, load_outputs
from include.langfuse_eval.window import Window
from stack.langfuse_server import Store

log = logging.getLogger("bench.scale")

STEPS = ("plan_pages", "fetch_page", "judge_tone", "judge_joyfulness", "push_scores")
SEED_BATCH = 5000
"""Observations per SQLite transaction while seeding."""


def seed_rows(count: int, window: Window, tag: str = TAG) -> Iterator[dict[str, Any]]:
    """Yield ``count`` root observations spread over the window, in the server's row form."""
    outputs = load_outputs()
    first = window.start + timedelta(minutes=1)
    span = (window.end - timedelta(minutes=90)) - first
    step = span / max(count, 1)
    for index in range(count):
        record = outputs[index % len(outputs)]
        start_ms = int((first + step * index).timestamp() * 1000)
        yield {
            "id": secrets.token_hex(8),
            "trace_id": secrets.token_hex(16),
            "parent_id": None,
            "start_ms": start_ms,
            "end_ms": start_ms + 1000,
            "name": "science-assistant",
            "type": "SPAN",
            "level": "DEFAULT",
            "status_message": None,
            "version": None,
            "environment": "default",
            "user_id": None,
            "session_id": None,
            "input": json.dumps({"args": [record["input"]], "kwargs": {}}),
            "output": record["output"],
            "metadata": None,
            "is_root": 1,
            "trace_tags": [tag],
            "trace_name": "science-assistant",
            "release": None,
        }


def seed_directly(db_path: Path, count: int, window: Window) -> float:
    """Write ``count`` traces into the server's database file; return the seconds it took."""
    started = time.perf_counter()
    store = Store(db_path)
    try:
        batch: list[dict[str, Any]] = []
        for row in seed_rows(count, window):
            batch.append(row)
            if len(batch) == SEED_BATCH:
                store.upsert_spans(batch)
                batch = []
        if batch:
            store.upsert_spans(batch)
    finally:
        store.close()
    return time.perf_counter() - started


@dataclass
class StepResult:
    """One task step of one size."""

    step: str
    wall_s: float
    peak_mib: float
    output_kib: float
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_s: float = 0.0

    @property
    def waiting_s(self) -> float:
        """Wall time not spent on this process's CPU: the judge, Langfuse and the disk."""
        return max(0.0, self.wall_s - self.cpu_s)


def _job(stack: Stack, window: Window, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "langfuse": [stack.langfuse.host, stack.langfuse.public_key, stack.langfuse.secret_key],
        "judge": [stack.judge.api_key, stack.judge.model, stack.judge.base_url],
        "window": window.to_dict(),
        "page_size": args.page_size,
        "judge_concurrency": args.judge_concurrency,
    }


def run_step(step: str, job_path: Path, work_dir: Path) -> StepResult:
    """Run one step in a new interpreter and read its result file."""
    result_path = work_dir / f"{step}.result.json"
    with (work_dir / "steps.log").open("ab") as log_file:
        completed = subprocess.run(
            [sys.executable, "-m", "bench.scale", "--child", step, str(job_path), str(work_dir)],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    if completed.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"{step} failed ({completed.returncode}): see {work_dir / 'steps.log'}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    return StepResult(
        step=step,
        wall_s=result["wall_s"],
        peak_mib=result["maxrss_kib"] / 1024,
        output_kib=result["output_bytes"] / 1024,
        extra=result.get("extra", {}),
        cpu_s=result.get("cpu_s", 0.0),
    )


def measure_size(count: int, args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Seed ``count`` traces on a fresh stack and run every step once."""
    state_dir = work_dir / f"n{count}"
    state_dir.mkdir(parents=True, exist_ok=True)
    window = bench_window(datetime.now(UTC))
    with fresh_stack(state_dir, rpm=0, latency_s=args.latency_ms / 1000) as stack:
        seed_s = seed_directly(state_dir / "langfuse.db", count, window)
        job_path = state_dir / "job.json"
        job_path.touch(mode=0o600)
        job_path.write_text(json.dumps(_job(stack, window, args)), encoding="utf-8")
        steps = [run_step(step, job_path, state_dir) for step in STEPS]
    log.info("%d traces: seeded in %.1f s, %s", count, seed_s, [s.step for s in steps])
    return {"traces": count, "seed_s": seed_s, "steps": steps}


def render(results: list[dict[str, Any]]) -> str:
    """Render one Markdown table: a row per size, then the ratio of the largest to the smallest."""
    header = ["traces", "pages", "page size", "plan s", "plan XCom KiB"] + [
        f"{step} MiB" for step in STEPS
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for result in results:
        by_step = {step.step: step for step in result["steps"]}
        plan = by_step["plan_pages"]
        row = [
            f"{result['traces']:,}",
            str(plan.extra["pages"]),
            str(plan.extra["page_size"]),
            f"{plan.wall_s:.1f}",
            f"{plan.output_kib:,.0f}",
            *(f"{by_step[step].peak_mib:.0f}" for step in STEPS),
        ]
        lines.append("| " + " | ".join(row) + " |")
    if len(results) > 1:
        small, large = results[0], results[-1]
        small_steps = {step.step: step for step in small["steps"]}
        large_steps = {step.step: step for step in large["steps"]}
        ratios = [
            f"{large_steps[step].peak_mib / small_steps[step].peak_mib:.2f}x" for step in STEPS
        ]
        label = f"{large['traces']:,} / {small['traces']:,}"
        lines.append("| " + " | ".join([label, "", "", "", "", *ratios]) + " |")
    lines.extend(["", *profile_lines(results[-1])])
    return "\n".join(lines)


def profile_lines(result: dict[str, Any]) -> list[str]:
    """List where each task of one size spends its time: own CPU against waiting."""
    header = ["task", "traces", "wall s", "own CPU s", "waiting s", "waiting share"]
    lines = [
        f"Where the time of the tasks at {result['traces']:,} traces goes:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    items = next(s.extra.get("items") for s in result["steps"] if s.step == "fetch_page")
    for step in result["steps"]:
        traces = result["traces"] if step.step == "plan_pages" else items
        share = step.waiting_s / step.wall_s if step.wall_s else 0.0
        row = [
            step.step,
            f"{traces:,}",
            f"{step.wall_s:.2f}",
            f"{step.cpu_s:.2f}",
            f"{step.waiting_s:.2f}",
            f"{share:.0%}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _child(step: str, job_path: Path, work_dir: Path) -> int:
    """Run one DAG task function the way its Airflow task would, and write its result."""
    import dags.langfuse_external_eval  # noqa: F401  (an Airflow task process imports its DAG)
    from include.langfuse_eval import EVALUATOR_VERSION
    from include.langfuse_eval.pipeline import EVALUATORS, PageWork, fetch, judge, plan_run, push
    from include.langfuse_eval.planning import PageSpec
    from include.langfuse_eval.scores import RunContext
    from include.langfuse_eval.settings import JudgeSettings, LangfuseSettings
    from include.langfuse_eval.verdicts import Verdict

    job = json.loads(job_path.read_text(encoding="utf-8"))
    host, public_key, secret_key = job["langfuse"]
    api_key, model, base_url = job["judge"]
    langfuse = LangfuseSettings(host=host, public_key=public_key, secret_key=secret_key)
    judge_settings = JudgeSettings(api_key=api_key, model=model, base_url=base_url)
    window = Window.from_dict(job["window"])

    def read(name: str) -> Any:
        return json.loads((work_dir / f"{name}.json").read_text(encoding="utf-8"))

    extra: dict[str, Any] = {}
    started = time.perf_counter()
    cpu_started = time.process_time()
    if step == "plan_pages":
        plan, _ = plan_run(
            langfuse,
            tag=TAG,
            window=window,
            page_size=job["page_size"],
            max_traces=None,
            evaluator_version=EVALUATOR_VERSION,
        )
        output: Any = [page.to_dict() for page in plan.pages]
        extra = {"pages": len(plan.pages), "page_size": plan.page_size}
    elif step == "fetch_page":
        work = fetch(
            langfuse,
            tag=TAG,
            window=window,
            page=PageSpec.from_dict(read("plan_pages")[0]),
            evaluators=list(EVALUATORS),
            evaluator_version=EVALUATOR_VERSION,
            defer_after=window.end - timedelta(minutes=60),
        )
        output = work.to_dict()
        extra = {"items": len(work.page.items)}
    elif step in ("judge_tone", "judge_joyfulness"):
        evaluator = step.removeprefix("judge_")
        work = PageWork.from_dict(read("fetch_page"))
        verdicts = judge(evaluator, judge_settings, work, max_concurrency=job["judge_concurrency"])
        output = [verdict.to_dict() for verdict in verdicts]
        extra = {"verdicts": len(verdicts), "errors": sum(1 for v in verdicts if not v.ok)}
    elif step == "push_scores":
        work = PageWork.from_dict(read("fetch_page"))
        verdicts = [Verdict.from_dict(v) for v in read("judge_tone") + read("judge_joyfulness")]
        context = RunContext(
            evaluator_version=EVALUATOR_VERSION,
            judge_model=judge_settings.model,
            dag_run_id="bench-scale",
            window_start=window.to_dict()["start"],
            window_end=window.to_dict()["end"],
        )
        report = push(
            langfuse,
            work=work,
            traces_owned=len(work.page.items),
            verdicts=verdicts,
            context=context,
            dry_run=False,
        )
        output = report.to_dict()
        extra = {"scores_written": report.to_dict().get("scores_written")}
    else:
        raise ValueError(f"Unknown step {step!r}: use one of {list(STEPS)}.")
    wall_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    text = json.dumps(output)
    (work_dir / f"{step}.json").write_text(text, encoding="utf-8")
    result = {
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "output_bytes": len(text.encode("utf-8")),
        "extra": extra,
    }
    (work_dir / f"{step}.result.json").write_text(json.dumps(result), encoding="utf-8")
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--page-size", type=int, default=10, help="the DAG's page_size param")
    parser.add_argument("--judge-concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="judge latency")
    parser.add_argument("--work-dir", type=Path, default=None, help="logs and databases")
    return parser.parse_args(argv)


def run_scale(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Measure every size; return the results and their table."""
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results = [measure_size(count, args, work_dir) for count in sorted(args.sizes)]
    return results, render(results)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scale measurement and print its table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return _child(argv[1], Path(argv[2]), Path(argv[3]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _, table = run_scale(parse_args(argv))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
