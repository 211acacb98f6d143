"""A tiny run of the scale measurement: every DAG task step in its own interpreter, one table.

Two small sizes keep it short; the real sizes (10,000 and 100,000 traces) run in ``make bench``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.scale import STEPS, run_scale
from stack.langfuse_server import Store


def test_scale_steps_run_and_table_has_ratio_row(tmp_path: Path) -> None:
    args = argparse.Namespace(
        sizes=[12, 24], page_size=5, judge_concurrency=4, latency_ms=0.0, work_dir=tmp_path
    )

    results, table = run_scale(args)

    assert [result["traces"] for result in results] == [12, 24]
    for result in results:
        steps = {step.step: step for step in result["steps"]}
        assert list(steps) == list(STEPS)
        plan = steps["plan_pages"]
        assert plan.extra["pages"] == result["traces"] // 5 + (result["traces"] % 5 > 0)
        assert steps["fetch_page"].extra["items"] == 5
        assert steps["judge_tone"].extra == {"verdicts": 5, "errors": 0}
        assert steps["judge_joyfulness"].extra == {"verdicts": 5, "errors": 0}
        assert steps["push_scores"].extra["scores_written"] == {"tone": 5, "joyfulness": 5}
        assert all(step.peak_mib > 0 for step in steps.values())
        # The seeded rows are in the server's database, one root per trace.
        store = Store(tmp_path / f"n{result['traces']}" / "langfuse.db")
        try:
            (row,) = store.query("SELECT COUNT(DISTINCT trace_id) AS n FROM observations")
            assert row["n"] == result["traces"]
        finally:
            store.close()
    sizes_table, profile = table.split("\n\n", 1)
    lines = sizes_table.splitlines()
    assert len(lines) == 2 + 2 + 1
    assert lines[-1].startswith("| 24 / 12 |")
    assert lines[-1].count("x") == len(STEPS)
    # The profile has a row per task, and waiting plus own CPU make up each task's wall time.
    rows = [line for line in profile.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]] == list(STEPS)
    for step in results[-1]["steps"]:
        assert step.cpu_s > 0
        assert step.waiting_s + min(step.cpu_s, step.wall_s) == pytest.approx(step.wall_s)
