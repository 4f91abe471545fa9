"""Security settings: upload cap, hidden error details, XSRF, no uploads on disk, no repo files served.

Each setting is checked twice where it can be: as Streamlit itself reads .streamlit/config.toml,
and against the deployed command (tests/server.py) on loopback.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import matplotlib
import pytest
from streamlit import config as streamlit_config

from dashboard.uploads import MAX_UPLOAD_MB
from tests.browser import (
    launch_chromium,
    require_chromium,
    upload_on_explain,
    visible_errors,
    wait_for_script_run,
)
from tests.server import REPO_ROOT, RunningDashboard, running_dashboard
from tests.synthetic import synthetic_radiograph_png

PROJECT_CONFIG = REPO_ROOT / ".streamlit" / "config.toml"
STREAMLIT_DEFAULT_UPLOAD_MB = 200
SECURITY_OPTIONS = (
    "server.maxUploadSize",
    "server.enableXsrfProtection",
    "server.enableStaticServing",
    "client.showErrorDetails",
)
UPLOAD_ROUTE = "/_stcore/upload_file/{session}/{file}"
XSRF_COOKIE = "_streamlit_xsrf"


@pytest.fixture(scope="module")
def project_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, str]]:
    """{option: (value, where it was defined)} as Streamlit reads the project's config.toml.

    Read from the repository root with an empty HOME and no STREAMLIT_* variables, so only the
    project file (and Streamlit's defaults) count; Streamlit's config is re-read afterwards.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO_ROOT)
        patch.setenv("HOME", str(tmp_path_factory.mktemp("empty_home")))
        for name in [name for name in os.environ if name.startswith("STREAMLIT_")]:
            patch.delenv(name)
        streamlit_config.get_config_options(force_reparse=True)
        read = {
            option: (streamlit_config.get_option(option), streamlit_config.get_where_defined(option))
            for option in SECURITY_OPTIONS
        }
    streamlit_config.get_config_options(force_reparse=True)
    return read


def test_upload_size_is_capped_by_the_project_file(project_config: dict[str, tuple[Any, str]]) -> None:
    value, where = project_config["server.maxUploadSize"]
    assert where == str(PROJECT_CONFIG)
    assert value < STREAMLIT_DEFAULT_UPLOAD_MB
    assert MAX_UPLOAD_MB <= value, "the Explain widget's cap cannot exceed the server's"


def test_error_details_are_hidden(project_config: dict[str, tuple[Any, str]]) -> None:
    assert project_config["client.showErrorDetails"] == ("none", str(PROJECT_CONFIG))


def test_xsrf_protection_is_on(project_config: dict[str, tuple[Any, str]]) -> None:
    assert project_config["server.enableXsrfProtection"] == (True, str(PROJECT_CONFIG))


def test_no_static_folder_is_served(project_config: dict[str, tuple[Any, str]]) -> None:
    assert project_config["server.enableStaticServing"][0] is False


