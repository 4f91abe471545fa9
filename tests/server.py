"""Run the dashboard as deployments do, on a free loopback port, for tests and the load benchmark.

The command comes from the Procfile (the Dockerfile runs the same line; tests/test_deploy.py
checks that), so a server started here is the deployed server, bound to 127.0.0.1 instead of
0.0.0.0. The server runs in its own process group and is always stopped as a group, so no
Streamlit (or child) process outlives the test that started it.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "REPO_ROOT",
    "RunningDashboard",
    "DashboardStartError",
    "deployed_command",
    "free_port",
    "server_environment",
    "wait_until_healthy",
    "stop_process_group",
    "running_dashboard",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
PROCFILE = REPO_ROOT / "Procfile"
HEALTH_ROUTE = "/_stcore/health"
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
#: Binding a port picked by the kernel can still race with another process; retry a few times.
START_ATTEMPTS = 3


class DashboardStartError(RuntimeError):
    """The server did not become healthy; the message carries the tail of its output."""


@dataclass
class RunningDashboard:
    """A live server: its base URL (no trailing slash) and everything it printed so far."""

    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    _log: IO[bytes]

    def output(self) -> str:
        """Everything the server printed on stdout and stderr up to now."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")


def deployed_command(procfile: Path = PROCFILE) -> list[str]:
    """The argv of the Procfile's ``web:`` process, the line every deployment target runs."""
    for line in procfile.read_text().splitlines():
        kind, _, command = line.partition(":")
        if kind.strip() == "web":
            return shlex.split(command)
    raise ValueError(f"{procfile} has no 'web:' process")


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_environment(port: int, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with PORT set and this interpreter's bin/ first on PATH.

    ``overrides`` adds variables, or removes them when the value is None. MURA_ROOT is removed
    unless given: a server under test shows the out-of-the-box app, with no MURA pixels.
    """
    env = dict(os.environ)
    env.pop("MURA_ROOT", None)
    # `python` in the deployed command must be the interpreter running the tests (the venv's).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PORT"] = str(port)
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll the health route until it says ``ok``; fail early if the server exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DashboardStartError(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(base_url + HEALTH_ROUTE, timeout=2) as reply:
                if reply.status == 200 and reply.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise DashboardStartError(f"{base_url}{HEALTH_ROUTE} was not healthy after {timeout_s:.0f} s")


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group, SIGKILL it if it lingers, and reap it."""
    for sig, grace_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # The leader may be gone while a child it started still runs; end the group for good.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def running_dashboard(
    env: Mapping[str, str | None] | None = None,
    *,
    address: str | None = "127.0.0.1",
    command: list[str] | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> Iterator[RunningDashboard]:
    """Start the deployed command on a free port of ``address``, yield once healthy, always stop it.

    Args:
        env: extra environment (None removes a variable), e.g. MURA_LENS_WEIGHTS_DIR.
        address: the interface to bind, passed as STREAMLIT_SERVER_ADDRESS; None keeps the
            deployed default (0.0.0.0), which tests/test_deploy.py uses.
        command: argv to run instead of the Procfile's (always from the repository root).
        startup_timeout_s: how long to wait for the health route.
    """
    argv = command or deployed_command()
    failures: list[str] = []
    for _ in range(START_ATTEMPTS):
        port = free_port()
        overrides = dict(env or {})
        if address is not None:
            overrides["STREAMLIT_SERVER_ADDRESS"] = address
        log = tempfile.TemporaryFile()
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=server_environment(port, overrides),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = RunningDashboard(f"http://127.0.0.1:{port}", port, process, log)
        try:
            wait_until_healthy(server.base_url, process, startup_timeout_s)
        except DashboardStartError as exc:
            stop_process_group(process)
            failures.append(f"{exc}; output:\n{server.output()[-3000:]}")
            log.close()
            if "address already in use" in failures[-1].lower():
                continue
            break
        except BaseException:  # interrupted (Ctrl-C, a test timeout): still leave nothing running
            stop_process_group(process)
            log.close()
            raise
        try:
            yield server
        finally:
            stop_process_group(process)
            log.close()
        return
    raise DashboardStartError(f"{shlex.join(argv)} did not start:\n" + "\n---\n".join(failures))
