"""The rules of docs/architecture.md that import-linter cannot state.

``lint-imports`` (run by ``python3 tasks.py test`` before the tests) checks the
layers and that nothing uses ``skyretriever.testing``. These tests read every
module of ``src/`` as source and check the rest: no import circle anywhere
(imports inside functions included), nothing imports the package face, no
module imports a skyretriever module inside a function (such imports hide
circles), and files are renamed into place only by ``storage``. Each rule is
also tried on a small package made to break it, so a rule that cannot fail
would show.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "skyretriever"


@dataclass
class Import:
    """One import statement of a module: what it names and where it stands."""

    target: str
    line: int
    in_function: bool
    names_face: bool = False


@dataclass
class Module:
    name: str
    path: Path
    imports: list[Import] = field(default_factory=list)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool = False):
    """Every import node below ``node`` with whether it sits in a function, skipping TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _walk(other, in_function)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                           | ast.Lambda)
        yield from _walk(child, inside)


def read_package(src: Path, package: str = PACKAGE) -> dict[str, Module]:
    """The modules of ``package`` under ``src`` with their imports of the package's own modules."""
    modules: dict[str, Module] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(not part.isidentifier() for part in parts):
            continue                                  # alembic revision files: not importable names
        modules[".".join(parts)] = Module(".".join(parts), path)
    for module in modules.values():
        is_package = module.path.name == "__init__.py"
        tree = ast.parse(module.path.read_text(), filename=str(module.path))
        for node, in_function in _walk(tree):
            for target, names_face in _targets(node, module.name, is_package, modules, package):
                module.imports.append(Import(target, node.lineno, in_function, names_face))
    return modules


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool,
             modules: dict[str, Module], package: str):
    """(imported module, whether a name of the package face is imported) for one statement."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == package:
                yield _owner(alias.name, modules), alias.name == package
        return
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if prefix.split(".")[0] != package:
        return
    for alias in node.names:
        candidate = f"{prefix}.{alias.name}"
        if candidate in modules:
            yield candidate, False
        else:
            yield _owner(prefix, modules), prefix == package


def _owner(name: str, modules: dict[str, Module]) -> str:
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def circles(modules: dict[str, Module]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan)."""
    edges = {m.name: {i.target for i in m.imports if i.target != m.name and i.target in modules}
             for m in modules.values()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def face_imports(modules: dict[str, Module], package: str = PACKAGE) -> list[str]:
    """Imports of a name from the package face (``from skyretriever import Project``) inside it."""
    return [f"{m.name} line {i.line}" for m in modules.values() if m.name != package
            for i in m.imports if i.names_face]


def imports_in_functions(modules: dict[str, Module]) -> list[str]:
    """Imports of the package's own modules written inside a function."""
    return [f"{m.name} line {i.line}: {i.target}" for m in modules.values()
            for i in m.imports if i.in_function]


def renames(modules: dict[str, Module], allowed: str) -> list[str]:
    """Calls of os.replace, os.rename or shutil.move outside the module ``allowed``."""
    found = []
    for module in modules.values():
        if module.name == allowed or ".testing" in module.name:
            continue
        for node in ast.walk(ast.parse(module.path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id, node.func.attr) in {
                        ("os", "replace"), ("os", "rename"), ("shutil", "move")}):
                found.append(f"{module.name} line {node.lineno}")
    return found


@pytest.fixture(scope="module")
def package() -> dict[str, Module]:
    return read_package(SRC)


def test_the_package_was_read(package):
    assert {"skyretriever.pipeline", "skyretriever.models.datasets",
            "skyretriever.testing.sky", "skyretriever.plots"} <= set(package)
    pipeline_targets = {i.target for i in package["skyretriever.pipeline"].imports}
    assert "skyretriever.storage" in pipeline_targets


def test_no_module_is_in_an_import_circle(package):
    assert circles(package) == []


def test_nothing_inside_imports_the_package_face(package):
    assert face_imports(package) == []


def test_no_module_imports_its_own_package_inside_a_function(package):
    # An import inside a function stays only for heavy optional third-party libraries.
    assert imports_in_functions(package) == []


def test_files_are_renamed_into_place_only_by_storage(package):
    assert renames(package, allowed="skyretriever.storage") == []


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return read_package(tmp_path, "pkg")


def test_the_rules_catch_what_they_are_for(tmp_path):
    broken = _package(tmp_path, {
        "__init__.py": "VERSION = 1\n",
        "low.py": """
            import os
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.high import Thing        # not executed: no circle
            def later():
                from pkg import high             # hidden in a function
                os.replace("a", "b")
            """,
        "high.py": "from pkg.low import later\nfrom pkg import VERSION\n",
        "store.py": "import os\nos.rename('a', 'b')\n",
        "sub/__init__.py": "",
        "sub/a.py": "from . import b\n",
        "sub/b.py": "from .a import x\n",
    })
    assert circles(broken) == [["pkg.high", "pkg.low"], ["pkg.sub.a", "pkg.sub.b"]]
    assert face_imports(broken, "pkg") == ["pkg.high line 2"]
    assert imports_in_functions(broken) == ["pkg.low line 7: pkg.high"]
    assert renames(broken, allowed="pkg.store") == ["pkg.low line 8"]
