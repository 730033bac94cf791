"""Turning a model's answer into a label, an abstention, and per-label probabilities."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

UNSURE = {"unsure", "unknown", "i don't know", "i do not know", "idk", "not sure", "cannot tell", "can't tell"}
# A label missing from the top-k logprobs gets this share of the smallest one seen.
FLOOR_SHARE = 0.5


@dataclass(frozen=True)
class Parsed:
    label: str | None
    probs: dict[str, float] | None = None
    abstain_reason: str | None = None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip("\"'`*.,:;!()[]{}").strip().lower()


def match_label(answer: str, labels: list[str]) -> str | None:
    """Lenient: case and spaces ignored; a label's unambiguous prefix, or an answer starting with a label."""
    a = _norm(answer)
    if not a:
        return None
    normed = {label: _norm(label) for label in labels}
    exact = [label for label, n in normed.items() if n == a]
    if exact:
        return exact[0]
    candidates = [label for label, n in normed.items() if n.startswith(a)]
    if len(candidates) == 1:
        return candidates[0]
    # "positive sentiment", "negative." -> the longest label that starts the answer at a word boundary
    starts = [label for label, n in normed.items() if re.match(re.escape(n) + r"\b", a)]
    if starts:
        return max(starts, key=lambda label: len(normed[label]))
    return None


def parse_answer(text: str | None, labels: list[str], top_logprobs: list[dict] | None = None) -> Parsed:
    """An answer naming one label is a vote; "unsure" or anything unmatched is an abstention."""
    raw = (text or "").strip()
    answer = raw
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
            if isinstance(data, dict):
                answer = str(data.get("label", ""))
        except json.JSONDecodeError:
            pass
    first_line = answer.splitlines()[0] if answer else ""
    if _norm(first_line) in UNSURE:
        return Parsed(None, abstain_reason="unsure")
    label = match_label(first_line, labels)
    if label is None:
        return Parsed(None, abstain_reason="unparsable")
    probs = label_probs(top_logprobs, labels) if top_logprobs else None
    return Parsed(label, probs=probs)


def label_probs(top_logprobs: list[dict], labels: list[str]) -> dict[str, float] | None:
    """Per-label probabilities from the first answer token's top-k logprobs.

    Case and space variants of a token are merged; a token counts for the one label it is a
    prefix of; labels outside the top-k get a floor; the result is renormalised over the labels."""
    mass = dict.fromkeys(labels, 0.0)
    for entry in top_logprobs:
        token = _norm(str(entry.get("token", "")))
        if not token:
            continue
        matches = [label for label in labels if _norm(label).startswith(token)]
        if len(matches) == 1:
            mass[matches[0]] += math.exp(float(entry["logprob"]))
    seen = [p for p in mass.values() if p > 0]
    if not seen:
        return None
    floor = min(seen) * FLOOR_SHARE
    if len(seen) < len(labels):
        smallest = min(math.exp(float(e["logprob"])) for e in top_logprobs)
        floor = min(floor, smallest * FLOOR_SHARE)
    mass = {label: (p if p > 0 else floor) for label, p in mass.items()}
    total = sum(mass.values())
    return {label: round(p / total, 6) for label, p in mass.items()}
