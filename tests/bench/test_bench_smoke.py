"""A tiny run of the benchmark harness: one row per method, the table's columns, no lost scores.

It runs the methods that can share the test process, in that process, on a handful of traces
with no judge latency and no rate cap. ``dag-test`` is left out because its Airflow migration
alone takes longer than this test may. The DAG under ``dag.test()`` is covered by
``tests/e2e``.
"""

from __future__ import annotations

from pathlib import Path

from bench.report import COLUMNS, MethodResult, render_table
from bench.run import BenchConfig, run_benchmark, target_lines

METHODS = ("baseline", "batched-default", "batched-raised", "project-workers")
TRACES = 6
SAMPLE = 3


def test_smoke_run_rows_per_method(tmp_path: Path) -> None:
    config = BenchConfig(
        traces=TRACES,
        latency_ms=0,
        rpm=0,
        baseline_sample=SAMPLE,
        methods=METHODS,
        slots=2,
        raised_concurrency=4,
        work_dir=tmp_path,
        trace_memory=True,
        isolate=False,
    )

    results = run_benchmark(config)

    assert [result.method for result in results] == list(METHODS)
    for result in results:
        expected = SAMPLE if result.method == "baseline" else TRACES
        assert result.evaluated == expected, result.method
        assert result.checked == expected, result.method
        assert result.lost == 0, result.method
        assert result.duplicated == 0, result.method
        assert result.judge_calls > 0, result.method
        assert sum(result.api_requests.values()) > 0, result.method
    by_method = {result.method: result for result in results}
    assert by_method["baseline"].extrapolated
    assert by_method["baseline"].judge_calls == 3 * SAMPLE
    assert by_method["project-workers"].judge_calls == 2 * TRACES

    lines = render_table(results).splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(METHODS)
    assert all(row.count(" | ") == len(COLUMNS) - 1 for row in rows)


def test_targets_name_what_is_missed() -> None:
    baseline = MethodResult(
        method="baseline",
        traces_total=100,
        evaluated=10,
        wall_s=7.0,
        judge_requests={"tone": 10, "geval_steps": 10, "geval_score": 10},
        extrapolated=True,
    )
    slow = MethodResult(
        method="project-workers",
        traces_total=100,
        evaluated=100,
        wall_s=60.0,
        judge_requests={"tone": 100, "geval_score": 100},
        ceiling_tpm=150.0,
    )
    lines = target_lines([baseline, slow], [])
    assert lines[0] == "- met: `project-workers` makes 2.00 judge calls a trace"
    # 100 traces a minute is 67% of a 150-a-minute ceiling and 1.2 times the baseline.
    assert lines[1].startswith("- MISSED: `project-workers` sustains 67% of the judge's ceiling")
    assert lines[2] == "- MISSED: `project-workers` runs at 1.2x the baseline (target: 25x)"
    assert all(line.startswith("- not measured") for line in lines[3:])
