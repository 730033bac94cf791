"""Imports only point downward: labeler <- prompts <- routing <- evals <- review_ui (ARCHITECTURE.md)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "labeler": {"labeler"},
    "prompts": {"labeler", "prompts"},
    "routing": {"labeler", "routing"},
    "evals": {"labeler", "prompts", "routing", "evals"},
    "review_ui": {"labeler", "routing", "evals", "review_ui"},
}
SHELL = {ROOT / "labeler" / "cli.py"}  # the outermost shell may reach every layer


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


def test_layers_import_only_downward():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            if path in SHELL:
                continue
            extra = imported_packages(path) - allowed
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert wrong == []


def test_nothing_imports_the_cli():
    users = [p for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py")
             if p not in SHELL and "labeler.cli" in p.read_text()]
    assert users == []
