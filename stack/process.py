"""Start and stop the local servers as subprocesses on 127.0.0.1."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
"""Linux prctl option that signals a child when its parent dies."""

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STOP_GRACE_S = 5.0


class ServerStartError(RuntimeError):
    """A server process exited or did not become healthy in time."""


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_pid(pid: int, grace_s: float) -> None:
    """Send SIGTERM to a pid, then SIGKILL if it is still alive after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class ServerProcess:
    """A server started by `start_server`.

    Attributes:
        popen: The subprocess handle.
        port: The port it listens on.
        log_path: File that receives its stdout and stderr.
    """

    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    @property
    def base_url(self) -> str:
        """The server's base URL, `http://127.0.0.1:<port>`."""
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        """Terminate the process by pid, and kill it if it is still alive after 5 s."""
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=STOP_GRACE_S)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _terminate_with_parent() -> None:
    """Ask Linux to send SIGTERM to the server when the process that started it dies.

    Without it, a demo or test run killed with SIGKILL leaves its servers listening.
    Elsewhere than Linux this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_server(
    module: str,
    port: int,
    env: Mapping[str, str],
    log_path: Path,
    *,
    health_path: str = "/api/public/health",
    args: Sequence[str] = (),
    timeout_s: float = 30.0,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start `python -m <module> --host 127.0.0.1 --port <port>` and wait until it is healthy.

    The child gets a copy of the current environment updated with `env`, and the repository
    root is put first on its `PYTHONPATH` so that `stack.*` modules import.

    Args:
        module: Module to run with `python -m`.
        port: Port to pass with `--port`.
        env: Variables to add to the child's environment.
        log_path: File for the child's stdout and stderr (parent dirs are created).
        health_path: Path that must return 200, e.g. `/api/public/health` or `/health`.
        args: Extra command line arguments after `--port`.
        timeout_s: Seconds to wait for the health check.
        cwd: Working directory; the repository root by default.

    Returns:
        The running server.

    Raises:
        ServerStartError: If the process exits or is not healthy within `timeout_s`. The
            message contains the tail of the log.
    """
    child_env = dict(os.environ)
    child_env.update(env)
    paths = [str(REPO_ROOT), *filter(None, child_env.get("PYTHONPATH", "").split(os.pathsep))]
    child_env["PYTHONPATH"] = os.pathsep.join(paths)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", module, "--host", HOST, "--port", str(port), *args]
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            cmd,
            cwd=str(cwd or REPO_ROOT),
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_terminate_with_parent,
        )
    server = ServerProcess(popen=popen, port=port, log_path=log_path)
    url = f"{server.base_url}{health_path}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise ServerStartError(
                f"{module} exited with code {popen.returncode}; log tail:\n{_log_tail(log_path)}"
            )
        if _healthy(url):
            return server
        time.sleep(0.1)
    server.stop()
    raise ServerStartError(
        f"{module} health check timed out: {url} not 200 within {timeout_s:.0f} s; log tail:\n"
        f"{_log_tail(log_path)}"
    )


def write_pidfile(path: Path, pid: int) -> None:
    """Write a pid to a file, creating parent directories.

    Args:
        path: The pid file.
        pid: The process id.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n", encoding="utf-8")


def stop_pidfile(path: Path, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop the process named in a pid file and remove the file.

    Sends SIGTERM, then SIGKILL after `grace_s` seconds if the process is still alive.

    Args:
        path: The pid file.
        grace_s: Seconds between SIGTERM and SIGKILL.

    Returns:
        True if a live process was signalled, False if the file was missing, unreadable
        or named a process that no longer runs.
    """
    try:
        pid = int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return False
    alive = pid > 0 and _pid_alive(pid)
    if alive:
        _stop_pid(pid, grace_s)
    path.unlink(missing_ok=True)
    return alive
