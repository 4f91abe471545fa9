"""Deployment: the Dockerfile and Procfile agree, and their command really serves the app.

Docker cannot build on the development machine, so the image's command line (the Procfile's
`web:` process, which the Dockerfile's CMD must equal) runs here outside a container, bound to
0.0.0.0 exactly as deployed, with PORT set to a free port.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.model.checkpoint import DEFAULT_MODEL, list_shipped_models, load_model
from core.store.artifacts import SHIPPED_WEIGHTS_DIR
from tests.browser import PAGE_FILES, launch_chromium, open_page, require_chromium, visible_errors
from tests.server import (
    REPO_ROOT,
    RunningDashboard,
    deployed_command,
    free_port,
    running_dashboard,
    server_environment,
)

DOCKERFILE = REPO_ROOT / "Dockerfile"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
CPU_WHEEL_INDEX = "https://download.pytorch.org/whl/cpu"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.strip().partition(" ") for line in joined.splitlines() if line.strip())
    ]


def instruction_arguments(name: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile_instructions() if instruction == name]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array instruction argument (CMD ["a", "b"]) as argv."""
    argv = json.loads(arguments)
    assert isinstance(argv, list), f"expected the exec form (a JSON array), got {arguments!r}"
    return argv


def healthcheck_argv() -> list[str]:
    (healthcheck,) = instruction_arguments("HEALTHCHECK")
    _, _, command = healthcheck.partition("CMD ")
    return exec_form(command)


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        name, separator, version = line.split("#")[0].strip().partition("==")
        if separator:
            pins[name.lower()] = version
    return pins


def test_dockerfile_and_procfile_run_the_same_command() -> None:
    (cmd,) = instruction_arguments("CMD")
    assert exec_form(cmd) == deployed_command()
    assert deployed_command() == ["sh", "scripts/serve.sh"]


def test_image_installs_cpu_torch_at_the_pinned_versions_before_the_rest() -> None:
    runs = instruction_arguments("RUN")
    torch_run = next(run for run in runs if CPU_WHEEL_INDEX in run)
    pinned = dict(re.findall(r"\b(torch|torchvision)==(\S+)", torch_run))
    requirements = requirement_pins()
    assert pinned == {"torch": requirements["torch"], "torchvision": requirements["torchvision"]}
    # torch first, so `pip install -r requirements.txt` finds it satisfied instead of fetching CUDA wheels.
    assert torch_run.index(CPU_WHEEL_INDEX) < torch_run.index("-r requirements.txt")


def test_image_is_slim_non_root_with_weights_and_a_health_check() -> None:
    assert instruction_arguments("FROM") == ["python:3.11-slim"]
    users = instruction_arguments("USER")
    assert users and users[-1] not in {"root", "0"}
    copied = {arguments.split()[0].rstrip("/") for arguments in instruction_arguments("COPY")}
    assert {"weights", "core", "dashboard", "pages", ".streamlit", "scripts"} <= copied
    assert healthcheck_argv() == ["python", "scripts/healthcheck.py"]
    assert "MURA" not in " ".join(instruction_arguments("COPY")), "MURA must be mounted, never copied"


def test_every_copied_path_exists_so_the_build_cannot_fail_on_it() -> None:
    for arguments in instruction_arguments("COPY"):
        *sources, _destination = shlex.split(arguments)
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"Dockerfile copies {source}, which is missing"


def test_the_baked_in_weights_hold_the_default_model() -> None:
    """The image copies weights/ and must work out of the box: the default model loads from it."""
    assert DEFAULT_MODEL in list_shipped_models(SHIPPED_WEIGHTS_DIR)
    loaded = load_model(DEFAULT_MODEL, directory=SHIPPED_WEIGHTS_DIR)
    assert loaded.card, "the shipped model has no model card"


def test_health_check_fails_when_nothing_listens() -> None:
    result = subprocess.run(healthcheck_argv(), cwd=REPO_ROOT, env=server_environment(free_port()), timeout=30)
    assert result.returncode == 1


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port``, from the kernel's table (Linux)."""
    addresses = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        address_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
            addresses.add(socket.inet_ntoa(bytes.fromhex(address_hex)[::-1]))
    return addresses


@pytest.fixture(scope="module")
def deployed_server() -> Iterator[RunningDashboard]:
    """`sh scripts/serve.sh` as a platform runs it: only PORT set, bound to 0.0.0.0, shipped weights."""
    with running_dashboard({"MURA_LENS_WEIGHTS_DIR": None}, address=None) as server:
        yield server


@pytest.mark.slow  # starts the deployed server
@pytest.mark.timeout(180)
def test_deployed_command_serves_health_and_the_first_page(deployed_server: RunningDashboard) -> None:
    with urllib.request.urlopen(deployed_server.base_url + "/_stcore/health", timeout=10) as reply:
        assert (reply.status, reply.read()) == (200, b"ok")
    with urllib.request.urlopen(deployed_server.base_url + "/", timeout=10) as reply:
        assert reply.status == 200
        assert b'<div id="root">' in reply.read()
    if Path("/proc/net/tcp").is_file():
        assert "0.0.0.0" in listening_addresses(deployed_server.port)
    health = subprocess.run(healthcheck_argv(), cwd=REPO_ROOT, env=server_environment(deployed_server.port), timeout=30)
    assert health.returncode == 0, "the Docker HEALTHCHECK command fails against a live server"


@pytest.mark.slow  # starts the deployed server
@pytest.mark.browser
@pytest.mark.timeout(180)
def test_deployed_first_page_renders_without_errors(deployed_server: RunningDashboard) -> None:
    require_chromium()

    async def first_page() -> tuple[list[str], int]:
        async with launch_chromium() as browser:
            page = await browser.new_page()
            await open_page(page, deployed_server.base_url, PAGE_FILES[0], timeout_ms=120_000)
            return await visible_errors(page), await page.locator('[data-testid="stSidebar"]').count()

    errors, sidebars = asyncio.run(first_page())
    assert errors == [], deployed_server.output()[-4000:]
    assert sidebars == 1, "the app's sidebar was not rendered"
