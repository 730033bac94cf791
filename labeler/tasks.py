"""Task types: what one answer is, and how it is written wherever a label is stored.

`single_label`: an answer is one of the project's labels. `multi_label`: an answer is a set of
them, any number (none included). Everywhere a label is stored (votes, gold, decisions, review
answers) a set is written as its labels in the project's order joined by `|`, the empty set as
the empty string: so "same answer" is string equality for both types, and a honeypot check, an
agreement between reviewers or an exact-set accuracy needs no special case. `None` stays an
abstention ("I don't know", an answer that does not parse).
"""

from __future__ import annotations

from typing import Iterable

SEPARATOR = "|"


class SingleLabel:
    name = "single_label"

    def __init__(self, labels: list[str]):
        self.labels = list(labels)

    def canonical(self, value) -> str:
        """The stored form of an answer; ValueError with a one-line reason if it is not one."""
        label = str(value).strip() if value is not None else ""
        if not label:
            raise ValueError("missing label")
        if label not in self.labels:
            raise ValueError(f"unknown label {label!r} (labels: {', '.join(sorted(self.labels))})")
        return label

    def parts(self, value: str | None) -> list[str]:
        return [] if value is None else [value]

    key = "label"  # an answer's name in exports and the review API

    def exported(self, value: str | None):
        """An answer as exports and the review API give it: the label (None: no answer)."""
        return value


class MultiLabel(SingleLabel):
    name = "multi_label"

    def canonical(self, value) -> str:
        """A list of labels, or labels joined by `|` (or `,` / `;`); none is the empty set."""
        if value is None:
            raise ValueError("missing labels (an empty value is the empty set)")
        if isinstance(value, str):
            names = [v.strip() for v in value.replace(";", SEPARATOR).replace(",", SEPARATOR).split(SEPARATOR)]
        elif isinstance(value, (list, tuple)):
            names = [str(v).strip() for v in value]
        else:
            raise ValueError(f"labels must be a list or text joined by '|', not {type(value).__name__}")
        names = [n for n in names if n]
        unknown = sorted(set(names) - set(self.labels))
        if unknown:
            raise ValueError(f"unknown label(s) {', '.join(map(repr, unknown))} (labels: {', '.join(sorted(self.labels))})")
        return self.join(names)

    def join(self, names: Iterable[str]) -> str:
        chosen = set(names)
        return SEPARATOR.join(label for label in self.labels if label in chosen)

    def parts(self, value: str | None) -> list[str]:
        return [] if not value else value.split(SEPARATOR)

    key = "labels"

    def exported(self, value: str | None):
        """A list of labels (None: no answer)."""
        return None if value is None else self.parts(value)


TASK_TYPES = {t.name: t for t in (SingleLabel, MultiLabel)}


def task_type(config) -> SingleLabel:
    """The task type of a project's settings (labeler.config.ProjectConfig)."""
    return TASK_TYPES[config.task](config.label_names)
