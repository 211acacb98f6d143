"""The ``langfuse`` connection type: provider registration, connection form, hook and link URL.

Registration is checked with Airflow's real ProvidersManager and plugin loader in fresh
interpreters of the venv, as every Airflow process starts, and through the connection form
metadata that a real api-server on 127.0.0.1 serves. The hook reads connections from
``AIRFLOW_CONN_*`` variables and talks to the local Langfuse server over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from langfuse_eval_connections import langfuse_settings
from langfuse_eval_provider.hook import LangfuseHook
from langfuse_eval_provider.links import traces_url

from include.langfuse_eval.errors import ConfigurationError
from stack.process import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CONN_TYPE = "langfuse"
HOOK_CLASS = "langfuse_eval_provider.hook.LangfuseHook"
LOCAL_PROJECT_ID = "local-project"
LABELS = {"host": "Langfuse Host", "login": "Public Key", "password": "Secret Key"}
HIDDEN = {"schema", "port", "extra"}
API_SERVER_START_S = 180

PROVIDERS_SCRIPT = """
import importlib, json
from airflow.providers_manager import ProvidersManager

manager = ProvidersManager()
provider = manager.providers.get("langfuse-airflow-eval")
hook = manager.hooks.get("langfuse")
module_name, class_name = hook.hook_class_name.rsplit(".", 1)
hook_class = getattr(importlib.import_module(module_name), class_name)
widget = manager.connection_form_widgets.get("extra__langfuse__project_id")
print(json.dumps({
    "version": provider.version if provider else None,
    "hook_class_name": hook.hook_class_name,
    "hook_name": hook.hook_name,
    "connection_testable": hook.connection_testable,
    "class_conn_type": hook_class.conn_type,
    "field_behaviour": manager.field_behaviours.get("langfuse"),
    "project_id_label": widget.field["schema"]["title"] if widget else None,
}))
"""

PLUGINS_SCRIPT = """
import json, sys
from airflow import plugins_manager

plugins_manager.ensure_plugins_loaded()
print(json.dumps({
    "import_errors": plugins_manager.get_import_errors(),
    "connections_loaded": "langfuse_eval_connections" in sys.modules,
    "top_level": sorted(name for name in ("hook", "links", "provider_info") if name in sys.modules),
}))
"""


def run_python(script: str) -> dict[str, Any]:
    """Run a script in a fresh interpreter of the venv and parse its last output line as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def connection_env(conn: dict[str, Any]) -> dict[str, str]:
    """Return the variable that defines ``conn`` as ``langfuse_default``."""
    return {"AIRFLOW_CONN_LANGFUSE_DEFAULT": json.dumps(conn)}


def test_providers_manager_lists_langfuse_type() -> None:
    info = run_python(PROVIDERS_SCRIPT)

    assert info["version"] == "0.1.0"
    assert info["hook_class_name"] == HOOK_CLASS
    assert info["hook_name"] == "Langfuse"
    assert info["connection_testable"] is True
    assert info["class_conn_type"] == CONN_TYPE
    assert info["field_behaviour"]["relabeling"] == LABELS
    assert set(info["field_behaviour"]["hidden_fields"]) == HIDDEN
    assert info["field_behaviour"]["placeholders"]["host"] == "https://cloud.langfuse.com"
    assert info["project_id_label"] == "Project ID"


def test_plugin_loader_skips_provider_files() -> None:
    loaded = run_python(PLUGINS_SCRIPT)

    assert loaded["import_errors"] == {}
    assert loaded["connections_loaded"] is True
    assert loaded["top_level"] == []


def test_cli_lists_langfuse_hook() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "hooks", "--output", "json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    rows = [row for row in json.loads(result.stdout) if row["connection_type"] == CONN_TYPE]
    assert len(rows) == 1
    assert rows[0]["class"] == HOOK_CLASS
    assert rows[0]["package_name"] == "langfuse-airflow-eval"


