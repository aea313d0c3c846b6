"""The house rules, read from the sources and the built wheel:

* one import package, ``layerfit``: solver/ is installed as ``layerfit`` and runtime/ as
  ``layerfit.runtime``; nothing named ``solver`` or ``runtime`` is importable once installed;
* the planner never imports torch, the runtime never imports ortools or pulp, and the CLI
  imports the runtime only for ``run``;
* no import cycle among the modules;
* ``import layerfit`` stays light (solvers are imported when used).
"""

import ast
import doctest
import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGES = {"solver": "layerfit", "runtime": "layerfit.runtime"}


def module_name(path: Path) -> str:
    """The installed name of a source file: solver/methods/dp.py is layerfit.methods.dp."""
    top, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[top], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(path): path for top in PACKAGES for path in sorted((ROOT / top).rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The modules a file imports when it runs (absolute names; imports only for type
    checking left out). With ``top_level_only``, imports inside functions are left out too."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                continue
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    module = f"{base}.{child.module}" if child.module else base
                else:
                    module = child.module or ""
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in child.names)  # `from . import cpsat`
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def third_party(package: str) -> set[str]:
    return {name.split(".")[0] for path in (ROOT / package).rglob("*.py") for name in imports(path)}


def test_the_planner_never_imports_torch():
    assert not {"torch", "transformers", "safetensors"} & third_party("solver")


def test_the_runtime_never_imports_ortools_or_pulp():
    assert not {"ortools", "pulp", "highspy"} & third_party("runtime")


def test_only_the_cli_reaches_the_runtime_and_only_inside_run():
    planner = {name: path for name, path in sources().items() if not name.startswith("layerfit.runtime")}
    reaching = sorted(name for name, path in planner.items() if any(m.startswith("layerfit.runtime") for m in imports(path)))
    assert reaching == ["layerfit.cli"]
    assert not any(m.startswith("layerfit.runtime") for m in imports(planner["layerfit.cli"], top_level_only=True))


def test_no_import_cycle_among_the_modules():
    modules = sources()
    graph = {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ re-exports its modules; an edge into a package is an edge into its
    # __init__, which is what Python runs, so cycles through __init__ count.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_nothing_imports_the_source_folders_by_their_own_names():
    """Inside the checkout `solver` and `runtime` would import (the folders are on the path), as
    a second copy of the package with classes of its own: everything says `layerfit`."""
    users = [path for folder in ("tests", "benchmarks", "instances", "docs", "solver", "runtime")
             for path in sorted((ROOT / folder).rglob("*.py"))]
    for path in users:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in PACKAGES, f"{path.relative_to(ROOT)} imports {name}"


def test_import_layerfit_is_light():
    code = ("import sys, layerfit; "
            "print(sorted(m for m in ('ortools', 'pulp', 'highspy', 'torch', 'numpy', 'layerfit.runtime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, check=True)
    assert out.stdout.strip() == "[]"


def test_nothing_named_solver_or_runtime_is_importable_from_outside_the_checkout(tmp_path):
    code = ("import importlib.util as u, layerfit, layerfit.runtime; "
            "print(u.find_spec('solver'), u.find_spec('runtime'), layerfit.runtime.execute.__module__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert out.stdout.split() == ["None", "None", "layerfit.runtime.execute"]


def test_public_surface():
    import layerfit

    for name in ("Instance", "Layer", "Device", "Plan", "Status", "solve", "load_instance", "validate_plan",
                 "from_hf_config", "load_topology", "link_bandwidth", "map_plan", "export_plan"):
        assert name in layerfit.__all__ and hasattr(layerfit, name)
    assert Path(layerfit.__file__).with_name("py.typed").exists()


def test_public_runtime_surface():
    pytest.importorskip("torch")
    import layerfit.runtime

    for name in ("execute", "profile_module"):
        assert name in layerfit.runtime.__all__ and hasattr(layerfit.runtime, name)


def test_the_wheel_holds_only_layerfit(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("layerfit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"layerfit"}
    for source in sources().values():
        installed = module_name(source).replace(".", "/")
        assert f"{installed}.py" in names or f"{installed}/__init__.py" in names, source
    assert {"layerfit/py.typed", "layerfit/runtime/py.typed"} <= set(names)


@pytest.mark.parametrize("name", [name for name in sources() if not name.startswith("layerfit.runtime")])
def test_docstring_examples(name, monkeypatch):
    """The planner's docstring examples run (from the repository root, where the instances are)."""
    monkeypatch.chdir(ROOT)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0

