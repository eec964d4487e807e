"""Imports flow one way through the packages, as DESIGN.md says."""

import ast
import re
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "src" / "mlpot"
ORDER = [
    "data",
    "nn",
    "models",
    "physics",
    "uncertainty",
    "calculators",
    "training",
    "active",
    "validation",
    "apps",
    "cli",
]
PEERS = {"training", "active", "validation", "apps"}  # meet only through public functions


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_import_direction():
    problems = []
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE).parts
        if len(parts) < 2:
            continue  # top-level modules (errors, __init__) are shared by all
        package = parts[0]
        for module in _imports(path):
            names = module.split(".")
            if names[0] != "mlpot" or len(names) < 2 or names[1] not in ORDER:
                continue
            target = names[1]
            if target == package:
                continue
            if package in PEERS and target in PEERS:
                if len(names) > 2:
                    problems.append(f"{path}: imports internals {module}")
            elif ORDER.index(target) > ORDER.index(package):
                problems.append(f"{path}: {package} imports {module} (against the flow)")
    assert not problems, "\n".join(problems)


def test_no_absolute_machine_paths():
    """Shared data is ``../shared/data`` relative to the repository, scratch a temporary
    folder: no file of the repository names a machine's absolute path."""
    root = SOURCE.parents[1]
    pattern = re.compile(r"[\"'(= `]/(work|root|home|farm|Users|mnt)/")
    problems = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if not path.is_file() or parts[0].startswith(".") or "__pycache__" in parts:
            continue
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".sh"}:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                problems.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not problems, "\n".join(problems)
