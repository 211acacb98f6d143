"""Trigger the DAG from the Airflow UI's trigger form in headless chromium.

Traces are seeded over the last complete window with a tag of their own. In the UI, the test
finds the DAG, checks that the form shows every param with its title and description, sets the
tag and the page size, and triggers. The REST API and the local Langfuse server then show that
the run used both values. Screenshots of the filled form and of the finished run go to
``.artifacts/browser/``.
"""

from __future__ import annotations

import math
import re
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langfuse.api import LangfuseAPI

from include.langfuse_eval.scores import read_trace_scores
from stack.otlp import TraceRecord, send_traces

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / ".artifacts" / "browser"
TRACE_COUNT = 5
PAGE_SIZE = 3
RUN_TIMEOUT_S = 90.0
ANSWERS = [
    "Wow, what a fun question! Volcanoes are mountains that burp molten rock!",
    "The report is due on Friday; attach the figures as a single PDF.",
    "Great news: your order shipped today and arrives tomorrow!",
]


def last_window_end(now: datetime) -> datetime:
    """Return the last 05:00 UTC at or before ``now``: the end of a manual run's window."""
    end = now.replace(hour=5, minute=0, second=0, microsecond=0)
    return end if end <= now else end - timedelta(days=1)


def field_label(title: str) -> re.Pattern[str]:
    """Match a form field's label: the title, then the required marker when there is one."""
    return re.compile(rf"^{re.escape(title)}\s*\*?$")


def sign_in_if_required(page: Any, airflow_ui: Any) -> None:
    """Open the UI, and sign in when it redirects to the auth manager's login page."""
    from playwright.sync_api import expect

    page.goto(f"{airflow_ui.base_url}/")
    sign_in = page.get_by_role("button", name="Sign in")
    dags_link = page.get_by_role("link", name="Dags", exact=True).first
    expect(sign_in.or_(dags_link)).to_be_visible()
    if sign_in.is_visible():
        page.get_by_label("Username").fill(airflow_ui.username)
        page.get_by_label("Password").fill(airflow_ui.password)
        sign_in.click()
    expect(dags_link).to_be_visible()


@pytest.fixture
def seeded_traces(local_stack: Any) -> dict[str, Any]:
    """Send traces with a new tag, six hours before the last window's end."""
    tag = f"browser-form-{secrets.token_hex(4)}"
    # NOTE: a test that starts seconds before 05:00 UTC and triggers after it gets the next
    # window, without these traces, and fails on the run's data interval.
    window_end = last_window_end(datetime.now(UTC))
    records = [
        TraceRecord(
            start_time=window_end - timedelta(hours=6) + timedelta(minutes=index),
            input=f"Question {index}",
            output=ANSWERS[index % len(ANSWERS)],
            tags=(tag,),
        )
        for index in range(TRACE_COUNT)
    ]
    trace_ids = send_traces(
        local_stack.langfuse.base_url, local_stack.public_key, local_stack.secret_key, records
    )
    return {"tag": tag, "trace_ids": trace_ids, "window_end": window_end}


