"""Command line of the benchmark: ``python -m bench.run --traces N --latency-ms 200 --rpm R``.

Every method gets a fresh local Langfuse server (new SQLite file, new random keys) and a fresh
offline judge (new key, empty rate-limit window) on free ports of 127.0.0.1. The judge gets the
fixed latency through ``/_stack/latency`` and the ``--rpm`` cap. The same number of tagged
traces is seeded straight into one day window with ``stack.otlp.send_traces``. Then the request
counters are reset and the method runs. Afterwards the counters are read and the scores are
read back through the v3 scores API. The servers are stopped by pid after each method.
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
import shlex
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.baseline import run_baseline
from bench.batched import run_batched
from bench.project import run_dag_test, run_project_workers, run_scheduler
from bench.report import (
    MethodResult,
    Outcome,
    append_run,
    count_score_problems,
    machine_info,
    render_table,
)
from include.langfuse_eval.scores import read_trace_scores
from include.langfuse_eval.settings import JudgeSettings, LangfuseSettings
from include.langfuse_eval.window import Window
from stack.otlp import TraceRecord, send_traces
from stack.process import ServerProcess, free_port, start_server

log = logging.getLogger("bench")

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "baseline",
    "batched-default",
    "batched-raised",
    "project-workers",
    "project-workers-1000",
    "dag-test",
    "scheduler",
)
OWN_PROCESS_METHODS = ("dag-test", "scheduler")
LARGE_PAGE_SIZE = 1000
"""Page size of ``project-workers-1000``, the size the API request target is set at."""
LARGE_PAGE_CONCURRENCY = 32
"""Judge calls in flight per judge task of ``project-workers-1000``."""
"""Methods that start their own processes and measure their own time and memory."""
TAG = "ext_eval_pipelines"
JUDGE_MODEL = "gpt-4.1-mini"
DEMO_DATA = REPO_ROOT / "stack" / "data" / "demo.jsonl"
BENCHMARKS_FILE = REPO_ROOT / "BENCHMARKS.md"


@dataclass
class BenchConfig:
    """One benchmark run.

    Attributes:
        traces: Traces seeded in the window for each method.
        latency_ms: Fixed latency the judge adds to every request.
        rpm: The judge's requests-per-minute cap; 0 for none.
        baseline_sample: Traces the baseline evaluates before its time is extrapolated.
        methods: Methods to run, in order.
        slots: Judge tasks in flight in ``project-workers``, like the judge pool's slots.
        page_size: Page size of ``project-workers`` and the DAG methods.
        judge_concurrency: Judge calls in flight per judge task, at most, in the same.
        dag_page_size: The ``page_size`` param of the ``dag-test`` and ``scheduler`` runs.
        raised_concurrency: ``max_concurrency`` of ``batched-raised``.
        traces_for: Traces per method where it differs from ``traces``, for a method too slow
            at full size.
        work_dir: Where server logs, databases and Airflow homes go; a temp dir when None.
        trace_memory: Also measure the methods' Python heap peak with ``tracemalloc``. It slows
            every allocation, about halving throughput here, so it is off for timed runs.
        isolate: Run every method in its own interpreter, so that ``ru_maxrss`` is its own.
            Otherwise the methods run in the harness process.
    """

    traces: int = 2000
    latency_ms: float = 200.0
    rpm: int = 6000
    baseline_sample: int = 40
    methods: Sequence[str] = METHODS
    slots: int = 4
    page_size: int = 10
    judge_concurrency: int = 8
    dag_page_size: int = 10
    raised_concurrency: int = 32
    traces_for: dict[str, int] = field(default_factory=dict)
    work_dir: Path | None = None
    trace_memory: bool = False
    isolate: bool = True


@dataclass
class Stack:
    """The two servers of one method and the settings that reach them."""

    langfuse_server: ServerProcess
    judge_server: ServerProcess
    langfuse: LangfuseSettings
    judge: JudgeSettings


@contextmanager
def fresh_stack(state_dir: Path, *, rpm: int, latency_s: float) -> Iterator[Stack]:
    """Start a Langfuse server and a judge with new random keys; stop both by pid on exit.

    The Langfuse server starts on an empty database: a file left by an earlier run in the same
    work dir is removed first.
    """
    for stale in state_dir.glob("langfuse.db*"):
        stale.unlink()
    public_key = f"pk-lf-{secrets.token_hex(8)}"
    secret_key = f"sk-lf-{secrets.token_hex(16)}"
    judge_key = f"sk-judge-{secrets.token_hex(16)}"
    langfuse_server = start_server(
        "stack.langfuse_server",
        free_port(),
        {"LOCAL_LANGFUSE_PUBLIC_KEY": public_key, "LOCAL_LANGFUSE_SECRET_KEY": secret_key},
        state_dir / "langfuse.log",
        args=["--db", str(state_dir / "langfuse.db"), "--log-level", "WARNING"],
    )
    try:
        judge_server = start_server(
            "stack.judge_server",
            free_port(),
            {"LOCAL_JUDGE_API_KEY": judge_key},
            state_dir / "judge.log",
            health_path="/health",
            args=["--rpm", str(rpm), "--log-level", "error"],
        )
    except BaseException:
        langfuse_server.stop()
        raise
    try:
        reply = httpx.post(
            f"{judge_server.base_url}/_stack/latency", json={"seconds": latency_s}, timeout=10
        )
        reply.raise_for_status()
        yield Stack(
            langfuse_server=langfuse_server,
            judge_server=judge_server,
            langfuse=LangfuseSettings(
                host=langfuse_server.base_url, public_key=public_key, secret_key=secret_key
            ),
            judge=JudgeSettings(
                api_key=judge_key, model=JUDGE_MODEL, base_url=f"{judge_server.base_url}/v1"
            ),
        )
    finally:
        judge_server.stop()
        langfuse_server.stop()


def bench_window(now: datetime) -> Window:
    """Return the last complete 05:00-to-05:00 UTC window before ``now``."""
    end = now.astimezone(UTC).replace(hour=5, minute=0, second=0, microsecond=0)
    if end > now:
        end -= timedelta(days=1)
    return Window(end - timedelta(days=1), end)


def load_outputs(path: Path = DEMO_DATA) -> list[dict[str, Any]]:
    """Return the demo records whose output is a non-empty string, so every trace is judged."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in records if isinstance(r.get("output"), str) and r["output"].strip()]


