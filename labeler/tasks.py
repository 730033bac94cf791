"""Task types: what one answer is, and how it is written wherever a label is stored.

`single_label`: an answer is one of the project's labels. `multi_label`: an answer is a set of
them, any number (none included). Everywhere a label is stored (votes, gold, decisions, review
answers) a set is written as its labels in the project's order joined by `|`, the empty set as
the empty string: so "same answer" is string equality for both types, and a honeypot check, an
agreement between reviewers or an exact-set accuracy needs no special case. `None` stays an
abstention ("I don't know", an answer that does not parse).

`spans`: an answer is a set of typed character ranges in the project's one text field, written as
`start:end:label` (end exclusive) joined by `|` in order of start, end and the labels' order.
"""

from __future__ import annotations

import json
from typing import Iterable

SEPARATOR = "|"
NOTHING_ELSE = "*"  # in a spans vote's probabilities: P(the text holds no span beyond the vote's)


def span_key(start: int, end: int, label: str) -> str:
    """One span in the stored form (`start:end:label`): an answer part, and a key of its probability."""
    return f"{start}:{end}:{label}"


def stored_spans(value: str | None) -> list[tuple[int, int, str]]:
    """The (start, end, label) of each span of a stored answer (None or "": none)."""
    return [(int(s), int(e), label) for s, e, label in (p.split(":", 2) for p in (value or "").split(SEPARATOR) if p)]


class SingleLabel:
    name = "single_label"

    def __init__(self, labels: list[str]):
        self.labels = list(labels)

    def canonical(self, value, text: str | None = None) -> str:
        """The stored form of an answer; ValueError with a one-line reason if it is not one. (`text`: the
        item's, for spans.)"""
        label = str(value).strip() if value is not None else ""
        if not label:
            raise ValueError("missing label")
        if label not in self.labels:
            raise ValueError(f"unknown label {label!r} (labels: {', '.join(sorted(self.labels))})")
        return label

    def parts(self, value: str | None) -> list[str]:
        return [] if value is None else [value]

    key = "label"  # an answer's name in exports and the review API

    def exported(self, value: str | None, text: str | None = None):
        """An answer as exports and the review API give it: the label (None: no answer). (`text`: the
        item's, for spans.)"""
        return value


class MultiLabel(SingleLabel):
    name = "multi_label"

    def canonical(self, value, text: str | None = None) -> str:
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

    def exported(self, value: str | None, text: str | None = None):
        """A list of labels (None: no answer)."""
        return None if value is None else self.parts(value)


class Spans(MultiLabel):
    """Typed spans of one text field; `labels` are the entity types. Overlapping spans are kept (the
    guideline says whether they are allowed); the same range with two types is two spans."""

    name = "spans"
    key = "spans"

    def canonical(self, value, text: str | None = None) -> str:
        """A list of {start, end, label} (or [start, end, label]), or the stored form; within `text` when given."""
        if value is None:
            raise ValueError("missing spans (an empty list is no spans)")
        if isinstance(value, str) and value.lstrip().startswith("["):  # a list as JSON (a CSV cell, our export)
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("spans are not a readable JSON list") from None
        elif isinstance(value, str):
            value = [part.split(":", 2) for part in value.split(SEPARATOR) if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"spans must be a list of {{start, end, label}}, not {type(value).__name__}")
        spans = {self._span(v, text) for v in value}
        return SEPARATOR.join(span_key(*span) for span in sorted(spans, key=self._order))

    def _order(self, span):
        return span[0], span[1], self.labels.index(span[2])

    def _span(self, value, text: str | None) -> tuple[int, int, str]:
        if isinstance(value, dict):
            value = (value.get("start"), value.get("end"), value.get("label"))
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ValueError(f"a span is {{start, end, label}}, not {value!r}")
        try:
            start, end = int(value[0]), int(value[1])
        except (TypeError, ValueError):
            raise ValueError(f"a span's start and end are character offsets, not {value[0]!r} and {value[1]!r}") from None
        label = str(value[2]).strip() if value[2] is not None else ""
        if label not in self.labels:
            raise ValueError(f"unknown span label {label!r} (labels: {', '.join(sorted(self.labels))})")
        if not 0 <= start < end:
            raise ValueError(f"span {start}:{end} is empty or negative (end is exclusive)")
        if text is not None and end > len(text):
            raise ValueError(f"span {start}:{end} ends past the text ({len(text)} characters)")
        return start, end, label

    spans = staticmethod(stored_spans)

    def exported(self, value: str | None, text: str | None = None):
        """A list of {start, end, label, text} (None: no answer)."""
        if value is None:
            return None
        return [{"start": s, "end": e, "label": label} | ({"text": text[s:e]} if text is not None else {})
                for s, e, label in self.spans(value)]


TASK_TYPES = {t.name: t for t in (SingleLabel, MultiLabel, Spans)}


def task_type(config) -> SingleLabel:
    """The task type of a project's settings (labeler.config.ProjectConfig)."""
    return TASK_TYPES[config.task](config.label_names)
