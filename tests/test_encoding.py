"""Every text file the project reads or writes names its encoding: hashes are taken over UTF-8, and
a server under a Latin-1 locale must read the same caches. Calls are read with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("core", "dashboard", "pages", "scripts", "bench")
_TEXT_METHODS = {"read_text", "write_text"}
# Receivers whose ``open`` is not a text file: images, archives, file descriptors (os.open), the UTF-8 writer.
_NOT_TEXT_FILES = {"Image", "tarfile", "zipfile", "atomic", "webbrowser", "os"}


def _mode(call: ast.Call, position: int) -> str:
    arguments = [*call.args[position : position + 1], *(k.value for k in call.keywords if k.arg == "mode")]
    return next((a.value for a in arguments if isinstance(a, ast.Constant) and isinstance(a.value, str)), "r")


def _names_no_encoding(call: ast.Call) -> bool:
    """Whether ``call`` opens, reads or writes a text file without saying which encoding."""
    if any(keyword.arg == "encoding" for keyword in call.keywords):
        return False
    function = call.func
    if isinstance(function, ast.Name):
        return function.id == "open" and "b" not in _mode(call, 1)
    if not isinstance(function, ast.Attribute):
        return False
    receiver = function.value
    if isinstance(receiver, ast.Name) and receiver.id in _NOT_TEXT_FILES:
        return False
    if function.attr in _TEXT_METHODS:
        return True
    return function.attr == "open" and "b" not in _mode(call, 0)


def test_text_files_are_opened_with_an_explicit_encoding() -> None:
    unnamed = []
    for package in CHECKED:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and _names_no_encoding(node):
                    unnamed.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert not unnamed, "no encoding= at " + ", ".join(unnamed)