def build_records(count: int, window: Window, tag: str = TAG) -> list[TraceRecord]:
    """Spread ``count`` traces evenly over the window, leaving its last 90 minutes empty."""
    outputs = load_outputs()
    first = window.start + timedelta(minutes=1)
    span = (window.end - timedelta(minutes=90)) - first
    step = span / max(count, 1)
    return [
        TraceRecord(
            start_time=first + step * index,
            input=outputs[index % len(outputs)]["input"],
            output=outputs[index % len(outputs)]["output"],
            tags=(tag,),
        )
        for index in range(count)
    ]


def _get_json(url: str) -> dict[str, Any]:
    reply = httpx.get(url, timeout=30)
    reply.raise_for_status()
    return reply.json()


def _run_method(
    method: str,
    langfuse: LangfuseSettings,
    judge: JudgeSettings,
    config: BenchConfig,
    window: Window,
    state_dir: Path,
) -> Outcome:
    if method == "baseline":
        return run_baseline(langfuse, judge, tag=TAG, window=window, sample=config.baseline_sample)
    if method in ("batched-default", "batched-raised"):
        concurrency = config.raised_concurrency if method == "batched-raised" else None
        return run_batched(langfuse, judge, tag=TAG, window=window, max_concurrency=concurrency)
    if method in ("project-workers", "project-workers-1000"):
        large = method == "project-workers-1000"
        return run_project_workers(
            langfuse,
            judge,
            tag=TAG,
            window=window,
            slots=config.slots,
            page_size=LARGE_PAGE_SIZE if large else config.page_size,
            judge_concurrency=LARGE_PAGE_CONCURRENCY if large else config.judge_concurrency,
        )
    if method == "dag-test":
        return run_dag_test(
            langfuse,
            judge,
            tag=TAG,
            window=window,
            work_dir=state_dir,
            page_size=config.dag_page_size,
        )
    if method == "scheduler":
        return run_scheduler(
            langfuse,
            judge,
            tag=TAG,
            window=window,
            work_dir=state_dir,
            page_size=config.dag_page_size,
        )
    raise ValueError(f"Unknown method {method!r}: use one of {list(METHODS)}.")


def _timed(
    method: str,
    langfuse: LangfuseSettings,
    judge: JudgeSettings,
    config: BenchConfig,
    window: Window,
    state_dir: Path,
) -> tuple[Outcome, float, float | None]:
    """Run a method in this process; return its outcome, wall time and tracemalloc peak MiB.

    The outcome's ``cpu_s`` is this process's CPU time over the call, unless the method set it
    or runs in processes of its own, whose CPU this process does not see.
    """
    if config.trace_memory:
        tracemalloc.start()
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        outcome = _run_method(method, langfuse, judge, config, window, state_dir)
        if outcome.cpu_s is None and method not in OWN_PROCESS_METHODS:
            outcome.cpu_s = time.process_time() - cpu_started
    finally:
        wall_s = time.perf_counter() - started
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20 if config.trace_memory else None
        if config.trace_memory:
            tracemalloc.stop()
    return outcome, wall_s, peak_mib


