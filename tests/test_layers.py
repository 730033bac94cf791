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
SHELL = set((ROOT / "labeler" / "cli").glob("*.py"))  # the outermost shell may reach every layer


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


# Inside `labeler`, its rooms: the store at the bottom, data in and out above it, the annotators above
# both; the project file, its task type and errors are for everyone; only the CLI reaches every layer.
EVERYONE = {"config", "tasks", "errors"}
ROOMS = {
    "store": {"store"} | EVERYONE,
    "data": {"store", "data"} | EVERYONE,
    "annotators": {"store", "data", "annotators"} | EVERYONE,
}


def test_labeler_rooms_import_only_downward():
    wrong = []
    for room, allowed in ROOMS.items():
        for path in (ROOT / "labeler" / room).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "labeler" and len(parts) > 1 and parts[1] not in allowed:
                        wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert wrong == []