def test_trigger_form_runs_dag(
    airflow_ui, browser_page, dag_module: ModuleType, local_stack, seeded_traces, capsys
):
    from playwright.sync_api import expect

    dag_id = dag_module.DAG_ID
    params = dag_module.PARAMS
    client = airflow_ui.cluster.client
    assert params["page_size"].value != PAGE_SIZE
    run_id = f"browser_form_{secrets.token_hex(4)}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    form_shot = ARTIFACTS / "trigger-form.png"
    run_shot = ARTIFACTS / "finished-run.png"
    page = browser_page

    sign_in_if_required(page, airflow_ui)
    page.get_by_role("link", name="Dags", exact=True).first.click()
    page.get_by_role("textbox", name="Search Dags").fill(dag_id)
    page.get_by_role("link", name=dag_id, exact=True).click()
    # The URL changes before the DAG page replaces the list, whose rows have Trigger Dag
    # buttons of their own, so the form opens only once the DAG page's breadcrumb shows.
    breadcrumb = page.get_by_role("navigation", name="breadcrumb")
    expect(breadcrumb.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
    page.get_by_role("button", name="Trigger Dag").click()

    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=f"Trigger Dag - {dag_id}")).to_be_visible()
    run_params = dialog.get_by_role("button", name="Run Parameters")
    expect(run_params).to_be_visible()
    if run_params.get_attribute("aria-expanded") != "true":
        run_params.click()
    fields = {}
    for name, param in params.items():
        title = param.schema.get("title")
        assert title, f"param {name} has no title"
        field = dialog.get_by_role("group").filter(has=page.get_by_text(field_label(title)))
        expect(field, f"form field of param {name}").to_have_count(1)
        expect(field.get_by_text(param.description, exact=True)).to_be_visible()
        fields[name] = field

    # In Airflow 3.3.2 the tag field's label names another element id than its input's, so the
    # input has no accessible name and is found inside its field.
    tag_box = fields["tag"].get_by_role("textbox")
    expect(tag_box).to_have_value(params["tag"].value)
    tag_box.fill(seeded_traces["tag"])
    page_size_box = fields["page_size"].get_by_role("spinbutton")
    expect(page_size_box).to_have_value(str(params["page_size"].value))
    page_size_box.fill(str(PAGE_SIZE))
    page_size_box.blur()
    expect(page_size_box).to_have_value(str(PAGE_SIZE))
    expect(dialog.get_by_role("checkbox", name=f"Unpause {dag_id} on trigger")).to_be_checked()
    dialog.screenshot(path=str(form_shot))

    dialog.get_by_role("button", name="Advanced Options").click()
    dialog.get_by_role("textbox", name="Run ID").fill(run_id)
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(page).to_have_url(re.compile(rf"/dags/{dag_id}/runs/{run_id}(\?.*)?$"))

    run = client.wait_for_run(dag_id, run_id, timeout_s=RUN_TIMEOUT_S)
    unfinished = client.unfinished_tasks(dag_id, run_id)
    assert run["state"] == "success", f"{unfinished}\n{airflow_ui.log_tails()}"
    assert run["run_type"] == "manual"
    assert run["triggered_by"] == "ui"
    assert run["conf"]["tag"] == seeded_traces["tag"]
    assert run["conf"]["page_size"] == PAGE_SIZE
    assert datetime.fromisoformat(run["data_interval_end"]) == seeded_traces["window_end"]
    assert [other["dag_run_id"] for other in client.list_runs(dag_id)] == [run_id]

    pages = math.ceil(TRACE_COUNT / PAGE_SIZE)
    instances = client.task_instances(dag_id, run_id)
    fetches = [ti for ti in instances if ti["task_id"] == "evaluate_page.fetch_page"]
    assert sorted(ti["map_index"] for ti in fetches) == list(range(pages))
    summary = client.xcom(dag_id, run_id, "summarize_run")
    assert summary["traces_found"] == TRACE_COUNT
    assert summary["pages"] == pages

    api = LangfuseAPI(
        base_url=local_stack.langfuse.base_url,
        username=local_stack.public_key,
        password=local_stack.secret_key,
    )
    scores = read_trace_scores(api, seeded_traces["trace_ids"])
    for trace_id in seeded_traces["trace_ids"]:
        names = Counter(score.name for score in scores[trace_id])
        assert names == Counter({"tone": 1, "joyfulness": 1}), trace_id

    # After triggering, the URL keeps the Dags list's search as a query, and the run page turns
    # it into a task filter. So the run page is opened again without the query.
    page.goto(f"{airflow_ui.base_url}/dags/{dag_id}/runs/{run_id}")
    run_heading = page.get_by_role("heading", name=run_id, exact=True)
    state_badge = run_heading.locator("xpath=following-sibling::*[@data-testid='state-badge']")
    expect(state_badge).to_have_text("Success")
    page.screenshot(path=str(run_shot), full_page=True)
    with capsys.disabled():
        print(f"\ntrigger form screenshot: {form_shot}\nfinished run screenshot: {run_shot}")
