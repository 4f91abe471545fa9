"""The docs stay true to the code: docs/architecture.md names every module a newcomer may open."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = PROJECT_ROOT / "docs" / "architecture.md"


def _modules() -> list[Path]:
    found = []
    for package in ("core", "dashboard", "pages"):
        found += [p for p in sorted((PROJECT_ROOT / package).rglob("*.py")) if p.name != "__init__.py"]
    return found


def test_every_module_is_named_in_the_architecture_page() -> None:
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", ARCHITECTURE.read_text(encoding="utf-8")))
    missing = [str(p.relative_to(PROJECT_ROOT)) for p in _modules() if p.stem not in words]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


def test_the_readme_links_to_docs_that_exist() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    targets = {link.split("#")[0] for link in re.findall(r"\]\(([^)#:]+(?:#[^)]*)?)\)", readme)}
    missing = sorted(t for t in targets if t and not (PROJECT_ROOT / t).exists())
    assert not missing, f"README links to missing files: {', '.join(missing)}"
