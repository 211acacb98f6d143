"""Results of benchmark methods, the checks on the scores they wrote, and the Markdown table."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCORE_NAMES = ("tone", "joyfulness")

COLUMNS = (
    "method",
    "traces",
    "wall s",
    "traces/min",
    "vs baseline",
    "of ceiling",
    "judge calls/trace",
    "API req/1k traces",
    "429s",
    "lost",
    "duplicated",
    "peak MiB",
    "CPU ms/trace",
    "prompt tok/trace",
    "completion tok/trace",
)


@dataclass
class Outcome:
    """A method's own account: the traces it evaluated and its own counters.

    Attributes:
        evaluated_ids: Trace ids the method evaluated; their scores are read back. None
            when the method cannot list them: then every seeded trace is read back.
        evaluated: How many traces the method evaluated, when it gives no ids.
        extra: Method-specific numbers, kept in the JSON output.
        note: Free text for the table's notes.
        wall_s: The method's own wall time, when it is measured inside a subprocess.
        peak_mib: The method's own peak memory, when it is measured inside a subprocess.
        cpu_s: CPU time (user and system, all threads) that the method's own process spent
            while it ran, when it is measured inside a subprocess.
    """

    evaluated_ids: list[str] | None
    evaluated: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    wall_s: float | None = None
    peak_mib: float | None = None
    cpu_s: float | None = None


@dataclass
class MethodResult:
    """Measurements of one method, taken from outside it.

    Attributes:
        method: The method's name on the command line.
        traces_total: Traces in the window with an output to judge.
        evaluated: Traces the method evaluated. Below ``traces_total`` for a sampled method.
        wall_s: Wall time of the evaluated traces, seconds.
        judge_requests: Chat completions the judge served, by request kind.
        rate_limited: Requests the judge rejected with 429.
        prompt_tokens: Prompt tokens the judge counted.
        completion_tokens: Completion tokens the judge counted.
        api_requests: Requests the Langfuse server received while the method ran, by route.
        lost: Checked traces without a score of some name.
        duplicated: Checked traces with more than one score of some name.
        checked: Traces whose scores were read back.
        peak_mib: Peak memory in MiB.
        memory_source: How ``peak_mib`` was measured.
        extrapolated: Whether the row scales a sample to ``traces_total``.
        cpu_s: CPU time of the method's own process while it ran, or None when not measured.
        ceiling_tpm: The judge's cap in traces per minute at 2 calls per trace, or None
            without a cap.
        note: Free text for the table's notes.
        extra: Method-specific numbers kept in the JSON output.
    """

    method: str
    traces_total: int
    evaluated: int
    wall_s: float
    judge_requests: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    api_requests: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    checked: int = 0
    peak_mib: float = 0.0
    memory_source: str = ""
    extrapolated: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_s: float | None = None
    ceiling_tpm: float | None = None

    @property
    def judge_calls(self) -> int:
        """Chat completions served, over all kinds."""
        return sum(self.judge_requests.values())

    @property
    def reported_wall_s(self) -> float:
        """Wall time for all ``traces_total`` traces, scaled linearly for a sample."""
        if self.extrapolated and self.evaluated:
            return self.wall_s * self.traces_total / self.evaluated
        return self.wall_s

    @property
    def traces_per_min(self) -> float:
        """Evaluated traces per minute of wall time."""
        return self.evaluated / self.wall_s * 60 if self.wall_s > 0 else 0.0

    def per_trace(self, value: float) -> float:
        """Divide a total by the evaluated traces."""
        return value / self.evaluated if self.evaluated else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the result with its derived numbers, JSON-ready."""
        return {
            **asdict(self),
            "reported_wall_s": self.reported_wall_s,
            "traces_per_min": self.traces_per_min,
            "judge_calls_per_trace": self.per_trace(self.judge_calls),
            "api_requests_per_1k_traces": self.per_trace(sum(self.api_requests.values())) * 1000,
        }


def count_score_problems(
    scores: Mapping[str, Iterable[Any]], names: Iterable[str] = SCORE_NAMES
) -> tuple[int, int]:
    """Count traces that lack a score of a name and traces with more than one of a name.

    Args:
        scores: The scores of each checked trace, objects with a ``name``, by trace id.
        names: The score names to check: each trace should have exactly one of each.

    Returns:
        The lost and the duplicated trace counts. A trace can count in both.
    """
    required = tuple(names)
    lost = duplicated = 0
    for trace_scores in scores.values():
        counts = Counter(score.name for score in trace_scores)
        if any(counts[name] == 0 for name in required):
            lost += 1
        if any(counts[name] > 1 for name in required):
            duplicated += 1
    return lost, duplicated


def _row(result: MethodResult, baseline_tpm: float | None) -> list[str]:
    traces = str(result.evaluated)
    if result.extrapolated:
        traces = f"{result.evaluated} of {result.traces_total}, extrapolated"
    elif result.evaluated != result.traces_total:
        traces = f"{result.evaluated} of {result.traces_total}"
    ratio = f"{result.traces_per_min / baseline_tpm:.1f}x" if baseline_tpm else "n/a"
    ceiling = f"{result.traces_per_min / result.ceiling_tpm:.0%}" if result.ceiling_tpm else "n/a"
    cpu = f"{result.per_trace(result.cpu_s) * 1000:.1f}" if result.cpu_s is not None else "n/a"
    wall = f"{result.reported_wall_s:.1f}"
    if result.extrapolated:
        wall += " (extrapolated)"
    checked = f" of {result.checked}" if result.checked != result.traces_total else ""
    return [
        result.method,
        traces,
        wall,
        f"{result.traces_per_min:.0f}",
        ratio,
        ceiling,
        f"{result.per_trace(result.judge_calls):.2f}",
        f"{result.per_trace(sum(result.api_requests.values())) * 1000:.0f}",
        str(result.rate_limited),
        f"{result.lost}{checked}",
        f"{result.duplicated}{checked}",
        f"{result.peak_mib:.0f} ({result.memory_source})" if result.peak_mib else "n/a",
        cpu,
        f"{result.per_trace(result.prompt_tokens):.0f}",
        f"{result.per_trace(result.completion_tokens):.0f}",
    ]


def render_table(results: list[MethodResult]) -> str:
    """Render one Markdown table, a row per method, with notes under it."""
    baseline = next((r for r in results if r.method == "baseline"), None)
    baseline_tpm = baseline.traces_per_min if baseline and baseline.traces_per_min else None
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines.extend("| " + " | ".join(_row(r, baseline_tpm)) + " |" for r in results)
    notes = [f"- `{r.method}`: {r.note}" for r in results if r.note]
    if notes:
        lines.extend(["", *notes])
    return "\n".join(lines)


def machine_info() -> dict[str, str]:
    """Describe the machine: ``uname -a``, ``nproc``, the Python version and the UTC date."""

    def run(*command: str) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        return done.stdout.strip()

    return {
        "uname": run("uname", "-a"),
        "nproc": run("nproc"),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def append_run(path: Path, *, command: str, table: str, info: Mapping[str, str]) -> None:
    """Append one run, its command, machine and date, to the benchmarks file."""
    section = [
        "",
        f"## Run of {info['date_utc']}",
        "",
        "```",
        command,
        "```",
        "",
        f"- Machine: `{info['uname']}`, {info['nproc']} CPUs, {info['python']}",
        "",
        table,
        "",
    ]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(section))
