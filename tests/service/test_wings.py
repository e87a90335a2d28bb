"""The service's floor plan holds: the API and the web UI never import each other (only the
composition root knows both), the context they share imports neither, and no handler
reads ``app.state`` (the context is reached through its one dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.utils import REPO

SERVICE = REPO / "service"


def imports(path: Path) -> set[str]:
    """Every module an import statement of ``path`` names (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def wing_imports(folder: str, other: str) -> dict[str, set[str]]:
    return {str(p.relative_to(REPO)): hits for p in sorted((SERVICE / folder).rglob("*.py"))
            if (hits := {m for m in imports(p)
                         if m == f"service.{other}" or m.startswith(f"service.{other}.")})}


def test_the_api_and_the_web_ui_never_import_each_other() -> None:
    assert wing_imports("api", "web") == {}
    assert wing_imports("web", "api") == {}
    root = imports(SERVICE / "app.py")
    assert "service.api.router" in root and "service.web.router" in root


def test_what_both_wings_share_imports_neither() -> None:
    for shared in ("context.py", "access.py", "http_errors.py", "caches.py"):
        wings = {m for m in imports(SERVICE / shared)
                 if m.startswith(("service.api", "service.web"))}
        assert wings == set(), shared


def test_only_the_composition_root_and_the_context_touch_app_state() -> None:
    def reads_app_state(path: Path) -> list[int]:
        return [node.lineno for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Attribute) and node.attr == "state"
                and ((isinstance(node.value, ast.Name) and node.value.id == "app")
                     or (isinstance(node.value, ast.Attribute) and node.value.attr == "app"))]

    found = {str(p.relative_to(REPO)): lines for p in sorted(SERVICE.rglob("*.py"))
             if (lines := reads_app_state(p))}
    assert set(found) == {"service/app.py", "service/context.py"}, found
    assert len(found["service/app.py"]) == 1 and len(found["service/context.py"]) == 1
