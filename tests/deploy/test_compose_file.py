"""Consistency of docker-compose.yaml, the Dockerfile and .env.example with the code.

No test here starts a container, because CI has no Docker engine. The compose file is parsed
with PyYAML and compared with the constants the DAG and the connection plugin define, with the
Makefile's pool sizes, the requirements pins and the command lines the local stack accepts.
The init scripts run in bash with a stub in place of the `airflow` command, and Airflow's CLI
parser reads the calls they make. ``docker compose config`` checks the file against the
Compose specification when the Docker Compose plugin is installed, which needs no engine.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from airflow.cli.cli_parser import get_parser
from airflow.providers_manager import ProvidersManager
from langfuse_eval_connections import LANGFUSE_CONN_ID, OPENAI_CONN_ID
from langfuse_eval_provider.provider_info import CONNECTION_TYPE
from packaging.specifiers import SpecifierSet

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

DAG_MODULE = importlib.import_module("dags.langfuse_external_eval")
COMPOSE_TEXT = COMPOSE_FILE.read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]

# The services of Airflow's official compose file for 3.3, which this deployment must keep.
REQUIRED_AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
# Services on third-party images. Every other service runs the image built from the Dockerfile.
THIRD_PARTY_SERVICES = {"postgres", "redis"}
LOCAL_PROFILE = "local"
# Reachable only inside the compose network, so it keeps the official file's literal default.
INTERNAL_ONLY_SECRETS = {"POSTGRES_PASSWORD"}
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|_KEY)$")
# ${VAR}, ${VAR:-default} or ${VAR:?message}, but not $${VAR}, which the container's shell
# expands.
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)")


def environment(service: str) -> dict[str, str]:
    """Return a service's environment as a mapping, whichever syntax the file uses."""
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def airflow_services() -> list[str]:
    """Return the services that run Airflow: those configured with a metadata database."""
    return [name for name in SERVICES if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in environment(name)]


def bind_mounts(service: str) -> dict[str, str]:
    """Map the container path of each bind mount of a service to its host path in the repo."""
    mounts = {}
    for volume in SERVICES[service].get("volumes") or []:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def script(service: str) -> str:
    """Return the shell script of a service run as `bash -c SCRIPT`."""
    command = SERVICES[service]["command"]
    assert SERVICES[service].get("entrypoint") == "/bin/bash", service
    assert command[0] == "-c", service
    return command[1]


def python_module_command(service: str) -> tuple[str, list[str]]:
    """Split a `python -m MODULE ARGS...` command into the module and its arguments."""
    command = [str(part) for part in SERVICES[service]["command"]]
    assert command[:2] == ["python", "-m"], f"{service}: {command}"
    return command[2], command[3:]


