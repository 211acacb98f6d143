"""Start a real Airflow deployment on 127.0.0.1 and drive it through its REST API.

The deployment is the one of `docker-compose.yaml` without Docker. A PostgreSQL database stores
the metadata and Redis is the Celery broker. The API server, the scheduler, the DAG processor,
an optional triggerer and N Celery workers (or the LocalExecutor) each run as a process with
its own log file. The tests in `tests/cluster` and the benchmark use it like this:

    url = create_database("airflow_test")
    try:
        with AirflowCluster(home, database_url=url, workers=2, extra_env=connections) as cluster:
            cluster.wait_for_dag("langfuse_external_eval")
            cluster.client.set_paused("langfuse_external_eval", paused=False)
            run = cluster.client.trigger_run("langfuse_external_eval", conf={"page_size": 4})
            cluster.client.wait_for_run("langfuse_external_eval", run["dag_run_id"])
    finally:
        drop_database(url)

Interface:

- `postgres_available()`, `redis_available()`: whether the services respond on 127.0.0.1.
- `create_database(prefix) -> str` and `drop_database(url)`: a fresh PostgreSQL database and
  its SQLAlchemy URL (`postgresql+psycopg2://postgres@127.0.0.1:5432/<prefix>_<random>`);
  `postgres_database(prefix)` is both as a context manager.
- `RedisDatabase.claim()`: a Redis database number that no other cluster uses, marked with
  an owner key; `release()` flushes it.
- `AirflowCluster(home, *, database_url, executor, broker_url, workers, worker_concurrency,
  pool_slots, extra_env, triggerer, start_timeout_s)`: a context manager that migrates the
  database, creates the pools, starts the processes and stops them on exit.
  `cluster.client` is an `AirflowRestClient`, `cluster.airflow(*args)` runs the `airflow` CLI
  with the cluster's environment, `cluster.wait_for_dag(dag_id)` waits for the first parse,
  `cluster.worker_hostnames` lists the hostnames that the workers' task instances record,
  `cluster.processes` and `cluster.logs` map process names to processes and log files.
- `AirflowRestClient(base_url, username, password)`: a JWT from `POST /auth/token`, then the
  `/api/v2` calls for DAGs, runs, task instances, XComs, pools and backfills.

The settings that make the scheduler react within about a second, instead of the defaults'
5 to 300 seconds, are in `FAST_SCHEDULING_ENV`; `extra_env` overrides any of them.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from stack.process import (
    HOST,
    REPO_ROOT,
    ServerStartError,
    _log_tail,
    _pid_alive,
    _terminate_with_parent,
    free_port,
)

log = logging.getLogger(__name__)

POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
REDIS_PORT = 6379
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
DAG_FILE = REPO_ROOT / "dags" / "langfuse_external_eval.py"
DEFAULT_POOL_SLOTS = {"JUDGE_POOL": 4, "LANGFUSE_POOL": 8}
"""Slots per pool, keyed by the name of the DAG file's constant that contains the pool name."""

ADMIN_USER = "admin"
WORKER_HOSTNAME_ENV = "AIRFLOW_CLUSTER_WORKER_HOSTNAME"
REDIS_OWNER_KEY = "airflow-cluster:owner"
REDIS_DATABASES = range(1, 16)
"""Redis databases a cluster may claim. Database 0 is left to other users of the server."""

JWT_SECRET_BYTES = 64
"""Random bytes of the JWT secret. Airflow 3.3.2 signs with HMAC-SHA512, where PyJWT wants 64."""
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.5
TERMINAL_RUN_STATES = frozenset({"success", "failed"})

FAST_SCHEDULING_ENV = {
    # The scheduler loop: heartbeat and idle sleep are 5 s and 1 s by default.
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    # The DAG processor looks for new DAG files every 300 s by default. It parses the files it
    # has at start at once, and reparses each every 30 s (min_file_process_interval, kept).
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
    # The Celery executor forks this many processes to read task states (0 means cores - 1).
    "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
    # Redis redelivers a task unacknowledged for this long. Setting it stops a startup warning.
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
}
"""Scheduler, DAG processor and Celery settings for fast test runs."""


