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


def parse_answer(text: str | None, labels: list[str], top_logprobs: list[dict] | None = None,
                 leaning: dict[str, float] | None = None) -> Parsed:
    """An answer naming one label is a vote; "unsure" or anything unmatched is an abstention.

    `leaning`: the model's probabilities on content-free items (see CompiledPrompt.context_items);
    the answer's probabilities are divided by them, and the vote is the label that comes first then."""
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
    probs = label_probs(top_logprobs, labels) if top_logprobs else None
    if probs and leaning:  # a base model read by its probabilities: the label they favour once its leaning is out
        probs = divide(probs, leaning)
        return Parsed(max(probs, key=probs.get), probs=probs)
    if label is None:  # an abstention; the probabilities, if any, still say where the model leans
        return Parsed(None, probs=probs, abstain_reason="unparsable")
    return Parsed(label, probs=probs)


def divide(probs: dict[str, float], leaning: dict[str, float]) -> dict[str, float]:
    """Probabilities with a leaning taken out (p / leaning, renormalised)."""
    raw = {label: p / max(leaning.get(label, 1.0), 1e-9) for label, p in probs.items()}
    total = sum(raw.values())
    return {label: round(p / total, 6) for label, p in raw.items()}


def mean_leaning(answers: list[dict[str, float]]) -> dict[str, float] | None:
    """The geometric mean of several answers' probabilities, renormalised: a model's leaning."""
    answers = [a for a in answers if a]
    if not answers:
        return None
    logs = {label: sum(math.log(max(a[label], 1e-12)) for a in answers) / len(answers) for label in answers[0]}
    total = sum(math.exp(v) for v in logs.values())
    return {label: math.exp(v) / total for label, v in logs.items()}


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
