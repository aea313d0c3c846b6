"""The layering rules: solver never imports torch, runtime never imports ortools or pulp,
and `import solver` stays light (solvers are imported when used)."""

import ast
import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def imported_modules(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_solver_never_imports_torch():
    assert "torch" not in imported_modules("solver")


def test_runtime_never_imports_ortools_or_pulp():
    assert not {"ortools", "pulp", "highspy"} & imported_modules("runtime")


def test_import_solver_does_not_load_the_solvers():
    code = "import sys, solver; print(sorted(m for m in ('ortools', 'pulp', 'highspy', 'torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_public_surface():
    import solver

    for name in ("Instance", "Layer", "Device", "Plan", "Status", "solve", "load_instance", "validate_plan"):
        assert name in solver.__all__
    assert Path(solver.__file__).with_name("py.typed").exists()
