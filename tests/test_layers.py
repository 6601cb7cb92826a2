"""The house's floors: the library never imports what is built on top of it.

``retina_core`` is imported by flows, tasks and the ``retina`` command, never the other way
round; ``retina_core.storage`` is the ground floor (the object store), so it imports
nothing of the project above ``config`` and ``domain``; the result types are data that a
process without torch (a UI, a client) can read.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import retina_core

ROOT = Path(__file__).resolve().parents[1]
ABOVE_THE_LIBRARY = ("prefect", "flows", "tasks", "retina_cli")
STORAGE_MAY_IMPORT = ("retina_core.storage", "retina_core.config", "retina_core.domain")


def _library_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(retina_core.__path__, "retina_core.")
        if ".migrations" not in m.name
    )


def _imported_in_a_fresh_interpreter(modules: list[str]) -> set[str]:
    """Import ``modules`` in a new Python process and return every module name it loaded."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=300
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_no_library_module_imports_prefect_flows_tasks_or_the_cli() -> None:
    modules = _library_modules()
    assert "retina_core.verbs" in modules and "retina_core.fusion.embedding_cache" in modules
    loaded = _imported_in_a_fresh_interpreter(modules)
    above = sorted(name for name in loaded if _top(name) in ABOVE_THE_LIBRARY)
    assert not above, f"retina_core pulled in modules from above the library: {above[:10]}"


def test_the_result_types_load_without_torch() -> None:
    loaded = _imported_in_a_fresh_interpreter(["retina_core.results"])
    assert "torch" not in loaded and "prefect" not in loaded


def _project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add("retina_core.<relative>")
    return {name for name in found if name.startswith("retina_core") or _top(name) in ABOVE_THE_LIBRARY}


def test_storage_is_the_ground_floor() -> None:
    files = sorted((ROOT / "retina_core" / "storage").rglob("*.py"))
    assert files
    climbing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in _project_imports(path)
        if not name.startswith(STORAGE_MAY_IMPORT)
    }
    assert not climbing, f"storage imports from a floor above it: {sorted(climbing)}"
