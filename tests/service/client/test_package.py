"""The client is a package of its own: what `pip install aelab` ships imports nothing of the
server, by construction (every import statement of the package is read) and in fact (a
fresh interpreter imports it and the CLI with the heavy stacks absent: test_remote)."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.utils import REPO

PACKAGE = REPO / "service" / "client"
# The base install's dependencies (pyproject.toml) and pandas, which results_frame imports
# only when asked (an extra).
ALLOWED = {"httpx", "pydantic", "pydantic_settings", "yaml", "pandas"}
# The one module of aelab's other layers the wire contract needs: the measures contract,
# a leaf that imports the standard library and pydantic alone (checked below).
CONTRACT = "workers.measures"


def imported_modules(path) -> set[str]:
    """Every module an import statement of ``path`` names, at any depth (functions and
    ``if TYPE_CHECKING:`` blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found.add(node.module or "")
    return found


def test_every_import_of_the_client_package_is_stdlib_its_dependencies_or_itself() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "client.py", "errors.py", "schemas.py",
                                       "specs.py", "states.py"}
    outside = {f"{f.name}: {name}" for f in files for name in imported_modules(f)
               if not (name == "service.client" or name.startswith("service.client.")
                       or name == CONTRACT
                       or name.split(".")[0] in sys.stdlib_module_names
                       or name.split(".")[0] in ALLOWED)}
    assert outside == set()


def test_the_measures_contract_the_client_shares_is_a_leaf() -> None:
    path = REPO / "workers" / "measures.py"
    outside = {name for name in imported_modules(path)
               if not (name.split(".")[0] in sys.stdlib_module_names or name == "__future__"
                       or name.split(".")[0] == "pydantic")}
    assert outside == set()
    assert (REPO / "workers" / "__init__.py").read_text().count("import") == 0


def test_importing_the_client_loads_no_other_part_of_aelab() -> None:
    code = ("import sys; import service.client; "
            "print(sorted({m for m in sys.modules if m.split('.')[0] in ('service', 'models', "
            "'workers') and not m.startswith('service.client')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    # the namespaces' own one-line __init__s and the measures contract
    assert out.strip() == "['service', 'workers', 'workers.measures']"
