"""Guideline documents: the Markdown humans read, parsed for what the prompt needs.

The format: a title and task description, any sections (rules...), and one section per label
(a heading that is the label's name) with its definition and an `Examples:` list."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")


@dataclass(frozen=True)
class Guideline:
    text: str
    definitions: dict[str, str]  # label -> the paragraph under its heading
    examples: tuple[tuple[str, str], ...]  # (text, label) from the label sections' example lists
    missing: tuple[str, ...]  # labels without a section


def parse_guideline(text: str, labels: list[str]) -> Guideline:
    by_name = {label.lower(): label for label in labels}
    definitions: dict[str, list[str]] = {}
    examples: list[tuple[str, str]] = []
    current: str | None = None
    in_examples = False
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            current = by_name.get(heading.group(2).strip().strip("`").lower())
            in_examples = False
            if current:
                definitions.setdefault(current, [])
            continue
        if current is None:
            continue
        if line.strip().lower().rstrip(":") == "examples":
            in_examples = True
            continue
        bullet = _BULLET.match(line)
        if in_examples and bullet:
            examples.append((bullet.group(1).strip().strip('"'), current))
        elif not in_examples and line.strip():
            definitions[current].append(line.strip())
    return Guideline(
        text=text.strip(),
        definitions={k: " ".join(v) for k, v in definitions.items()},
        examples=tuple(examples),
        missing=tuple(label for label in labels if label not in definitions),
    )
