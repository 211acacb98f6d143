"""Secrets stay out of logs, XCom, rendered fields and scores, and a run talks only to its stack.

The local stack's keys are random and recognisable, so a search for them finds any leak.
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dag_runs import run_dag, window_end_after

from include.langfuse_eval.scores import read_trace_scores
from stack.otlp import TraceRecord, send_traces

pytestmark = pytest.mark.e2e

TAG = "security-checks"


@pytest.fixture(scope="module")
def security_traces(local_stack: Any) -> tuple[datetime, list[str]]:
    """Send two traces that start now and return the send time and their ids."""
    now = datetime.now(UTC)
    records = [
        TraceRecord(
            start_time=now - timedelta(seconds=index),
            input="How far away is the Sun?",
            output="About 150 million km! Light needs a little over 8 minutes for the trip!",
            tags=(TAG,),
        )
        for index in range(2)
    ]
    ids = send_traces(
        local_stack.langfuse.base_url, local_stack.public_key, local_stack.secret_key, records
    )
    return now, ids


def window_conf(now: datetime) -> dict[str, Any]:
    """Return the run conf of a window around ``now`` for the security tag."""
    return {
        "tag": TAG,
        "window_start": (now - timedelta(minutes=10)).isoformat(),
        "window_end": (now + timedelta(minutes=10)).isoformat(),
        "force": True,
    }


def stored_run_values(run_id: str) -> str:
    """Return every XCom value and rendered template field of a run, as one JSON text."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.run_id == run_id)).all()
        rendered = session.scalars(
            select(RenderedTaskInstanceFields).where(RenderedTaskInstanceFields.run_id == run_id)
        ).all()
        values = [XComModel.deserialize_value(row) for row in xcoms]
        fields = [row.rendered_fields for row in rendered]
    return json.dumps({"xcom": values, "rendered": fields}, default=str)


def airflow_log_files(airflow_home: Path) -> str:
    """Return the text of every log file under the Airflow home."""
    return "\n".join(
        path.read_text(errors="replace") for path in airflow_home.rglob("*.log") if path.is_file()
    )


def test_secrets_absent_everywhere(
    dag, local_stack, api, security_traces, airflow_db, caplog, capfd
):
    now, trace_ids = security_traces
    caplog.set_level(logging.DEBUG)
    secrets_to_find = {
        "Langfuse secret key": local_stack.secret_key,
        "judge API key": local_stack.judge_key,
    }

    dag_run = run_dag(dag, local_stack, window_conf(now), window_end_after(now))

    assert dag_run.state == "success"
    captured = capfd.readouterr()
    scores = read_trace_scores(api, trace_ids)
    score_text = json.dumps(
        [[score.comment, score.metadata] for found in scores.values() for score in found]
    )
    places = {
        "log records": caplog.text,
        "stdout": captured.out,
        "stderr": captured.err,
        "log files": airflow_log_files(airflow_db),
        "XCom and rendered fields": stored_run_values(dag_run.run_id),
        "score comments and metadata": score_text,
    }
    assert sum(len(found) for found in scores.values()) == 2 * len(trace_ids)
    assert "DEBUG" in caplog.text
    for place, text in places.items():
        for label, secret in secrets_to_find.items():
            assert secret not in text, f"{label} found in {place}"


def test_run_connects_only_to_stack(dag, local_stack, security_traces, monkeypatch):
    now, _ = security_traces
    allowed = {
        ("127.0.0.1", local_stack.langfuse.port),
        ("127.0.0.1", local_stack.judge.port),
    }
    connected: list[Any] = []
    looked_up: list[str] = []
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def record_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            connected.append(tuple(address[:2]))
        return original_connect(self, address)

    def record_connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            connected.append(tuple(address[:2]))
        return original_connect_ex(self, address)

    def record_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(str(host))
        return original_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", record_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", record_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", record_getaddrinfo)

    dag_run = run_dag(dag, local_stack, window_conf(now), window_end_after(now))

    assert dag_run.state == "success"
    assert connected, "the run opened no TCP connection at all"
    assert set(connected) <= allowed
    assert set(looked_up) <= {"127.0.0.1", "localhost"}


@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "redaction-off"])
def test_trace_secrets_redacted(dag, local_stack, redact):
    now = datetime.now(UTC)
    email = "ada.lovelace@example.org"
    token = "sk-" + "Q7" * 24
    tag = f"redaction-{'on' if redact else 'off'}"
    send_traces(
        local_stack.langfuse.base_url,
        local_stack.public_key,
        local_stack.secret_key,
        [
            TraceRecord(
                start_time=now,
                input="Can you check my setup?",
                output=f"Sure! Write to {email} and never paste keys like {token} in chats!",
                tags=(tag,),
            )
        ],
    )
    conf = {**window_conf(now), "tag": tag, "redact": redact}

    dag_run = run_dag(dag, local_stack, conf, window_end_after(now))

    assert dag_run.state == "success"
    stored = stored_run_values(dag_run.run_id)
    assert (email in stored) is not redact
    assert (token in stored) is not redact
    assert ("[REDACTED_EMAIL]" in stored) is redact