@pytest.fixture
def api_server(airflow_db: Path, tmp_path: Path) -> Iterator[str]:
    """Start a real api-server on 127.0.0.1, every request an admin, and stop it by pid."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    log_file = (tmp_path / "api-server.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "airflow", "api-server"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + API_SERVER_START_S
        while not server_healthy(base_url):
            assert process.poll() is None, (tmp_path / "api-server.log").read_text()
            assert time.monotonic() < deadline, "the api-server did not start"
            time.sleep(1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log_file.close()


def server_healthy(base_url: str) -> bool:
    """Tell whether the api-server's health check returns 200."""
    try:
        return httpx.get(f"{base_url}/api/v2/monitor/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_api_server_form_has_langfuse(api_server: str) -> None:
    reply = httpx.get(f"{api_server}/ui/connections/hook_meta", timeout=60)

    assert reply.status_code == 200
    [meta] = [item for item in reply.json() if item["connection_type"] == CONN_TYPE]
    assert meta["hook_class_name"] == HOOK_CLASS
    assert meta["hook_name"] == "Langfuse"
    fields = meta["standard_fields"]
    for field, label in LABELS.items():
        assert fields[field]["title"] == label, field
        assert fields[field]["hidden"] is False, field
    assert fields["port"]["hidden"] is True
    assert fields["url_schema"]["hidden"] is True
    assert meta["extra_fields"]["project_id"]["schema"]["title"] == "Project ID"


def test_hook_reads_langfuse_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": CONN_TYPE,
        "host": "cloud.langfuse.com",
        "login": "pk-lf-public",
        "password": "sk-lf-secret",
        "extra": {"project_id": "proj-42"},
    }
    for name, value in connection_env(conn).items():
        monkeypatch.setenv(name, value)

    hook = LangfuseHook()
    settings = hook.get_settings()

    assert settings.host == "https://cloud.langfuse.com"
    assert settings.public_key == "pk-lf-public"
    assert settings.secret_key == "sk-lf-secret"
    assert hook.get_project_id() == "proj-42"
    assert langfuse_settings() == settings


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        pytest.param("http://pk:sk@127.0.0.1:3000", "http://127.0.0.1:3000", id="http-uri"),
        pytest.param(
            "langfuse://pk:sk@langfuse.example.com",
            "https://langfuse.example.com",
            id="langfuse-uri",
        ),
        pytest.param(
            "langfuse://pk:sk@langfuse.example.com:8443",
            "https://langfuse.example.com:8443",
            id="langfuse-uri-port",
        ),
        pytest.param(
            "langfuse://pk:sk@127.0.0.1:3030", "http://127.0.0.1:3030", id="langfuse-uri-loopback"
        ),
        pytest.param(
            "langfuse://pk:sk@localhost:3030", "http://localhost:3030", id="langfuse-uri-localhost"
        ),
    ],
)
def test_hook_reads_uri_connections(uri: str, host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LANGFUSE_DEFAULT", uri)

    settings = langfuse_settings()

    assert settings.host == host
    assert settings.public_key == "pk"
    assert settings.secret_key == "sk"


def test_hook_strips_keys_and_lowers_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "langfuse",
        "host": "HTTPS://cloud.langfuse.com",
        "login": " pk-lf-public\n",
        "password": "sk-lf-secret \n",
    }
    for name, value in connection_env(conn).items():
        monkeypatch.setenv(name, value)

    settings = langfuse_settings()

    assert settings.host == "https://cloud.langfuse.com"
    assert settings.public_key == "pk-lf-public"
    assert settings.secret_key == "sk-lf-secret"


def test_blank_secret_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "langfuse", "host": "cloud.langfuse.com", "login": "pk", "password": " "}
    for name, value in connection_env(conn).items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError, match="keys are missing"):
        langfuse_settings()


def test_missing_connection_says_how_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_LANGFUSE_MISSING", raising=False)

    with pytest.raises(ConfigurationError, match="set AIRFLOW_CONN_LANGFUSE_MISSING"):
        langfuse_settings("langfuse_missing")


def stack_connection(local_stack: Any, secret_key: str | None = None) -> dict[str, Any]:
    """Return a ``langfuse`` connection to the local stack, optionally with another secret."""
    return {
        "conn_type": CONN_TYPE,
        "host": local_stack.langfuse.base_url,
        "login": local_stack.public_key,
        "password": secret_key or local_stack.secret_key,
    }


def test_hook_looks_up_project_id(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in connection_env(stack_connection(local_stack)).items():
        monkeypatch.setenv(name, value)

    hook = LangfuseHook()

    assert hook.get_project_id() == LOCAL_PROJECT_ID
    assert hook.test_connection() == (
        True,
        f"Connected to Langfuse project 'Local project' ({LOCAL_PROJECT_ID}).",
    )


def test_connection_test_rejected_key(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = stack_connection(local_stack, secret_key="sk-lf-wrong")
    for name, value in connection_env(wrong).items():
        monkeypatch.setenv(name, value)

    ok, message = LangfuseHook().test_connection()

    assert ok is False
    assert "401" in message
    assert "sk-lf-wrong" not in message


def parse_traces_filter(url: str) -> list[tuple[str, str, str, str, str]]:
    """Decode the ``filter`` query parameter the way the Langfuse web UI does."""
    [encoded] = parse_qs(urlsplit(url).query)["filter"]
    conditions = []
    for item in encoded.split(","):
        column, kind, key, operator, value = item.split(";")
        conditions.append((column, kind, key, operator, unquote(value)))
    return conditions


def test_traces_url_encodes_filter() -> None:
    start = datetime(2026, 12, 3, 5, tzinfo=UTC)
    end = datetime(2026, 12, 4, 5, tzinfo=UTC)

    url = traces_url("https://cloud.langfuse.com/", "proj 1", "a,b;c|d", start, end)

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://cloud.langfuse.com"
    assert parts.path == "/project/proj%201/traces"
    assert parse_traces_filter(url) == [
        ("tags", "arrayOptions", "", "any of", "a,b;c\\|d"),
        ("timestamp", "datetime", "", ">=", "2026-12-03T05:00:00.000Z"),
        ("timestamp", "datetime", "", "<", "2026-12-04T05:00:00.000Z"),
    ]


@pytest.mark.parametrize(
    ("end", "inclusive", "expected"),
    [
        pytest.param("2026-12-03T06:00:00.123000+00:00", False, "06:00:00.123Z", id="exclusive"),
        pytest.param("2026-12-03T06:00:00.123000+00:00", True, "06:00:00.124Z", id="inclusive"),
        pytest.param("2026-12-03T06:00:00.123456+00:00", False, "06:00:00.124Z", id="rounded-up"),
        pytest.param("2026-12-03T07:00:00.123456+01:00", True, "06:00:00.124Z", id="offset"),
    ],
)
def test_traces_url_end_rounding(end: str, inclusive: bool, expected: str) -> None:
    start = datetime(2026, 12, 3, 5, tzinfo=UTC)

    url = traces_url(
        "https://h", "p", "t", start, datetime.fromisoformat(end), end_inclusive=inclusive
    )

    assert parse_traces_filter(url)[2] == (
        "timestamp",
        "datetime",
        "",
        "<",
        f"2026-12-03T{expected}",
    )
