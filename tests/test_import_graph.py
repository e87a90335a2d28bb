"""The import graph of models/ and workers/: no circles (a circle means a registry or a
shared piece sits in the wrong module), no branch on a dataset's or a variant's name
outside the registries that own them, and the registries' torch-free (and numpy-free)
part is what the client's base install validates specs with."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from models.catalog import ARCHITECTURES, PRESETS
from models.datasets import BUILT_IN

ROOT = Path(__file__).parents[1]
PACKAGES = ("models", "workers")


def _module(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, known: set[str]) -> set[str]:
    """Modules of ``known`` imported anywhere in ``tree`` (inside functions too), except
    under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from models import plugins` names a module too
                found.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                          else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found & known


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the modules of models/ and workers/ it imports."""
    files = [p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")]
    known = {_module(p, root) for p in files}
    return {_module(p, root): _imports(ast.parse(p.read_text()), known) - {_module(p, root)}
            for p in files}


def circle(g: dict[str, set[str]]) -> list[str]:
    """One import circle of ``g`` (its modules, the first repeated last), or []."""
    try:
        TopologicalSorter(g).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return []


def test_models_and_workers_have_no_import_circles() -> None:
    g = graph()
    assert "models.architectures" in g["models.factorized_prior"]  # the graph is real
    assert "workers.lr_search" in g["workers.pipeline"]
    assert circle(g) == []


def test_an_import_inside_a_function_counts() -> None:
    code = "def f():\n    from models.data import load_dataset\n"
    assert _imports(ast.parse(code), {"models.data"}) == {"models.data"}
    assert circle({"a": {"b"}, "b": {"a"}}) in (["a", "b", "a"], ["b", "a", "b"])
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import models.data\n"
    assert _imports(ast.parse(guarded), {"models.data"}) == set()


def test_no_code_outside_the_registries_compares_with_a_dataset_or_variant_name() -> None:
    names = set(BUILT_IN) | set(PRESETS) | set(ARCHITECTURES)
    owners = {ROOT / "models" / "catalog.py", *(ROOT / "models" / "datasets").rglob("*.py")}
    found = []
    for path in (p for pkg in (*PACKAGES, "service") for p in (ROOT / pkg).rglob("*.py")):
        if path in owners:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                literals = [c.value for c in ast.walk(node)
                            if isinstance(c, ast.Constant) and c.value in names]
                if literals:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {literals}")
    assert found == []


def test_specs_validate_with_the_base_install_alone() -> None:
    """``pip install aelab`` (no extras: no numpy, Pillow, torch) validates specs with the
    recipe and dataset registries, and its CLI imports."""
    code = """
import importlib.abc, sys
BLOCKED = {"numpy", "PIL", "torch", "torchvision", "ray", "sqlalchemy", "fastapi"}
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NotInstalled())
import service.cli
from service.spec import ExperimentSpec
spec = ExperimentSpec.model_validate({"datasets": ["mnist", "synthetic"], "models": [
    "baseline", {"name": "ps_feature", "architecture": "pixel_shuffle", "loss": "feature"}]})
print([(r.model, r.dataset) for r in spec.run_specs()])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("[('baseline', 'mnist'), ('ps_feature', 'mnist'), "
                                  "('baseline', 'synthetic'), ('ps_feature', 'synthetic')]")