def option_value(args: list[str], option: str) -> str:
    """Return the value that follows an option in an argument list."""
    assert option in args, f"{option} missing from {args}"
    return args[args.index(option) + 1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Parse the Dockerfile into (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def image_pythonpath() -> list[str]:
    """Return PYTHONPATH as the Airflow containers see it: the compose value or the image's."""
    image_value = ""
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                if name == "PYTHONPATH":
                    image_value = value
    value = environment("airflow-scheduler").get("PYTHONPATH", image_value)
    return value.split(":")


def makefile_variable(name: str) -> str:
    """Return the value a Makefile variable is given with `:=` or `?=`."""
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{name}\s*[:?]?=\s*(\S+)", text, re.MULTILINE)
    assert match, f"{name} not found in the Makefile"
    return match.group(1)


def published_ports(service: str) -> list[tuple[str, int]]:
    """Return (host address, container port) for each port a service publishes."""
    ports = []
    for entry in SERVICES[service].get("ports") or []:
        if isinstance(entry, dict):
            ports.append((str(entry.get("host_ip", "")), int(entry["target"])))
        else:
            text = str(entry)
            host, _, container = text.rpartition(":")
            address = host.split(":", 1)[0] if host.count(":") else ""
            ports.append((address, int(container.split("/")[0])))
    return ports


def test_compose_has_official_services():
    assert set(airflow_services()) >= REQUIRED_AIRFLOW_SERVICES
    assert set(SERVICES) >= THIRD_PARTY_SERVICES


def test_services_use_project_image():
    dockerfile_services = [name for name in SERVICES if name not in THIRD_PARTY_SERVICES]
    images = {SERVICES[name].get("image") for name in dockerfile_services}
    assert len(images) == 1, images
    for name in dockerfile_services:
        build = SERVICES[name].get("build")
        assert build in (".", {"context": "."}), f"{name} builds {build!r}"
    assert DOCKERFILE.is_file()


def test_dockerfile_matches_airflow_pin():
    requirements = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8")
    pin = re.search(r"^apache-airflow==(\S+)$", requirements, re.MULTILINE)
    base = [rest for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    match = re.fullmatch(r"apache/airflow:(\S+)-python(\d+\.\d+)", base[0])
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    assert pin, "requirements.txt has no apache-airflow== pin"
    assert len(base) == 1, base
    assert match, f"unexpected base image {base[0]!r}"
    assert match.group(1) == pin.group(1)
    assert SpecifierSet(project["project"]["requires-python"]).contains(match.group(2))


def test_dockerfile_installs_pins_then_project():
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    copies = [shlex.split(rest) for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    project_dirs = [args[-1].rstrip("/") for args in copies if args[-2] == "."]
    pinned = [
        run for run in runs if re.search(r"-r \S*requirements\.txt -c \S*constraints\.txt", run)
    ]
    project = [run for run in runs if "--no-deps" in run.split()]

    assert len(pinned) == 1, runs
    assert len(project_dirs) == 1, copies
    assert len(project) == 1, runs
    assert project[0].split()[-1].rstrip("/") == project_dirs[0]
    assert runs.index(pinned[0]) < runs.index(project[0])


def copy_build_context(destination: Path) -> Path:
    """Copy the repository as the Docker build context, without what .dockerignore excludes.

    Each .dockerignore pattern is matched against file and folder names at every depth, which
    excludes at least what Docker excludes.
    """
    lines = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [
        line.strip().removeprefix("**/").rstrip("/")
        for line in lines
        if line.strip() and not line.startswith("#")
    ]
    shutil.copytree(REPO_ROOT, destination, ignore=shutil.ignore_patterns(*patterns))
    return destination


def test_project_builds_as_wheel(tmp_path):
    # The Dockerfile's `pip install --no-deps` of the build context builds this wheel. A copy
    # keeps setuptools' build folders out of the repository.
    context = copy_build_context(tmp_path / "context")
    wheel_dir = tmp_path / "wheels"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(context),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    wheels = list(wheel_dir.glob("*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        entry_points = [name for name in wheel.namelist() if name.endswith("entry_points.txt")]
        assert len(entry_points) == 1, wheel.namelist()
        # The image installs the project for this entry point: the connection type it registers.
        assert "[apache_airflow_provider]" in wheel.read(entry_points[0]).decode()


def test_build_context_has_copied_files(tmp_path):
    context = copy_build_context(tmp_path / "context")
    copies = [shlex.split(rest) for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    sources = [source for args in copies for source in args[:-1] if not source.startswith("--")]
    for source in sources:
        assert (context / source).exists(), f".dockerignore excludes {source}"


def test_image_copies_match_mounts():
    copies = [shlex.split(rest) for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    copied = {args[-1]: args[-2] for args in copies if args[-2] != "."}
    for target, source in bind_mounts("airflow-scheduler").items():
        assert copied.get(target) == source.removeprefix("./"), target


def test_pools_match_dag_and_makefile():
    pools = dict(re.findall(r"airflow pools set (\S+) \$\{(\w+:-\d+)\}", script("airflow-init")))
    judge_slots = makefile_variable("JUDGE_POOL_SLOTS")
    langfuse_slots = makefile_variable("LANGFUSE_POOL_SLOTS")
    expected = {
        DAG_MODULE.JUDGE_POOL: f"JUDGE_POOL_SLOTS:-{judge_slots}",
        DAG_MODULE.LANGFUSE_POOL: f"LANGFUSE_POOL_SLOTS:-{langfuse_slots}",
    }
    assert pools == expected
    assert makefile_variable("JUDGE_POOL") == DAG_MODULE.JUDGE_POOL
    assert makefile_variable("LANGFUSE_POOL") == DAG_MODULE.LANGFUSE_POOL


@pytest.mark.parametrize(
    ("service", "command"),
    [
        pytest.param("airflow-init", "write_connection", id="from-env-file"),
        pytest.param("local-connections", "airflow connections add", id="local-profile"),
    ],
)
def test_connections_match_plugin(service, command):
    written = dict(re.findall(rf"{command} (\w+) --conn-type (\w+)", script(service)))
    assert set(written) == {LANGFUSE_CONN_ID, OPENAI_CONN_ID}
    assert written[LANGFUSE_CONN_ID] == CONNECTION_TYPE
    assert written[OPENAI_CONN_ID] == "openai"


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Apply Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        value = variables.get(name, "")
        if operator == "?" and not value:
            raise AssertionError(f"Compose would stop: {name} is required ({argument})")
        return argument if operator == "-" and not value else value

    return re.sub(r"\$\$|\$\{(\w+)(?::([-?])([^}]*))?\}", replace, text)


def run_script(service: str, variables: dict[str, str], work_dir: Path) -> list[list[str]]:
    """Run a service's bash script with `airflow` replaced by a stub; return the stub's calls.

    The stub records its arguments and succeeds, so the script's own logic runs for real:
    the branches on empty variables, the quoting and the `python -c` steps.
    """
    bin_dir = work_dir / "bin"
    bin_dir.mkdir()
    calls = work_dir / "airflow-calls.jsonl"
    record = "import json, sys; print(json.dumps(sys.argv[1:]))"
    stub = bin_dir / "airflow"
    stub.write_text(f"#!/bin/sh\nexec {sys.executable} -c '{record}' \"$@\" >> {calls}\n")
    stub.chmod(0o755)
    env = {name: interpolate(value, variables) for name, value in environment(service).items()}
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(work_dir / "passwords.json")
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), "/usr/bin:/bin"])
    result = subprocess.run(
        ["bash", "-c", interpolate(script(service), variables)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()]


def connections_added(calls: list[list[str]]) -> dict[str, dict[str, str]]:
    """Parse the `airflow connections add` calls with Airflow's own CLI parser."""
    parser = get_parser()
    added = {}
    for call in calls:
        if call[:2] == ["connections", "add"]:
            args = parser.parse_args(call)
            added[args.conn_id] = {
                "type": args.conn_type,
                "host": args.conn_host,
                "login": args.conn_login,
                "password": args.conn_password,
                "extra": args.conn_extra,
            }
    return added


def registered_connection_types() -> set[str]:
    """Return the connection types that `airflow connections add` accepts as they are."""
    # The CLI checks --conn-type against this property, which Airflow 3.3 marks deprecated
    # with a FutureWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return {name for name, info in ProvidersManager().hooks.items() if info}


def test_init_script_writes_env_values(tmp_path):
    variables = {
        "AIRFLOW_JWT_SECRET": "jwt-secret-for-test",
        "AIRFLOW_FERNET_KEY": "fernet-key-for-test",
        "AIRFLOW_ADMIN_PASSWORD": "admin-password-for-test",
        "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "LANGFUSE_SECRET_KEY": "sk-lf-test",
        "OPENAI_API_KEY": "sk-test",
    }
    calls = run_script("airflow-init", variables, tmp_path)
    added = connections_added(calls)
    pools = {call[2]: call[3] for call in calls if call[:2] == ["pools", "set"]}
    passwords = json.loads((tmp_path / "passwords.json").read_text(encoding="utf-8"))

    assert calls[0] == ["db", "migrate"]
    assert passwords == {"admin": "admin-password-for-test"}
    assert pools == {
        DAG_MODULE.JUDGE_POOL: makefile_variable("JUDGE_POOL_SLOTS"),
        DAG_MODULE.LANGFUSE_POOL: makefile_variable("LANGFUSE_POOL_SLOTS"),
    }
    assert added[LANGFUSE_CONN_ID] == {
        "type": CONNECTION_TYPE,
        "host": "https://cloud.langfuse.com",
        "login": "pk-lf-test",
        "password": "sk-lf-test",
        "extra": None,
    }
    assert added[OPENAI_CONN_ID]["type"] == "openai"
    assert added[OPENAI_CONN_ID]["password"] == "sk-test"
    assert json.loads(added[OPENAI_CONN_ID]["extra"]) == {"model": "gpt-4.1-mini"}
    assert {CONNECTION_TYPE, "openai"} <= registered_connection_types()


def test_init_script_keeps_unset_connections(tmp_path):
    variables = {"AIRFLOW_JWT_SECRET": "jwt", "AIRFLOW_FERNET_KEY": "fernet"}
    calls = run_script("airflow-init", variables, tmp_path)

    assert not [call for call in calls if call[0] == "connections"]
    assert not (tmp_path / "passwords.json").exists()
    assert len([call for call in calls if call[:2] == ["pools", "set"]]) == 2


def test_local_script_points_at_local_servers(tmp_path):
    variables = {
        "AIRFLOW_JWT_SECRET": "jwt",
        "AIRFLOW_FERNET_KEY": "fernet",
        "LOCAL_LANGFUSE_PUBLIC_KEY": "pk-lf-local",
        "LOCAL_LANGFUSE_SECRET_KEY": "sk-lf-local",
        "LOCAL_JUDGE_API_KEY": "sk-local",
    }
    added = connections_added(run_script("local-connections", variables, tmp_path))

    assert added[LANGFUSE_CONN_ID]["type"] == CONNECTION_TYPE
    assert added[LANGFUSE_CONN_ID]["login"] == "pk-lf-local"
    assert added[LANGFUSE_CONN_ID]["password"] == "sk-lf-local"
    assert added[OPENAI_CONN_ID]["password"] == "sk-local"
    assert json.loads(added[OPENAI_CONN_ID]["extra"]) == {"model": "gpt-4.1-mini"}


def test_local_connections_reach_local_servers():
    hosts = re.findall(r"--conn-host (\S+)", script("local-connections"))
    hosts.append(environment("local-seed")["LANGFUSE_BASE_URL"])
    assert len(hosts) == 3, hosts
    for url in hosts:
        parts = urlsplit(url)
        assert parts.hostname in SERVICES, url
        assert LOCAL_PROFILE in SERVICES[parts.hostname].get("profiles", []), url
        _, args = python_module_command(parts.hostname)
        assert parts.port == int(option_value(args, "--port")), url


def test_mounts_exist_and_are_airflow_folders():
    pythonpath = image_pythonpath()
    for service in airflow_services():
        mounts = bind_mounts(service)
        env = environment(service)
        by_source = {source: target for target, source in mounts.items()}
        for source in mounts.values():
            assert (REPO_ROOT / source).is_dir(), f"{service}: {source} is not in the repository"
        assert by_source["./dags"] == env["AIRFLOW__CORE__DAGS_FOLDER"], service
        assert by_source["./plugins"] == env["AIRFLOW__CORE__PLUGINS_FOLDER"], service
        # The DAG imports langfuse_eval_connections from plugins and the include package.
        assert by_source["./plugins"] in pythonpath, service
        for package in ("include", "stack"):
            target = PurePosixPath(by_source[f"./{package}"])
            assert target.name == package, service
            assert str(target.parent) in pythonpath, service
            assert (REPO_ROOT / package / "__init__.py").is_file()


def test_executor_is_celery_on_compose_services():
    postgres = environment("postgres")
    for service in airflow_services():
        env = environment(service)
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
        database = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])

        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", service
        assert broker.scheme == "redis", service
        assert broker.hostname == "redis", service
        # SQLAlchemy maps a bare postgresql:// to psycopg 3, which is not installed: both URLs
        # name the pinned psycopg2 driver.
        assert database.scheme == "postgresql+psycopg2", service
        assert backend.scheme == "db+postgresql+psycopg2", service
        for url in (backend, database):
            assert url.hostname == "postgres", service
            assert url.username == postgres["POSTGRES_USER"], service
            assert url.password == postgres["POSTGRES_PASSWORD"], service
            assert url.path == f"/{postgres['POSTGRES_DB']}", service


def test_services_share_api_url_and_secrets():
    api_ports = [port for _, port in published_ports("airflow-apiserver")]
    shared = (
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
    )
    values = {
        name: {environment(service).get(name) for service in airflow_services()} for name in shared
    }
    for name, found in values.items():
        assert len(found) == 1, f"{name} differs between services: {found}"
    url = urlsplit(next(iter(values["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])))
    assert url.hostname == "airflow-apiserver"
    assert url.port in api_ports
    assert url.path == "/execution/"


def test_published_ports_bind_loopback():
    for name, service in SERVICES.items():
        assert service.get("network_mode") != "host", name
        for address, _ in published_ports(name):
            assert address == "127.0.0.1", (
                f"{name} publishes a port on {address or 'all addresses'}"
            )


def test_worker_is_scalable():
    worker = SERVICES["airflow-worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"] == "celery worker"


def test_no_secret_literals():
    for service in SERVICES:
        for name, value in environment(service).items():
            if SECRET_NAME.search(name) and name not in INTERNAL_ONLY_SECRETS:
                assert re.fullmatch(r"\$\{\w+(:[-?][^}]*)?\}", value), f"{service}: {name}"


def test_dependencies_are_consistent():
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        for target, spec in depends.items():
            condition = spec["condition"]
            assert target in SERVICES, f"{name} depends on unknown {target}"
            if not service.get("profiles"):
                assert not SERVICES[target].get("profiles"), f"{name} needs profiled {target}"
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert "restart" not in SERVICES[target], f"{target} restarts"


def test_variables_documented_in_env_example():
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    # `NAME=value` sets a variable, and `# NAME=default` shows an optional one with its default.
    assignment = re.compile(r"(?:# )?(\w+)=\S*")
    documented = {}
    for number, line in enumerate(lines):
        match = assignment.fullmatch(line)
        if match:
            documented[match.group(1)] = number
    used = set(COMPOSE_VARIABLE.findall(COMPOSE_TEXT))

    assert used == set(documented), used ^ set(documented)
    for name, number in documented.items():
        # Variables listed together share the explanation above the first of them.
        above = number - 1
        while above >= 0 and assignment.fullmatch(lines[above]):
            above -= 1
        assert above >= 0, name
        assert lines[above].startswith("# "), f"{name} has no explanation above it"


def test_env_file_kept_out_of_git_and_image():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT, check=False)
    dockerignore = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignored.returncode == 0
    assert ".env" in dockerignore


@pytest.mark.parametrize(
    "service",
    [name for name, spec in SERVICES.items() if str(spec.get("command", [""])[0]) == "python"],
)
def test_local_commands_accepted(service):
    module, args = python_module_command(service)
    assert importlib.util.find_spec(module) is not None, module
    # argparse converts and checks each option up to --help, then prints the help and exits 0.
    result = subprocess.run(
        [sys.executable, "-m", module, *args, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for option in (arg for arg in args if arg.startswith("--")):
        assert re.search(rf"(^|\s){option}\b", result.stdout), f"{module} has no {option}"


@pytest.mark.parametrize("service", ["langfuse-local", "judge-local"])
def test_local_servers_listen_in_network(service):
    _, args = python_module_command(service)
    port = int(option_value(args, "--port"))
    assert option_value(args, "--host") == "0.0.0.0"
    assert [container for _, container in published_ports(service)] == [port]
    assert LOCAL_PROFILE in SERVICES[service]["profiles"]


def test_local_seed_sends_dag_tag():
    _, args = python_module_command("local-seed")
    container_file = PurePosixPath(option_value(args, "--file"))
    mounts = bind_mounts("local-seed")
    mount = next(target for target in mounts if container_file.is_relative_to(target))
    host_file = REPO_ROOT / mounts[mount] / container_file.relative_to(mount)

    assert option_value(args, "--tag") == DAG_MODULE.DEFAULT_TAG
    assert host_file.is_file(), host_file


def test_docker_compose_config_accepts_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not installed")
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if plugin.returncode != 0:
        pytest.skip("the Docker Compose plugin is not installed (`docker compose version` failed)")
    env = {
        **os.environ,
        "AIRFLOW_JWT_SECRET": "compose-config-check",
        "AIRFLOW_FERNET_KEY": "compose-config-check",
    }
    result = subprocess.run(
        [
            docker,
            "compose",
            "-f",
            str(COMPOSE_FILE),
            "--profile",
            LOCAL_PROFILE,
            "--profile",
            "debug",
            "config",
            "-q",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