# Hostname callable of the workers' task processes. Every worker on one machine would record the
# same fully qualified domain name, so each gets its own name through the environment.
def worker_hostname() -> str:
    """Return the worker name set in the environment, or the machine's FQDN outside a worker."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def _admin_connection(timeout_s: float = 5.0) -> Any:
    import psycopg2

    connection = psycopg2.connect(
        host=HOST,
        port=POSTGRES_PORT,
        user=POSTGRES_USER,
        dbname="postgres",
        connect_timeout=max(int(timeout_s), 1),
    )
    connection.autocommit = True
    return connection


def postgres_available(timeout_s: float = 2.0) -> bool:
    """Return whether PostgreSQL on 127.0.0.1:5432 accepts the `postgres` user without password."""
    import psycopg2

    try:
        _admin_connection(timeout_s).close()
    except psycopg2.Error:
        return False
    return True


def redis_available(timeout_s: float = 2.0) -> bool:
    """Return whether Redis on 127.0.0.1:6379 replies to PING."""
    import redis

    try:
        return bool(redis.Redis(host=HOST, port=REDIS_PORT, socket_timeout=timeout_s).ping())
    except redis.RedisError:
        return False


def create_database(prefix: str) -> str:
    """Create an empty PostgreSQL database named `<prefix>_<random hex>` on 127.0.0.1:5432.

    The server must accept the `postgres` user without a password (trust authentication).

    Args:
        prefix: Start of the database name: lowercase letters, digits and underscores.

    Returns:
        The database's SQLAlchemy URL, `postgresql+psycopg2://postgres@127.0.0.1:5432/<name>`.

    Raises:
        ValueError: If `prefix` contains other characters.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", prefix):
        raise ValueError(
            f"Invalid database prefix {prefix!r}: use up to 41 lowercase letters, digits and "
            "underscores, starting with a letter."
        )
    name = f"{prefix}_{secrets.token_hex(4)}"
    connection = _admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return f"postgresql+psycopg2://{POSTGRES_USER}@{HOST}:{POSTGRES_PORT}/{name}"


def drop_database(url: str) -> None:
    """Drop a database made by `create_database`, closing its remaining connections first.

    Args:
        url: The URL that `create_database` returned.
    """
    name = urlsplit(url).path.lstrip("/")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"Invalid database name {name!r} in {url!r}.")
    connection = _admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


@dataclass
class RedisDatabase:
    """A Redis database on 127.0.0.1:6379 that one cluster owns while it runs.

    The owner key in the database contains the owner's pid and a random token. A database is
    free when it is empty, or when its owner key names a process that no longer runs, as after
    a crashed test. Claiming a database flushes it.
    """

    number: int
    owner: str

    @property
    def url(self) -> str:
        """The broker URL, `redis://127.0.0.1:6379/<number>`."""
        return f"redis://{HOST}:{REDIS_PORT}/{self.number}"

    @classmethod
    def claim(cls) -> RedisDatabase:
        """Claim the first free database among 1 to 15.

        Returns:
            The claimed database, flushed, with only the owner key in it.

        Raises:
            RuntimeError: If every database is in use.
        """
        owner = f"{os.getpid()}:{secrets.token_hex(8)}"
        for number in REDIS_DATABASES:
            if _try_claim(number, owner):
                return cls(number, owner)
        raise RuntimeError(
            f"Every Redis database {REDIS_DATABASES.start} to {REDIS_DATABASES.stop - 1} on "
            f"{HOST}:{REDIS_PORT} is in use; stop other clusters or flush a stale database."
        )

    def release(self) -> None:
        """Flush the database if this cluster still owns it."""
        import redis

        client = redis.Redis(host=HOST, port=REDIS_PORT, db=self.number)
        with client.pipeline() as pipe, contextlib.suppress(redis.WatchError):
            pipe.watch(REDIS_OWNER_KEY)
            if pipe.get(REDIS_OWNER_KEY) == self.owner.encode():
                pipe.multi()
                pipe.flushdb()
                pipe.execute()