def _raw_request(
    server: RunningDashboard, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    """Send ``path`` byte for byte (no client-side normalisation of ``..``), return (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def _multipart(file_name: str, data: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


@pytest.mark.slow  # a running server
@pytest.mark.timeout(120)
def test_upload_without_the_xsrf_token_is_refused(dashboard_server: RunningDashboard) -> None:
    # The frontend gets its XSRF cookie from the health route, as a browser would.
    with urllib.request.urlopen(dashboard_server.base_url + "/_stcore/health", timeout=10) as reply:
        cookies = reply.headers.get_all("Set-Cookie") or []
    token = next(c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith(XSRF_COOKIE + "="))
    content_type, body = _multipart("probe.png", synthetic_radiograph_png(seed=0, size=64))
    path = UPLOAD_ROUTE.format(session=uuid.uuid4(), file=uuid.uuid4())

    forged, _ = _raw_request(dashboard_server, "PUT", path, {"Content-Type": content_type}, body)
    assert forged == 403
    with_cookie_only, _ = _raw_request(
        dashboard_server, "PUT", path, {"Content-Type": content_type, "Cookie": f"{XSRF_COOKIE}={token}"}, body
    )
    assert with_cookie_only == 403
    # With cookie and matching header the XSRF gate opens, and the unknown session is what fails:
    # so the 403s above came from the XSRF check, not from something else.
    with_token, _ = _raw_request(
        dashboard_server,
        "PUT",
        path,
        {"Content-Type": content_type, "Cookie": f"{XSRF_COOKIE}={token}", "X-Xsrftoken": token},
        body,
    )
    assert with_token == 400


#: Paths that try to reach repository files: plain, percent-encoded and via Streamlit's own routes.
TRAVERSAL_PATHS = (
    "/../weights/{model}/model_card.json",
    "/%2e%2e/weights/{model}/model_card.json",
    "/..%2fweights/{model}/model_card.json",
    "/app/static/../../weights/{model}/model_card.json",
    "/app/static/%2e%2e/%2e%2e/core/model/registry.py",
    "/app/static/core/model/registry.py",
    "/media/../core/model/registry.py",
    "/media/%2e%2e/weights/{model}/checkpoint.pt",
    "/component/..%2f..%2fcore/model/registry.py",
    "/static/../../core/model/registry.py",
    "/_stcore/static/%2e%2e/%2e%2e/core/model/registry.py",
    "//etc/passwd",
    "/core/model/registry.py",
    "/weights/{model}/model_card.json",
    "/.streamlit/config.toml",
)


@pytest.mark.slow  # a running server
@pytest.mark.timeout(120)
def test_repository_files_are_not_served(dashboard_server: RunningDashboard, scratch_weights_dir: Path) -> None:
    """Traversal is refused; an unknown path gets the app's own page (client-side routing), never a file."""
    _, index_page = _raw_request(dashboard_server, "GET", "/")
    model = next(path.name for path in scratch_weights_dir.iterdir() if path.is_dir())
    secrets = [
        (REPO_ROOT / "core" / "model" / "registry.py").read_bytes()[:200],
        (scratch_weights_dir / model / "model_card.json").read_bytes()[:40],
        (REPO_ROOT / ".streamlit" / "config.toml").read_bytes()[:60],
    ]
    for template in TRAVERSAL_PATHS:
        path = template.format(model=model)
        status, body = _raw_request(dashboard_server, "GET", path)
        assert status in {400, 403, 404} or (status == 200 and body == index_page), (path, status)
        assert not any(secret in body for secret in secrets), f"{path} leaked a repository file"


@pytest.mark.slow  # a running server
@pytest.mark.browser
@pytest.mark.timeout(180)
def test_exception_details_never_reach_the_browser(tmp_path: Path) -> None:
    """An uncaught exception under the project's config shows a generic box, not its message."""
    require_chromium()
    secret = f"secret-{uuid.uuid4().hex}"
    script = tmp_path / "raises.py"
    script.write_text(f"import streamlit as st\nst.write('before')\nraise RuntimeError({secret!r})\n")
    # The project's config applies because the server runs from the repository root.
    command = [
        "sh",
        "-c",
        f'exec python -m streamlit run "{script}" --server.port "$PORT" '
        '--server.address "$STREAMLIT_SERVER_ADDRESS" --server.headless true',
    ]

    async def open_app(base_url: str) -> tuple[list[str], str, str]:
        async with launch_chromium() as browser:
            page = await browser.new_page()
            await page.goto(base_url + "/")
            await wait_for_script_run(page)
            return await visible_errors(page), await page.content(), await page.inner_text("body")

    with running_dashboard(command=command) as server:
        errors, html, text = asyncio.run(open_app(server.base_url))
        log = server.output()
    assert errors, "the exception box should be shown"
    assert secret not in html
    assert "Traceback" not in text
    assert secret in log, "the details belong in the server log"


def _files_holding(roots: list[Path], needle: bytes, name: str) -> list[Path]:
    """Files under ``roots`` whose name contains ``name`` or whose bytes contain ``needle``."""
    skip = {".git", ".venv", "runs", "__pycache__", "node_modules"}
    hits = []
    for root in roots:
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = [d for d in subdirectories if d not in skip]
            for file in files:
                path = Path(directory) / file
                if name in file:
                    hits.append(path)
                    continue
                try:
                    if path.is_file() and path.stat().st_size < 50_000_000 and needle in path.read_bytes():
                        hits.append(path)
                except OSError:
                    continue
    return hits


@pytest.mark.slow  # a running server
@pytest.mark.browser
@pytest.mark.timeout(240)
def test_an_upload_is_neither_written_to_disk_nor_served_back(tmp_path: Path, scratch_weights_dir: Path) -> None:
    """Upload through the real browser; afterwards no file holds its bytes or name, and no URL serves it."""
    require_chromium()
    server_home, server_tmp = tmp_path / "home", tmp_path / "tmp"
    server_home.mkdir()
    server_tmp.mkdir()
    probe_name = f"upload-probe-{uuid.uuid4().hex}.png"
    data = synthetic_radiograph_png(seed=7, size=96)
    # A run of the PNG's compressed bytes: unique to this file, and what a copy on disk would hold.
    needle = data[len(data) // 2 : len(data) // 2 + 64]
    env = {
        "MURA_LENS_WEIGHTS_DIR": str(scratch_weights_dir),
        "HOME": str(server_home),
        "TMPDIR": str(server_tmp),
        # matplotlib (imported by pytorch_grad_cam) would rebuild its font cache in a fresh HOME.
        "MPLCONFIGDIR": matplotlib.get_cachedir(),
    }

    async def upload(base_url: str) -> tuple[str, list[str], list[bytes]]:
        async with launch_chromium() as browser:
            page = await browser.new_page()
            shown = await upload_on_explain(page, base_url, probe_name, data)
            media_urls = await page.eval_on_selector_all(
                "img[src*='/media/']", "images => images.map(image => image.src)"
            )
            served = [await (await page.request.get(url)).body() for url in media_urls]
            return shown, await visible_errors(page), served

    with running_dashboard(env) as server:
        probability, errors, served_images = asyncio.run(upload(server.base_url))
    assert probability and errors == []
    assert served_images, "the page shows the upload, so some media was served"
    assert data not in served_images, "the uploaded file itself is served back"
    assert _files_holding([REPO_ROOT, server_home, server_tmp], needle, probe_name) == []
