"""Fixtures of the browser tests: an Airflow deployment on 127.0.0.1 and headless chromium.

The deployment is `stack.airflow_cluster` with the LocalExecutor on a fresh PostgreSQL
database, its connections pointing at the session's local stack. The tests skip when chromium,
Playwright or PostgreSQL on 127.0.0.1:5432 is missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stack.airflow_cluster import (
    ADMIN_USER,
    AirflowCluster,
    create_database,
    drop_database,
    postgres_available,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "langfuse_external_eval"
DAG_FILE = REPO_ROOT / "dags" / f"{DAG_ID}.py"
ARTIFACTS = REPO_ROOT / ".artifacts" / "browser"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Without the last three flags chromium connects to outside services at start (component
# updates, sync), and a machine without outside network rejects those connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 2400}
"""Tall enough for the whole trigger form, so one screenshot shows every param."""
# Loading the form, triggering and page loads wait on the API server, which shares the machine
# with the scheduler and the running tasks, so expect() waits 30 s, not Playwright's 5 s.
UI_TIMEOUT_MS = 30_000
PLAYWRIGHT_EXPECT_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class AirflowUI:
    """A running Airflow deployment with the UI's URL and login."""

    cluster: AirflowCluster
    username: str
    password: str

    @property
    def base_url(self) -> str:
        """The API server's base URL, which also serves the UI."""
        return self.cluster.api_url

    def log_tails(self) -> str:
        """Return the end of every process's log, for failure messages."""
        return "\n".join(
            f"--- {name}:\n{process.log_tail()}" for name, process in self.cluster.processes.items()
        )


@pytest.fixture(scope="session")
def dag_module() -> ModuleType:
    """Load the DAG file as a module, for its constants and ``PARAMS``."""
    spec = importlib.util.spec_from_file_location("browser_dag_file", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Return the chromium executable, or skip when chromium or Playwright is missing."""
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"chromium is not installed: none of {', '.join(CHROMIUM_NAMES)} is on PATH")


@pytest.fixture(scope="module")
def airflow_ui(
    tmp_path_factory: pytest.TempPathFactory, local_stack: Any, chromium_path: str
) -> Iterator[AirflowUI]:
    """Start api-server, scheduler and dag-processor on PostgreSQL and wait for the DAG.

    The scheduler creates no scheduled runs (``max_dagruns_to_create_per_loop`` 0), so
    unpausing the DAG from the form starts only the form's run, and no daily run writes scores
    into the session's local stack.
    """
    if not postgres_available():
        pytest.skip(
            "PostgreSQL on 127.0.0.1:5432 is unreachable or rejects the postgres user without a "
            "password"
        )
    home = tmp_path_factory.mktemp("airflow-browser")
    extra_env = {
        **local_stack.connection_env(),
        "LANGFUSE_EVAL_TIMEZONE": "UTC",
        "AIRFLOW__SCHEDULER__MAX_DAGRUNS_TO_CREATE_PER_LOOP": "0",
    }
    database_url = create_database("airflow_browser_test")
    try:
        with AirflowCluster(
            home, database_url=database_url, executor="LocalExecutor", extra_env=extra_env
        ) as cluster:
            cluster.wait_for_dag(DAG_ID)
            passwords_file = cluster.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
            password = json.loads(Path(passwords_file).read_text(encoding="utf-8"))[ADMIN_USER]
            yield AirflowUI(cluster, ADMIN_USER, password)
    finally:
        drop_database(database_url)


def save_failure_page(page: Any, test_name: str) -> None:
    """Save a screenshot and the accessibility tree of the page that a failed test left open."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"{test_name}-failure.png"
    tree = ARTIFACTS / f"{test_name}-failure.aria.yaml"
    page.screenshot(path=str(screenshot), full_page=True)
    tree.write_text(page.locator("body").aria_snapshot(), encoding="utf-8")
    print(f"\nfailure screenshot: {screenshot}\naccessibility tree: {tree}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell that the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def browser_page(chromium_path: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Open a page in headless chromium with a new empty profile.

    When the test fails, a screenshot and the accessibility tree of the page go to
    ``.artifacts/browser/``.
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    try:
        with sync_playwright() as playwright:
            # launch() gives every browser a new temporary profile, deleted on close.
            browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport=VIEWPORT)
                context.set_default_timeout(UI_TIMEOUT_MS)
                page = context.new_page()
                yield page
                report = getattr(request.node, "report_call", None)
                if report is not None and report.failed:
                    save_failure_page(page, request.node.name)
            finally:
                browser.close()
    finally:
        expect.set_options(timeout=PLAYWRIGHT_EXPECT_TIMEOUT_MS)