def _owner_is_gone(value: bytes | None) -> bool:
    if value is None:
        return False
    pid_text = value.decode(errors="replace").partition(":")[0]
    return not (pid_text.isdigit() and _pid_alive(int(pid_text)))


def _try_claim(number: int, owner: str) -> bool:
    """Claim database `number`. WATCH on the owner key fails the claim if another cluster wins."""
    import redis

    client = redis.Redis(host=HOST, port=REDIS_PORT, db=number)
    with client.pipeline() as pipe:
        try:
            pipe.watch(REDIS_OWNER_KEY)
            current = pipe.get(REDIS_OWNER_KEY)
            empty = current is None and pipe.dbsize() == 0
            if not (empty or _owner_is_gone(current)):
                return False
            pipe.multi()
            pipe.flushdb()
            pipe.set(REDIS_OWNER_KEY, owner)
            pipe.execute()
        except redis.WatchError:
            return False
    return True


def read_dag_constants(names: Sequence[str], dag_file: Path = DAG_FILE) -> dict[str, str]:
    """Read module-level string constants from the DAG file without importing Airflow.

    Args:
        names: Constant names such as `JUDGE_POOL`.
        dag_file: The DAG file.

    Returns:
        The value of each name.

    Raises:
        KeyError: If a name is not assigned a string literal at module level.
    """
    values: dict[str, str] = {}
    for node in ast.parse(dag_file.read_text(encoding="utf-8")).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                values[target.id] = node.value.value
    missing = [name for name in names if name not in values]
    if missing:
        raise KeyError(f"{dag_file} assigns no string constant named {', '.join(missing)}")
    return {name: values[name] for name in names}


class AirflowApiError(RuntimeError):
    """An Airflow REST API call returned an error status."""


