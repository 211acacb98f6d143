"""A score write killed with SIGKILL halfway, then run again, leaves one score per trace and name.

A child process runs ``write_scores`` for 15 traces (30 scores, 5 per request) against the
local Langfuse server, which handles the first two requests at once and delays the later ones.
When the third request arrives, two batches have landed, and the child is killed by pid. The same
write then runs again in this process, and the scores are read back through v3 scores.
"""

from __future__ import annotations

import json
import os
import runpy
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from langfuse.api import LangfuseAPI

from include.langfuse_eval.scores import read_trace_scores, write_scores

WRITE = "POST /api/public/scores"
TRACES = 15
BATCH_SIZE = 5
DELAY_S = 3.0
"""Seconds that the server delays each score write after the first two."""

JOB = '''
"""Build the scores of the given traces and write them, 5 per request."""

import json
import os
import sys
from datetime import datetime

from langfuse.api.scores.types.create_score_request import CreateScoreRequest

from include.langfuse_eval.scores import score_id, write_scores
from include.langfuse_eval.settings import LangfuseSettings

SCORES = (("tone", "joyful", "CATEGORICAL"), ("joyfulness", 0.8, "NUMERIC"))


def build_requests(trace_ids, stamp):
    return [
        CreateScoreRequest(
            id=score_id(trace_id, name),
            trace_id=trace_id,
            name=name,
            value=value,
            data_type=data_type,
            timestamp=datetime.fromisoformat(stamp),
        )
        for trace_id in trace_ids
        for name, value, data_type in SCORES
    ]


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    settings = LangfuseSettings(
        host=spec["host"],
        public_key=os.environ["JOB_LANGFUSE_PUBLIC_KEY"],
        secret_key=os.environ["JOB_LANGFUSE_SECRET_KEY"],
    )
    write_scores(settings.api(), build_requests(spec["trace_ids"], spec["stamp"]), batch_size=5)
'''


def score_posts(admin: httpx.Client) -> int:
    """Return how many score writes reached the server."""
    return int(admin.get("/_stack/stats").json()["requests"].get(WRITE, 0))


def wait_for_posts(admin: httpx.Client, count: int, child: subprocess.Popen[bytes]) -> None:
    """Poll the server's counters until ``count`` score writes arrived."""
    deadline = time.monotonic() + 20.0
    while score_posts(admin) < count:
        if child.poll() is not None:
            pytest.fail(f"the write job ended early with code {child.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"the write job sent fewer than {count} score writes in 20 s")
        time.sleep(0.02)


def count_scores(api: LangfuseAPI, trace_ids: list[str]) -> dict[str, Counter[str]]:
    """Count the stored scores of each trace by name."""
    stored = read_trace_scores(api, trace_ids)
    return {
        trace_id: Counter(score.name for score in scores) for trace_id, scores in stored.items()
    }


def test_killed_write_rerun_once(local_stack: Any, tmp_path: Path) -> None:
    base_url = local_stack.langfuse.base_url
    api = LangfuseAPI(
        base_url=base_url, username=local_stack.public_key, password=local_stack.secret_key
    )
    job = tmp_path / "write_job.py"
    job.write_text(JOB, encoding="utf-8")
    trace_ids = [secrets.token_hex(16) for _ in range(TRACES)]
    spec = {"host": base_url, "trace_ids": trace_ids, "stamp": "2026-12-03T12:00:00+00:00"}
    env = {
        **os.environ,
        "JOB_LANGFUSE_PUBLIC_KEY": local_stack.public_key,
        "JOB_LANGFUSE_SECRET_KEY": local_stack.secret_key,
    }
    rules = [
        {"method": "POST", "path_prefix": "/api/public/scores", "times": 2},
        {"method": "POST", "path_prefix": "/api/public/scores", "delay_s": DELAY_S, "times": None},
    ]
    with httpx.Client(base_url=base_url, timeout=10.0) as admin:
        admin.delete("/_stack/faults").raise_for_status()
        admin.post("/_stack/faults", json={"rules": rules}).raise_for_status()
        before = score_posts(admin)
        child = subprocess.Popen(
            [sys.executable, str(job), json.dumps(spec)], env=env, stdin=subprocess.DEVNULL
        )
        try:
            wait_for_posts(admin, before + 3, child)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
            admin.delete("/_stack/faults").raise_for_status()

    landed = sum(sum(counts.values()) for counts in count_scores(api, trace_ids).values())
    assert landed == 2 * BATCH_SIZE

    scores = runpy_requests(job, trace_ids, spec["stamp"])
    write_scores(api, scores, batch_size=BATCH_SIZE)
    counts = count_scores(api, trace_ids)
    expected = Counter({"tone": 1, "joyfulness": 1})
    assert counts == {trace_id: expected for trace_id in trace_ids}
    assert sum(sum(c.values()) for c in counts.values()) == 2 * TRACES


def runpy_requests(job: Path, trace_ids: list[str], stamp: str) -> list[Any]:
    """Build the same score requests as the killed job, with the job's own code."""
    return runpy.run_path(str(job))["build_requests"](trace_ids, stamp)
