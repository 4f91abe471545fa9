"""The sidebar's MURA folder on a public server: every bad folder is one sentence on every page,
nothing of a file's content or of the server's folders is shown, and the deployer's lock
(MURA_LENS_LOCK_DATA=1) removes the box and keeps MURA_ROOT whatever a visitor sends.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data import mura
from dashboard import state
from tests.app_pages import assert_clean, start_app
from tests.test_app_browse_overview import set_mura_root
from tests.test_imaging import assert_one_sentence

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

PAGES = ("overview.py", "explain.py", "browse.py", "performance.py", "error_analysis.py", "model_card.py", "quiz.py")
SECRET = "TOKEN_hunter2"
LINK = "[click me](https://evil.example)"
REPO_ROOT = Path(__file__).resolve().parent.parent


def shown_text(at: AppTest) -> list[str]:
    """Every text element's source on the page and in the sidebar."""
    kinds = (
        at.markdown,
        at.caption,
        at.error,
        at.warning,
        at.info,
        at.success,
        at.text,
        at.code,
        at.title,
        at.header,
        at.subheader,
    )
    return [str(element.value) for kind in kinds for element in kind]


def unescaped(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def copy_csvs(source: Path, target: Path, names: tuple[str, ...]) -> Path:
    target.mkdir(parents=True)
    for name in names:
        shutil.copy(source / name, target / name)
    return target


@pytest.fixture
def unreadable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder whose entries cannot be looked at: mode 000, or for root (who reads anything) a
    stat that fails inside it as it would for everyone else."""
    folder = tmp_path / "no_permission"
    folder.mkdir()
    (folder / "valid_image_paths.csv").write_text("x\n")
    if os.geteuid() != 0:
        folder.chmod(0)
        yield folder
        folder.chmod(stat.S_IRWXU)
        return
    real_stat = Path.stat

    def stat_inside_fails(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if self.parent == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat_inside_fails)
    yield folder


@pytest.fixture
def bad_folders(tmp_path: Path, scratch_mura_root: Path, unreadable_folder: Path) -> dict[str, str]:
    """Name -> what a visitor types, for each way a folder can be wrong."""
    valid = ("valid_image_paths.csv", "valid_labeled_studies.csv")
    both = (*valid, "train_image_paths.csv", "train_labeled_studies.csv")
    bad_rows = copy_csvs(scratch_mura_root, tmp_path / "bad_rows", valid)
    with (bad_rows / "valid_image_paths.csv").open("a") as csv:
        csv.write(f"{LINK} {SECRET}\n")
    empty = copy_csvs(scratch_mura_root, tmp_path / "empty", valid)
    (empty / "valid_image_paths.csv").write_text("")
    bad_labels = copy_csvs(scratch_mura_root, tmp_path / "bad_labels", valid)
    (bad_labels / "valid_labeled_studies.csv").write_text(f"MURA-v1.1/valid/XR_HUMERUS/p/,{SECRET}\n")
    train_only = copy_csvs(scratch_mura_root, tmp_path / "train_only", both[2:])
    secret = tmp_path / "environ"
    secret.write_text(f"{LINK}\n{SECRET}\n")
    symlinked = copy_csvs(scratch_mura_root, tmp_path / "symlinked", valid[1:])
    (symlinked / "valid_image_paths.csv").symlink_to(secret)
    markdown_name = tmp_path / LINK.replace("/", "_")
    markdown_name.mkdir()
    return {
        "home": "~",
        "no such user": "~nosuchuser_mura_lens",
        "300 characters": str(tmp_path / ("x" * 300)),
        "unreadable": str(unreadable_folder),
        "bad rows": str(bad_rows),
        "empty csv": str(empty),
        "bad labels": str(bad_labels),
        "train only": str(train_only),
        "csv symlinked out": str(symlinked),
        "markdown in the name": str(markdown_name),
    }


#: The folder box and its check live in dashboard/app.py's sidebar, before any page runs, so every
#: bad folder goes through the same code on every page: the whole list is typed on one page, and on
#: each page the cases whose text could leak through that page's own content (a typed name with
#: markdown, the home folder, a file's secret rows), each after the page first rendered cleanly.
FULL_GRID_PAGE = "overview.py"
PER_PAGE_CASES = ("markdown in the name", "home", "bad rows")


def _assert_bad_folder_is_one_sentence(at: AppTest, case: str, typed: str) -> None:
    set_mura_root(at, typed)
    assert_clean(at)
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1, (case, errors)
    assert_one_sentence(unescaped(errors[0]))
    assert at.session_state["mura_root"] is None, case
    text = "\n".join(shown_text(at))
    assert SECRET not in text and "](https://evil" not in text, case
    assert str(Path.home()) + "/" not in text and f" {Path.home()} " not in text, case


def test_every_bad_folder_is_one_sentence(use_scratch_weights: Path, bad_folders: dict[str, str]) -> None:
    at = start_app().switch_page(f"../pages/{FULL_GRID_PAGE}").run()
    assert_clean(at)
    for case, typed in bad_folders.items():
        _assert_bad_folder_is_one_sentence(at, case, typed)


@pytest.mark.parametrize("page", PAGES)
def test_bad_folders_are_one_sentence_on_every_page(
    use_scratch_weights: Path, bad_folders: dict[str, str], page: str
) -> None:
    at = start_app().switch_page(f"../pages/{page}").run()
    assert_clean(at)
    for case in PER_PAGE_CASES:
        _assert_bad_folder_is_one_sentence(at, case, bad_folders[case])


def test_the_sidebar_check_refuses_every_bad_folder_in_one_sentence(bad_folders: dict[str, str]) -> None:
    """The shared check itself (dashboard.state.resolve_mura_root), for every bad folder."""
    for case, typed in bad_folders.items():
        root, reason = state.resolve_mura_root(typed)
        assert root is None and reason, case
        assert_one_sentence(reason)
        assert SECRET not in reason and "](https://evil" not in reason, case
        assert str(Path.home()) + "/" not in reason and f" {Path.home()} " not in reason, case


def test_a_good_folder_after_bad_ones_is_used(
    use_scratch_weights: Path, bad_folders: dict[str, str], scratch_mura_root: Path
) -> None:
    at = set_mura_root(start_app(), bad_folders["bad rows"])
    at = set_mura_root(at, scratch_mura_root)
    assert_clean(at)
    assert not at.sidebar.error and at.session_state["mura_root"] == str(scratch_mura_root)


def test_lock_hides_the_box_and_keeps_mura_root(
    use_scratch_weights: Path, scratch_mura_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mura.LOCK_ENV, "1")
    monkeypatch.setenv("MURA_ROOT", str(scratch_mura_root))
    at = start_app()
    assert_clean(at)
    assert not at.sidebar.text_input
    assert at.session_state["mura_root"] == str(scratch_mura_root)
    assert "Data: the server's MURA folder" in [c.value for c in at.sidebar.caption]
    assert not any(str(scratch_mura_root) in text for text in shown_text(at)), "the server's path stays private"
    # What a client could send for the old box's keys changes nothing.
    at.session_state["mura_root_text"] = "/etc"
    at.session_state["mura_root_input"] = "/etc"
    at.session_state["mura_root"] = "/etc"
    at.switch_page("../pages/browse.py").run()
    assert_clean(at)
    assert at.session_state["mura_root"] == str(scratch_mura_root)


def test_lock_with_an_unusable_mura_root_says_so_without_the_path(
    use_scratch_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mura.LOCK_ENV, "1")
    monkeypatch.setenv("MURA_ROOT", str(tmp_path / "gone"))
    at = start_app()
    assert_clean(at)
    warnings = [w.value for w in at.sidebar.warning]
    assert len(warnings) == 1 and "server's MURA folder cannot be used" in warnings[0]
    assert at.session_state["mura_root"] is None
    assert not any("gone" in text for text in shown_text(at))


def test_deployed_command_locks_the_data_folder_by_default(tmp_path: Path) -> None:
    """scripts/serve.sh (the Dockerfile's CMD and the Procfile's web:) exports the lock unless told otherwise."""
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\necho "lock=${MURA_LENS_LOCK_DATA:-unset}"\n')
    fake_python.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    served = subprocess.run(
        ["sh", "scripts/serve.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert served.stdout.strip() == "lock=1"
    unlocked = subprocess.run(
        ["sh", "scripts/serve.sh"],
        cwd=REPO_ROOT,
        env={**env, "MURA_LENS_LOCK_DATA": "0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert unlocked.stdout.strip() == "lock=0"