def _run_isolated(
    method: str, stack: Stack, config: BenchConfig, window: Window, state_dir: Path
) -> Outcome:
    """Run a method in a new interpreter, so its memory and imports are its own.

    The job file contains the local servers' random keys, so it is readable by its owner only.
    """
    job = {
        "method": method,
        "window": window.to_dict(),
        "state_dir": str(state_dir),
        "config": {
            "baseline_sample": config.baseline_sample,
            "slots": config.slots,
            "page_size": config.page_size,
            "judge_concurrency": config.judge_concurrency,
            "raised_concurrency": config.raised_concurrency,
            "trace_memory": config.trace_memory,
        },
        "langfuse": [stack.langfuse.host, stack.langfuse.public_key, stack.langfuse.secret_key],
        "judge": [stack.judge.api_key, stack.judge.model, stack.judge.base_url],
    }
    job_path = state_dir / "job.json"
    job_path.touch(mode=0o600)
    job_path.write_text(json.dumps(job), encoding="utf-8")
    result_path = state_dir / "result.json"
    with (state_dir / "method.log").open("ab") as log_file:
        completed = subprocess.run(
            [sys.executable, "-m", "bench.run", "--child", str(job_path), str(result_path)],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    if completed.returncode != 0 or not result_path.exists():
        raise RuntimeError(
            f"{method} subprocess failed ({completed.returncode}): see {state_dir / 'method.log'}"
        )
    result = json.loads(result_path.read_text(encoding="utf-8"))
    outcome = Outcome(**result["outcome"])
    outcome.wall_s = result["wall_s"]
    outcome.peak_mib = result["maxrss_kib"] / 1024
    outcome.cpu_s = result["outcome"].get("cpu_s")
    if result["tracemalloc_mib"] is not None:
        outcome.extra["tracemalloc_peak_mib"] = result["tracemalloc_mib"]
    return outcome


def _child_main(job_path: Path, result_path: Path) -> int:
    """Run the method of a job file and write its outcome, wall time and peak memory."""
    job = json.loads(job_path.read_text(encoding="utf-8"))
    config = BenchConfig(**job["config"])
    host, public_key, secret_key = job["langfuse"]
    api_key, model, base_url = job["judge"]
    outcome, wall_s, tracemalloc_mib = _timed(
        job["method"],
        LangfuseSettings(host=host, public_key=public_key, secret_key=secret_key),
        JudgeSettings(api_key=api_key, model=model, base_url=base_url),
        config,
        Window.from_dict(job["window"]),
        Path(job["state_dir"]),
    )
    result = {
        "outcome": asdict(outcome),
        "wall_s": wall_s,
        "tracemalloc_mib": tracemalloc_mib,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


def _memory_source(method: str, config: BenchConfig) -> str:
    if method == "scheduler":
        return "not measured: one process per task"
    if method == "dag-test" or config.isolate:
        return "ru_maxrss, subprocess"
    return "tracemalloc" if config.trace_memory else "not measured"


def measure(method: str, config: BenchConfig, window: Window, work_dir: Path) -> MethodResult:
    """Run one method on a fresh stack and measure it from outside."""
    count = config.traces_for.get(method, config.traces)
    state_dir = work_dir / method
    state_dir.mkdir(parents=True, exist_ok=True)
    with fresh_stack(state_dir, rpm=config.rpm, latency_s=config.latency_ms / 1000) as stack:
        seeded = send_traces(
            stack.langfuse.host,
            stack.langfuse.public_key,
            stack.langfuse.secret_key,
            build_records(count, window),
        )
        httpx.delete(f"{stack.langfuse_server.base_url}/_stack/stats", timeout=10)
        httpx.delete(f"{stack.judge_server.base_url}/_judge/stats", timeout=10)

        started = time.perf_counter()
        peak_mib: float | None = None
        if config.isolate and method not in OWN_PROCESS_METHODS:
            outcome = _run_isolated(method, stack, config, window, state_dir)
        else:
            outcome, _, peak_mib = _timed(
                method, stack.langfuse, stack.judge, config, window, state_dir
            )
        outer_wall_s = time.perf_counter() - started

        api_stats = _get_json(f"{stack.langfuse_server.base_url}/_stack/stats")
        judge_stats = _get_json(f"{stack.judge_server.base_url}/_judge/stats")
        checked_ids = seeded if outcome.evaluated_ids is None else outcome.evaluated_ids
        scores = read_trace_scores(stack.langfuse.api(), list(checked_ids))

    lost, duplicated = count_score_problems(scores)
    evaluated = len(outcome.evaluated_ids) if outcome.evaluated_ids is not None else 0
    if outcome.evaluated is not None:
        evaluated = outcome.evaluated
    if outcome.peak_mib is not None:
        peak_mib = outcome.peak_mib

    result = MethodResult(
        method=method,
        traces_total=count,
        evaluated=evaluated,
        wall_s=outcome.wall_s if outcome.wall_s is not None else outer_wall_s,
        judge_requests=judge_stats["requests"],
        rate_limited=judge_stats["rate_limited"],
        prompt_tokens=judge_stats["prompt_tokens"],
        completion_tokens=judge_stats["completion_tokens"],
        api_requests=api_stats["requests"],
        lost=lost,
        duplicated=duplicated,
        checked=len(checked_ids),
        peak_mib=peak_mib or 0.0,
        memory_source=_memory_source(method, config),
        extrapolated=method == "baseline" and evaluated < count,
        note=outcome.note,
        extra={**outcome.extra, "outer_wall_s": outer_wall_s},
        cpu_s=outcome.cpu_s,
        ceiling_tpm=config.rpm / 2 if config.rpm else None,
    )
    log.info(
        "%s: %d traces in %.1f s, %d judge calls, %d lost, %d duplicated",
        method,
        result.evaluated,
        result.wall_s,
        result.judge_calls,
        lost,
        duplicated,
    )
    return result


def run_benchmark(config: BenchConfig) -> list[MethodResult]:
    """Run every configured method, one after the other, and return their results."""
    work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="bench-"))
    window = bench_window(datetime.now(UTC))
    log.info("Window %s, work dir %s", window.to_dict(), work_dir)
    return [measure(method, config, window, work_dir) for method in config.methods]


