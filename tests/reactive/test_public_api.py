"""reactive's public API: one namespace, and the project uses nothing else.

``agency`` and ``teamhub`` are held to what any other Django project may use:
the names of ``reactive.__all__``, imported from ``reactive`` itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import reactive

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in a file, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


def test_every_public_name_resolves():
    assert sorted(reactive.__all__) == sorted(reactive._EXPORTS)
    for name in reactive.__all__:
        assert getattr(reactive, name) is not None, name
    with pytest.raises(AttributeError):
        reactive.no_such_name  # noqa: B018


def test_type_checkers_see_the_same_names():
    tree = ast.parse((ROOT / "reactive" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If))  # if TYPE_CHECKING:
    seen = {alias.asname or alias.name for node in block.body for alias in node.names}
    assert seen == set(reactive.__all__)


@pytest.mark.parametrize("package", ["agency", "teamhub"])
def test_the_project_uses_only_the_public_api(package):
    outside = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module, names in imports_of(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module.startswith("reactive."):
                outside.append(f"{where}: imports {module}")
            elif module == "reactive":
                outside += [f"{where}: reactive.{n}" for n in names if n not in reactive.__all__]
    assert not outside, "\n".join(outside)


def test_importing_reactive_loads_no_internals():
    """`INSTALLED_APPS` imports the package before the apps are ready: it must stay light."""
    code = (
        "import sys, reactive; "
        "print(sorted(m for m in sys.modules if m.startswith('reactive.') or m == 'channels'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