class AirflowRestClient:
    """A client of the Airflow 3 REST API with a JWT from the simple auth manager.

    Args:
        base_url: The API server, e.g. `http://127.0.0.1:8080`.
        username: A user of `[core] simple_auth_manager_users`.
        password: The user's password from the passwords file.
        timeout_s: Timeout of each request.
    """

    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 30.0):
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)
        self._username = username
        self._password = password
        self._token: str | None = None

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def _authorize(self) -> str:
        response = self._http.post(
            "/auth/token", json={"username": self._username, "password": self._password}
        )
        if response.status_code != httpx.codes.CREATED:
            raise AirflowApiError(
                f"POST /auth/token failed with {response.status_code} for user "
                f"{self._username!r}: {response.text[:500]}"
            )
        return str(response.json()["access_token"])

    def request(
        self, method: str, path: str, *, expected: Sequence[int] = (200,), **kwargs: Any
    ) -> httpx.Response:
        """Send a request under `/api/v2` with the JWT, getting a new token once on 401.

        Args:
            method: HTTP method.
            path: Path after `/api/v2`, e.g. `/dags/my_dag`.
            expected: Status codes that count as success.
            **kwargs: Passed to `httpx.Client.request` (`json`, `params`).

        Returns:
            The response.

        Raises:
            AirflowApiError: If the status is not in `expected`.
        """
        for attempt in range(2):
            if self._token is None:
                self._token = self._authorize()
            headers = {"Authorization": f"Bearer {self._token}"}
            response = self._http.request(method, f"/api/v2{path}", headers=headers, **kwargs)
            if response.status_code == httpx.codes.UNAUTHORIZED and attempt == 0:
                self._token = None
                continue
            break
        if response.status_code not in expected:
            raise AirflowApiError(
                f"{method} /api/v2{path} failed with {response.status_code}: {response.text[:1000]}"
            )
        return response

    def _paged(self, path: str, items_key: str, params: Mapping[str, Any]) -> list[dict]:
        items: list[dict] = []
        while True:
            page = self.request(
                "GET", path, params={**params, "limit": 100, "offset": len(items)}
            ).json()
            items.extend(page[items_key])
            if not page[items_key] or len(items) >= page["total_entries"]:
                return items

    def health(self) -> dict[str, Any]:
        """Return `/api/v2/monitor/health`: metadatabase, scheduler, triggerer, DAG processor."""
        return self.request("GET", "/monitor/health").json()

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        """Return a DAG's details, or None while the DAG processor has not stored it."""
        response = self.request("GET", f"/dags/{quote(dag_id)}", expected=(200, 404))
        return response.json() if response.status_code == httpx.codes.OK else None

    def import_errors(self) -> list[dict[str, Any]]:
        """Return the import errors of the parsed DAG files."""
        return self._paged("/importErrors", "import_errors", {})

    def set_paused(self, dag_id: str, *, paused: bool) -> dict[str, Any]:
        """Pause or unpause a DAG."""
        return self.request("PATCH", f"/dags/{quote(dag_id)}", json={"is_paused": paused}).json()

    def set_pool(self, name: str, slots: int, description: str = "") -> dict[str, Any]:
        """Create a pool, or update its slots when it exists."""
        body = {"name": name, "slots": slots, "description": description}
        response = self.request("PATCH", f"/pools/{quote(name)}", json=body, expected=(200, 404))
        if response.status_code == httpx.codes.OK:
            return response.json()
        return self.request("POST", "/pools", json=body, expected=(201,)).json()

    def trigger_run(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        logical_date: str | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Trigger a run the way the UI's trigger form does.

        Args:
            dag_id: The DAG.
            conf: Param values; the API server validates them against the DAG's params and
                returns 400 for invalid values.
            logical_date: ISO 8601 logical date; None triggers a run without one.
            run_id: The run id; Airflow generates one when None.

        Returns:
            The created run, with `dag_run_id`.
        """
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        return self.request(
            "POST", f"/dags/{quote(dag_id)}/dagRuns", json=body, expected=(200,)
        ).json()

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """Return one run."""
        return self.request("GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}").json()

    def list_runs(self, dag_id: str, *, run_type: str | None = None) -> list[dict[str, Any]]:
        """Return a DAG's runs, oldest logical date first.

        Args:
            dag_id: The DAG.
            run_type: `scheduled`, `manual`, `backfill` or `asset_triggered`; None for all.
        """
        params: dict[str, Any] = {"order_by": "logical_date"}
        if run_type is not None:
            params["run_type"] = run_type
        return self._paged(f"/dags/{quote(dag_id)}/dagRuns", "dag_runs", params)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Return every task instance of a run, mapped ones included, with `hostname`."""
        path = f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances"
        return self._paged(path, "task_instances", {})

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """Return an XCom value as stored in the database (JSON for plain values)."""
        path = (
            f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            f"/xcomEntries/{quote(key)}"
        )
        return self.request("GET", path).json()["value"]

    def create_backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        *,
        conf: Mapping[str, Any] | None = None,
        reprocess_behavior: str = "none",
        max_active_runs: int = 10,
    ) -> dict[str, Any]:
        """Create a backfill: queued runs for every logical date in `[from_date, to_date]`.

        NOTE: the tests create their backfill with the `airflow backfill create` CLI, so this
        call is not exercised by them.

        Returns:
            The backfill, with its `id`.
        """
        body = {
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "dag_run_conf": dict(conf or {}),
            "reprocess_behavior": reprocess_behavior,
            "max_active_runs": max_active_runs,
        }
        return self.request("POST", "/backfills", json=body).json()

    def list_backfills(self, dag_id: str) -> list[dict[str, Any]]:
        """Return a DAG's backfills, oldest first."""
        return self._paged("/backfills", "backfills", {"dag_id": dag_id})

    def get_backfill(self, backfill_id: int) -> dict[str, Any]:
        """Return one backfill; `completed_at` is set once all its runs have finished."""
        return self.request("GET", f"/backfills/{backfill_id}").json()

    def unfinished_tasks(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Return the task instances of a run that did not succeed, as `task[index]: state`."""
        return {
            f"{ti['task_id']}[{ti['map_index']}]": ti["state"]
            for ti in self.task_instances(dag_id, run_id)
            if ti["state"] not in ("success", "skipped")
        }

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 600.0) -> dict[str, Any]:
        """Wait until a run is `success` or `failed` and return it.

        Raises:
            TimeoutError: If the run is still unfinished after `timeout_s`; the message lists
                its unfinished task instances.
        """
        run = _poll(
            lambda: self.get_run(dag_id, run_id),
            lambda run: run["state"] in TERMINAL_RUN_STATES,
            timeout_s,
        )
        if run is None:
            raise TimeoutError(
                f"Run {run_id} of {dag_id} did not finish within {timeout_s:.0f} s; "
                f"unfinished task instances: {self.unfinished_tasks(dag_id, run_id)}"
            )
        return run


def _poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float) -> Any | None:
    """Call `read` until `done` accepts its result; None when `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_INTERVAL_S)


@dataclass
class ClusterProcess:
    """One Airflow process of a cluster, leader of its own process group.

    The leader is reaped only after its group got SIGKILL: until then its pid, which is the
    group id, cannot be reused, so the signals reach this cluster's processes only.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def exit_code(self) -> int | None:
        """The leader's exit code (negative for a signal), or None while it runs."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        # WNOWAIT reads the state of an exited leader and leaves it a zombie, unreaped.
        result = os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if result is None or result.si_pid == 0:
            return None
        return result.si_status if result.si_code == os.CLD_EXITED else -result.si_status

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the process's log."""
        return _log_tail(self.log_path, lines)

    def terminate(self) -> None:
        """Send SIGTERM to the process group, unless it was stopped already.

        A Celery worker finishes its running tasks on SIGTERM (warm shutdown). Its pool
        children, like the API server's workers, share the leader's process group.
        """
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for the leader until the monotonic `deadline`, SIGKILL the group, reap it."""
        if self.popen.returncode is not None:
            return
        while self.exit_code is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.exit_code is None:
            log.warning(
                "airflow %s did not exit after SIGTERM; killing its process group", self.name
            )
        # Children of the group may outlive their leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        log.debug("airflow %s exited with code %s", self.name, self.popen.returncode)


@dataclass
class AirflowCluster:
    """A running Airflow deployment on 127.0.0.1 (see the module docstring).

    Args:
        home: AIRFLOW_HOME, created when missing: config, passwords file and logs go there.
        database_url: SQLAlchemy URL of an empty or migrated PostgreSQL database.
        executor: `CeleryExecutor` or `LocalExecutor`.
        broker_url: Redis URL for Celery. None claims a free Redis database (see
            `RedisDatabase`), which is flushed at the start and on exit. A given URL is used
            as is and never flushed.
        workers: Celery workers to start (ignored by the LocalExecutor).
        worker_concurrency: Task slots per Celery worker.
        pool_slots: Slots per pool name. None creates the DAG's two pools with 4 judge and 8
            Langfuse API slots, like `make airflow-init`.
        extra_env: Variables for every process, applied after the cluster's own, such as
            `AIRFLOW_CONN_*` connections, `AIRFLOW__CORE__PARALLELISM` or overrides of
            `FAST_SCHEDULING_ENV`. Left out of the repr, because connections contain keys.
        triggerer: Start a triggerer too (only deferrable tasks need it).
        start_timeout_s: Seconds each process may take to become ready.
    """

    home: Path
    database_url: str
    executor: str = "CeleryExecutor"
    broker_url: str | None = None
    workers: int = 2
    worker_concurrency: int = 2
    pool_slots: Mapping[str, int] | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    triggerer: bool = False
    start_timeout_s: float = 120.0
    processes: dict[str, ClusterProcess] = field(default_factory=dict, init=False)
    worker_hostnames: list[str] = field(default_factory=list, init=False)
    _client: AirflowRestClient | None = field(default=None, init=False, repr=False)
    _redis: RedisDatabase | None = field(default=None, init=False, repr=False)
    _env: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _api_port: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"Invalid executor {self.executor!r}: use one of {EXECUTORS}.")
        if self.executor == "CeleryExecutor" and self.workers < 1:
            raise ValueError("The CeleryExecutor needs at least one worker.")
        self.home = Path(self.home)

    def __enter__(self) -> AirflowCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        """The API server's base URL."""
        return f"http://{HOST}:{self._api_port}"

    @property
    def client(self) -> AirflowRestClient:
        """The REST client, logged in as the admin user."""
        if self._client is None:
            raise RuntimeError("The cluster is not started.")
        return self._client

    @property
    def env(self) -> dict[str, str]:
        """A copy of the environment of the cluster's processes (it contains the JWT secret)."""
        return dict(self._env)

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of each process, by process name."""
        return {name: process.log_path for name, process in self.processes.items()}

    def start(self) -> None:
        """Migrate the database, create the pools and start every process.

        Raises:
            ServerStartError: If a process exits or is not ready in time; the message
                contains the tail of its log. Processes already started are stopped.
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        if self.executor == "CeleryExecutor" and self.broker_url is None:
            self._redis = RedisDatabase.claim()
        password = secrets.token_urlsafe(16)
        self._api_port = free_port()
        self._env = self._build_env(password)

        started = time.monotonic()
        migrate = self.airflow("db", "migrate", timeout_s=self.start_timeout_s, check=False)
        if migrate.returncode != 0:
            raise ServerStartError(
                f"airflow db migrate failed with code {migrate.returncode}:\n"
                f"{migrate.stdout[-3000:]}"
            )
        log.info("Migrated the metadata database in %.1f s", time.monotonic() - started)

        self._launch("api-server", ["api-server", "--host", HOST, "--port", str(self._api_port)])
        self._client = AirflowRestClient(self.api_url, ADMIN_USER, password)
        self._wait("api-server", self._api_server_ready)
        for name, slots in self._pool_slots().items():
            self.client.set_pool(name, slots, "Created by stack.airflow_cluster")

        self._launch("scheduler", ["scheduler", "--skip-serve-logs"])
        self._launch("dag-processor", ["dag-processor"])
        if self.triggerer:
            self._launch("triggerer", ["triggerer", "--skip-serve-logs"])
        if self.executor == "CeleryExecutor":
            self._start_workers()
        self._wait("scheduler", lambda: self._component_healthy("scheduler"))
        self._wait("dag-processor", lambda: self._component_healthy("dag_processor"))
        if self.triggerer:
            self._wait("triggerer", lambda: self._component_healthy("triggerer"))
        for index in range(len(self.worker_hostnames)):
            name = f"worker-{index + 1}"
            self._wait(name, lambda name=name: " ready." in self._log_text(name))
        log.info(
            "Airflow cluster ready at %s after %.1f s: %s, logs in %s",
            self.api_url,
            time.monotonic() - started,
            ", ".join(self.processes),
            self.home / "logs",
        )

    def _build_env(self, password: str) -> dict[str, str]:
        """Build the environment shared by every process.

        Inherited `AIRFLOW__*`, `AIRFLOW_CONN_*` and `AIRFLOW_VAR_*` variables are dropped, so
        the caller's own Airflow settings, such as a test session's SQLite home, do not apply.
        """
        passwords_file = self.home / "simple_auth_manager_passwords.json"
        passwords_file.write_text(json.dumps({ADMIN_USER: password}), encoding="utf-8")
        passwords_file.chmod(0o600)
        from cryptography.fernet import Fernet

        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
        }
        paths = [str(REPO_ROOT), str(REPO_ROOT / "plugins")]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PYTHONPATH": os.pathsep.join(paths),
                "DEEPEVAL_TELEMETRY_OPT_OUT": "1",
                "DEEPEVAL_DISABLE_DOTENV": "1",
                "DEEPEVAL_FILE_SYSTEM": "READ_ONLY",
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(self._api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(JWT_SECRET_BYTES),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                **FAST_SCHEDULING_ENV,
            }
        )
        if self.executor == "CeleryExecutor":
            broker_url = self.broker_url or self._redis.url  # type: ignore[union-attr]
            env["AIRFLOW__CELERY__BROKER_URL"] = broker_url
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+{self.database_url}"
            env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = str(self.worker_concurrency)
        env.update(self.extra_env)
        return env

    def _pool_slots(self) -> dict[str, int]:
        if self.pool_slots is not None:
            return dict(self.pool_slots)
        names = read_dag_constants(list(DEFAULT_POOL_SLOTS))
        return {names[constant]: slots for constant, slots in DEFAULT_POOL_SLOTS.items()}

    def _start_workers(self) -> None:
        cluster_id = self.home.name
        for index in range(1, self.workers + 1):
            hostname = f"{cluster_id}-worker-{index}"
            args = [
                "celery",
                "worker",
                "--celery-hostname",
                f"{hostname}@{HOST}",
                "--concurrency",
                str(self.worker_concurrency),
                "--skip-serve-logs",
                "--without-mingle",
                "--without-gossip",
            ]
            worker_env = {
                WORKER_HOSTNAME_ENV: hostname,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            }
            self._launch(f"worker-{index}", args, worker_env)
            self.worker_hostnames.append(hostname)

    def _launch(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        log_path = self.home / "logs" / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                cwd=str(REPO_ROOT),
                env={**self._env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_terminate_with_parent,
            )
        self.processes[name] = ClusterProcess(name, popen, log_path)

    def _log_text(self, name: str) -> str:
        return self.processes[name].log_path.read_text(encoding="utf-8", errors="replace")

    def _api_server_ready(self) -> bool:
        try:
            reply = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return reply.status_code == httpx.codes.OK

    def _component_healthy(self, component: str) -> bool:
        status = (self.client.health().get(component) or {}).get("status")
        return status == "healthy"

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        """Wait until `ready()` is true, failing early when process `name` exits."""
        process = self.processes[name]
        deadline = time.monotonic() + self.start_timeout_s
        while not ready():
            if process.exit_code is not None:
                raise ServerStartError(
                    f"airflow {name} exited with code {process.exit_code}; "
                    f"log tail:\n{process.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"airflow {name} was not ready within {self.start_timeout_s:.0f} s; "
                    f"log tail:\n{process.log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)

    def check_processes(self) -> None:
        """Raise if a process has exited.

        Raises:
            RuntimeError: Naming the process, its exit code and its log tail.
        """
        for process in self.processes.values():
            if process.exit_code is not None:
                raise RuntimeError(
                    f"airflow {process.name} exited with code {process.exit_code}; "
                    f"log tail:\n{process.log_tail()}"
                )

    def wait_for_dag(self, dag_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Wait until the DAG processor has stored `dag_id` and return its details.

        Raises:
            ServerStartError: If it does not appear in time; the message contains the import
                errors and the tail of the DAG processor's log.
        """
        dag = _poll(lambda: self.client.get_dag(dag_id), lambda dag: dag is not None, timeout_s)
        if dag is None:
            raise ServerStartError(
                f"DAG {dag_id} was not parsed within {timeout_s:.0f} s; import errors: "
                f"{self.client.import_errors()}; dag-processor log tail:\n"
                f"{self.processes['dag-processor'].log_tail()}"
            )
        return dag

    def airflow(
        self, *args: str, timeout_s: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run an `airflow` CLI command with the cluster's environment.

        Args:
            *args: The command line after `airflow`, e.g. `"backfill", "create", ...`.
            timeout_s: Seconds before the command is killed.
            check: Raise `subprocess.CalledProcessError` on a non-zero exit code.

        Returns:
            The finished process, stdout and stderr merged in `stdout`.
        """
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            cwd=str(REPO_ROOT),
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=check,
        )

    def stop(self) -> None:
        """Stop every process by its process group and free the broker database.

        The other processes stop side by side, and the API server last. So a task still
        running on a worker can report its end while the worker shuts down warm.
        """
        # An open keep-alive connection would hold up the API server's graceful shutdown.
        if self._client is not None:
            self._client.close()
        api = [process for name, process in self.processes.items() if name == "api-server"]
        others = [process for name, process in self.processes.items() if name != "api-server"]
        started = time.monotonic()
        for group in (others, api):
            for process in group:
                process.terminate()
            deadline = time.monotonic() + STOP_GRACE_S
            for process in group:
                process.wait_or_kill(deadline)
        if self.processes:
            log.info("Stopped the Airflow cluster in %.1f s", time.monotonic() - started)
        if self._redis is not None:
            self._redis.release()
            self._redis = None


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """Create a database with `create_database`, yield its URL, and drop it afterwards."""
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)