def target_lines(
    results: Sequence[MethodResult], scale_results: Sequence[dict[str, Any]]
) -> list[str]:
    """Check the run against the project's speed and memory targets, one line each.

    A target whose method or size was not part of the run is listed as not measured.
    """
    by_method = {result.method: result for result in results}
    baseline = by_method.get("baseline")
    lines: list[str] = []

    def line(met: bool | None, text: str) -> None:
        if met is None:
            mark = "not measured"
        elif met:
            mark = "met"
        else:
            mark = "MISSED"
        lines.append(f"- {mark}: {text}")

    project = [r for r in results if r.method in ("project-workers", "project-workers-1000")]
    for result in project + [r for r in results if r.method in OWN_PROCESS_METHODS]:
        calls = result.per_trace(result.judge_calls)
        line(abs(calls - 2.0) < 0.005, f"`{result.method}` makes {calls:.2f} judge calls a trace")
    workers = by_method.get("project-workers")
    if workers is not None and workers.ceiling_tpm:
        share = workers.traces_per_min / workers.ceiling_tpm
        line(
            share >= 0.9 and workers.lost == 0,
            f"`project-workers` sustains {share:.0%} of the judge's ceiling "
            f"({workers.traces_per_min:.0f} of {workers.ceiling_tpm:.0f} traces/min, "
            f"{workers.rate_limited} 429s) with {workers.lost} lost (target: 90%, 0 lost)",
        )
    else:
        line(None, "share of the judge's ceiling (needs project-workers and --rpm)")
    if workers is not None and baseline is not None and baseline.traces_per_min:
        ratio = workers.traces_per_min / baseline.traces_per_min
        line(ratio >= 25, f"`project-workers` runs at {ratio:.1f}x the baseline (target: 25x)")
    else:
        line(None, "ratio to the baseline (needs baseline and project-workers)")
    large = by_method.get("project-workers-1000")
    if large is not None:
        per_1k = large.per_trace(sum(large.api_requests.values())) * 1000
        line(per_1k <= 10, f"page size 1,000 makes {per_1k:.1f} Langfuse requests per 1k traces")
    else:
        line(None, "Langfuse requests per 1k traces at page size 1,000")
    scheduler = by_method.get("scheduler")
    if scheduler is not None and baseline is not None and baseline.evaluated:
        baseline_s = baseline.wall_s / baseline.evaluated * scheduler.evaluated
        line(
            scheduler.wall_s < baseline_s,
            f"the scheduler run of {scheduler.evaluated} traces took {scheduler.wall_s:.1f} s, "
            f"the baseline takes {baseline_s:.1f} s for as many (extrapolated)",
        )
    else:
        line(None, "scheduler run against the baseline (needs baseline and scheduler)")
    if len(scale_results) >= 2:
        small, large_scale = scale_results[0], scale_results[-1]
        plan_s = next(s.wall_s for s in large_scale["steps"] if s.step == "plan_pages")
        line(plan_s < 60, f"planning {large_scale['traces']:,} traces took {plan_s:.1f} s")
        small_peaks = {s.step: s.peak_mib for s in small["steps"]}
        for step in large_scale["steps"]:
            ratio = step.peak_mib / small_peaks[step.step]
            line(
                ratio <= 1.2,
                f"`{step.step}` peak memory at {large_scale['traces']:,} traces is {ratio:.2f}x "
                f"the one at {small['traces']:,}",
            )
    else:
        line(None, "planning time and memory at scale (needs --scale-sizes with two sizes)")
    return lines


