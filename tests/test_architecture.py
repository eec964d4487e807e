"""Imports flow one way through the packages, as DESIGN.md says, and never in a circle.

The import graph is read from the source with ``ast``: every ``import`` statement counts,
module level or inside a function. Relative imports are resolved; ``from pkg import name``
where ``name`` is a submodule of ``pkg`` counts as an import of that submodule, otherwise as
one of ``pkg`` itself (its ``__init__``).
"""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "src" / "mlpot"
ROOT = "mlpot"
ORDER = [
    "data",
    "nn",
    "models",
    "physics",
    "uncertainty",
    "calculators",
    "md",
    "export",
    "training",
    "active",
    "validation",
    "apps",
    "testing",
    "cli",
]
PEERS = {"training", "active", "validation", "apps"}  # meet only through public functions


@dataclass(frozen=True)
class Import:
    """One imported module (dotted name), where it is imported, and the statement's line."""

    source: str
    target: str
    path: Path
    line: int


def _module_name(path: Path, source: Path) -> str:
    parts = path.relative_to(source).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((ROOT, *parts))


def _modules(source: Path = SOURCE) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at ``source``."""
    return {_module_name(path, source): path for path in sorted(source.rglob("*.py"))}


def _resolve(module: str | None, level: int, importer: str, path: Path) -> str:
    """The absolute name of ``from <level dots><module> import ...`` in ``importer``."""
    if level == 0:
        return module or ""
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _imports(modules: dict[str, Path]) -> list[Import]:
    """Every import of a module of the package, by every module of the package."""
    found = []
    for source, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module, node.level, source, path)
                submodules = [f"{base}.{alias.name}" for alias in node.names]
                targets = [name for name in submodules if name in modules]
                if len(targets) < len(submodules):  # names defined in ``base`` itself
                    targets.append(base)
            else:
                continue
            found.extend(
                Import(source, target, path, node.lineno)
                for target in targets
                if target == ROOT or target.startswith(ROOT + ".")
            )
    return found


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (iterative), largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return sorted(components, key=len, reverse=True)


def _layer(module: str) -> str | None:
    """The package of ``module`` (``data``, ``nn``, ...), or None for a top-level module."""
    parts = module.split(".")
    if len(parts) == 2 and (SOURCE / f"{parts[1]}.py").is_file():
        return None
    return parts[1] if len(parts) > 1 else ROOT


def test_strongly_connected_components_of_a_small_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"f"}}
    components = _strongly_connected(graph)
    assert components[0] == ["a", "b", "c"]
    assert sorted(components[1:3]) == [["d", "e"], ["f"]]
    assert len(components) == 3


def test_imports_are_resolved(tmp_path):
    package = tmp_path / "mlpot"
    (package / "pkg").mkdir(parents=True)
    (package / "__init__.py").write_text("VERSION = 1\n")
    (package / "pkg" / "__init__.py").write_text("from . import sub\nVALUE = 1\n")
    (package / "pkg" / "sub.py").write_text(
        "def f():\n    from ..pkg import VALUE, sub\n    from .. import pkg\n"
    )
    (package / "top.py").write_text("import os\nimport mlpot.pkg.sub\nfrom . import VERSION\n")
    found = {(i.source, i.target) for i in _imports(_modules(package))}
    assert found == {
        ("mlpot.pkg", "mlpot.pkg.sub"),  # from . import <submodule>
        ("mlpot.pkg.sub", "mlpot.pkg"),  # from ..pkg import <name>; from .. import <package>
        ("mlpot.pkg.sub", "mlpot.pkg.sub"),
        ("mlpot.top", "mlpot.pkg.sub"),
        ("mlpot.top", "mlpot"),  # from . import <name of the root>
    }


def test_no_import_cycles():
    """No module imports itself through others, wherever the import statements are."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for found in _imports(modules):
        if found.target in modules and found.target != found.source:
            graph[found.source].add(found.target)
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{len(c)} modules: " + " ".join(c) for c in cycles
    )


def test_no_import_of_the_package_root_from_inside():
    """``import mlpot`` / ``from mlpot import ...`` (or ``from .. import``) reach the root
    ``__init__``, which imports the public API: from inside the package, a cycle."""
    problems = [
        f"{i.path.relative_to(SOURCE.parent)}:{i.line}: imports the package root"
        for i in _imports(_modules())
        if i.target == ROOT
    ]
    assert not problems, "\n".join(problems)


def test_every_package_has_a_layer():
    packages = {p.name for p in SOURCE.iterdir() if (p / "__init__.py").is_file()}
    assert not packages - set(ORDER), f"packages missing from ORDER: {packages - set(ORDER)}"


def test_import_direction():
    """Packages import only packages before them in ORDER (peers only each other's public
    names); top-level modules (errors, trust, config_io) are below every package and import
    only other top-level modules."""
    problems = []
    for found in _imports(_modules()):
        if found.source == ROOT or found.target == ROOT:
            continue  # the root's own imports are its API; imports of it are tested above
        here = found.path.relative_to(SOURCE.parent)
        package, target = _layer(found.source), _layer(found.target)
        if target is None or target == package:
            continue
        if package is None:
            problems.append(f"{here}:{found.line}: top-level module imports {found.target}")
        elif target not in ORDER:
            problems.append(f"{here}:{found.line}: imports {found.target} (no layer)")
        elif package in PEERS and target in PEERS:
            if found.target.count(".") > 1:
                problems.append(f"{here}:{found.line}: imports internals {found.target}")
        elif ORDER.index(target) > ORDER.index(package):
            problems.append(f"{here}:{found.line}: {package} imports {found.target} (upward)")
    assert not problems, "\n".join(problems)


def _repository_files(root: Path) -> list[Path]:
    """The files git would keep (tracked or not ignored: a user's scratch runs are not the
    repository's), or every file where there is no git."""
    import subprocess

    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return list(root.rglob("*"))
    return [root / name for name in listed]


def test_no_absolute_machine_paths():
    """Shared data is ``../shared/data`` relative to the repository, scratch a temporary
    folder: no file of the repository names a machine's absolute path."""
    root = SOURCE.parents[1]
    pattern = re.compile(r"[\"'(= `]/(work|root|home|farm|Users|mnt)/")
    problems = []
    for path in _repository_files(root):
        parts = path.relative_to(root).parts
        if not path.is_file() or parts[0].startswith(".") or "__pycache__" in parts:
            continue
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".sh"}:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                problems.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not problems, "\n".join(problems)