def _per_method(values: Sequence[str]) -> dict[str, int]:
    parsed = {}
    for value in values:
        method, _, count = value.partition("=")
        if method not in METHODS or not count.isdigit():
            raise argparse.ArgumentTypeError(f"--traces-for {value!r}: use METHOD=N")
        parsed[method] = int(count)
    return parsed


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--traces", type=int, default=2000, help="traces per method")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="judge latency")
    parser.add_argument("--rpm", type=int, default=6000, help="judge cap, 0 for none")
    parser.add_argument("--baseline-sample", type=int, default=40, help="traces the baseline runs")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--slots", type=int, default=4, help="judge slots of project-workers")
    parser.add_argument("--page-size", type=int, default=10, help="page size of project methods")
    parser.add_argument(
        "--judge-concurrency", type=int, default=8, help="judge calls in flight per judge task"
    )
    parser.add_argument(
        "--dag-page-size", type=int, default=10, help="page_size of the dag-test and scheduler runs"
    )
    parser.add_argument("--raised-concurrency", type=int, default=32, help="of batched-raised")
    parser.add_argument(
        "--traces-for", action="append", default=[], metavar="METHOD=N", help="traces of one method"
    )
    parser.add_argument(
        "--scale-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also measure planning and task memory at these trace counts (bench.scale)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="logs and databases")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the heap (slow)")
    parser.add_argument("--in-process", action="store_true", help="run methods in this process")
    parser.add_argument("--no-append", action="store_true", help="do not append BENCHMARKS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and append it to BENCHMARKS.md."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return _child_main(Path(argv[1]), Path(argv[2]))
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    config = BenchConfig(
        traces=args.traces,
        latency_ms=args.latency_ms,
        rpm=args.rpm,
        baseline_sample=args.baseline_sample,
        methods=args.methods,
        slots=args.slots,
        page_size=args.page_size,
        judge_concurrency=args.judge_concurrency,
        dag_page_size=args.dag_page_size,
        raised_concurrency=args.raised_concurrency,
        traces_for=_per_method(args.traces_for),
        work_dir=args.work_dir or Path(tempfile.mkdtemp(prefix="bench-")),
        trace_memory=args.tracemalloc,
        isolate=not args.in_process,
    )

    results = run_benchmark(config)
    table = render_table(results)
    assert config.work_dir is not None
    scale_results: list[dict[str, Any]] = []
    if args.scale_sizes:
        # bench.scale builds on this module's stack helpers, so it is imported here.
        from bench.scale import run_scale

        scale_args = argparse.Namespace(
            sizes=args.scale_sizes,
            page_size=config.dag_page_size,
            judge_concurrency=config.judge_concurrency,
            latency_ms=config.latency_ms,
            work_dir=config.work_dir / "scale",
        )
        scale_results, scale_table = run_scale(scale_args)
        table += "\n\nPlanning and task memory at a day's volume (`bench.scale`):\n\n" + scale_table
    table += "\n\nTargets:\n\n" + "\n".join(target_lines(results, scale_results))
    print(table)
    details = config.work_dir / "results.json"
    details.write_text(json.dumps([r.to_dict() for r in results], indent=2), encoding="utf-8")
    log.info("Details in %s", details)

    if not args.no_append:
        command = shlex.join(["python", "-m", "bench.run", *argv])
        append_run(BENCHMARKS_FILE, command=command, table=table, info=machine_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
