"""Turning a model's answer into a label, an abstention, and per-label probabilities."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from labeler.tasks import Spans, stored_spans

UNSURE = {"unsure", "unknown", "i don't know", "i do not know", "idk", "not sure", "cannot tell", "can't tell"}
# A label missing from the top-k logprobs gets this share of the smallest one seen.
FLOOR_SHARE = 0.5


@dataclass(frozen=True)
class Parsed:
    label: str | None
    probs: dict[str, float] | None = None  # one label: a distribution; a label set: P(each label applies)
    abstain_reason: str | None = None
    dropped: tuple[str, ...] = ()  # names in a label set's answer that are no label


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


# --- label sets (labeler.tasks.MultiLabel) ------------------------------------------------


def _set_of(names: list[str], labels: list[str]) -> tuple[str, list[str]]:
    """The stored form of the named labels (labeler.tasks), and the names that are no label."""
    known = [match_label(str(n), labels) for n in names]
    chosen = {k for k in known if k is not None}
    return "|".join(label for label in labels if label in chosen), [str(n) for n, k in zip(names, known) if k is None]


def parse_label_set(text: str | None, labels: list[str]) -> Parsed:
    """A chat model's label set: JSON `{"labels": [...]}` (in a code fence or not), a bare JSON list, or
    names separated by commas. Names that are no label are dropped (counted in `dropped`); an answer
    naming only such names, or nothing readable, is an abstention, never a guess. No probabilities: the
    answer's tokens do not give one per label."""
    raw = (text or "").strip()
    if _norm(raw.splitlines()[0] if raw else "") in UNSURE:
        return Parsed(None, abstain_reason="unsure")
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw).strip()
    names = None
    for candidate in (body, *re.findall(r"\{.*\}|\[.*\]", body, re.DOTALL)[:1]):
        try:
            data = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(data, dict) and _norm(str(data.get("labels", ""))) in UNSURE:
            return Parsed(None, abstain_reason="unsure")
        value = data.get("labels") if isinstance(data, dict) else data
        if isinstance(value, list):
            names = value
            break
    if names is None:  # no JSON: names separated by commas on the first line, if every one is a label
        line = body.splitlines()[0] if body else ""
        parts = [p for p in re.split(r"[,;|]", line) if p.strip()]
        if not parts or any(match_label(p, labels) is None for p in parts):
            return Parsed(None, abstain_reason="unparsable")
        names = parts
    label, dropped = _set_of(names, labels)
    if dropped and not label:
        return Parsed(None, abstain_reason="unparsable", dropped=tuple(dropped))
    return Parsed(label, dropped=tuple(dropped))


def yes_probability(text: str | None, top_logprobs: list[dict] | None) -> float:
    """P(yes) of a yes/no answer: from its first token's logprobs where given, else 1 or 0 by its text (0.5
    when it is neither)."""
    probs = label_probs(top_logprobs, ["yes", "no"]) if top_logprobs else None
    if probs:
        return probs["yes"]
    answer = match_label((text or "").split("\n")[0], ["yes", "no"])
    return {"yes": 1.0, "no": 0.0}.get(answer, 0.5)


def read_yes_no(labels: list[str], yes: list[float]) -> Parsed:
    """A label set from one P(yes) per label: the labels at 0.5 or more, with those probabilities."""
    probs = {label: round(float(p), 6) for label, p in zip(labels, yes)}
    return Parsed("|".join(label for label in labels if probs[label] >= 0.5), probs=probs)


# --- spans (labeler.tasks.Spans) ------------------------------------------------------------


def _json_of(raw: str):
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw).strip()
    for candidate in (body, *re.findall(r"\{.*\}|\[.*\]", body, re.DOTALL)[:1]):
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    return None


def _occurrence(text: str, quote: str, n: int) -> int | None:
    """Where the n-th (from 1) appearance of `quote` starts in `text`; None if there are fewer."""
    at = -1
    for _ in range(max(n, 1)):
        at = text.find(quote, at + 1)
        if at < 0:
            return None
    return at


def parse_spans(raw_text: str | None, text: str, labels: list[str]) -> Parsed:
    """A chat model's spans: JSON `{"spans": [{"text", "label", "occurrence"?}]}` (or `start`/`end` offsets),
    each located in the item's text (its first appearance unless `occurrence` names another). A span whose
    text is not there, or whose type is no label, is dropped and counted in `dropped`, never guessed; an
    answer that is not such JSON, or whose spans were all dropped, is an abstention."""
    raw = (raw_text or "").strip()
    if _norm(raw.splitlines()[0] if raw else "") in UNSURE:
        return Parsed(None, abstain_reason="unsure")
    data = _json_of(raw)
    if isinstance(data, dict) and _norm(str(data.get("spans", ""))) in UNSURE:
        return Parsed(None, abstain_reason="unsure")
    value = data.get("spans") if isinstance(data, dict) else data
    if not isinstance(value, list):
        return Parsed(None, abstain_reason="unparsable")
    found, dropped = set(), []
    for span in value:
        located = _locate(span, text, labels)
        if located is None:
            dropped.append(json.dumps(span, ensure_ascii=False)[:200])
        else:
            found.add(located)
    if dropped and not found:
        return Parsed(None, abstain_reason="unparsable", dropped=tuple(dropped))
    return Parsed(Spans(labels).canonical(list(found)), dropped=tuple(dropped))


def _locate(span, text: str, labels: list[str]) -> tuple[int, int, str] | None:
    if not isinstance(span, dict):
        return None
    label = match_label(str(span.get("label", span.get("type", ""))), labels)
    quote = span.get("text")
    if label is None:
        return None
    if isinstance(quote, str) and quote:
        try:
            n = int(span.get("occurrence") or 1)
        except (TypeError, ValueError):
            return None
        start = _occurrence(text, quote, n)
        return None if start is None else (start, start + len(quote), label)
    start, end = span.get("start"), span.get("end")  # offsets alone: taken if they are in the text
    if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text):
        return start, end, label
    return None


def spans_answer(text: str, stored: str, labels: list[str]) -> list[dict]:
    """Stored spans as the prompt asks a model to give them (text, label, occurrence where not the first)."""
    out = []
    for start, end, label in stored_spans(stored):
        quote = text[start:end]
        span = {"text": quote, "label": label}
        n = sum(1 for k in range(start + 1) if text.startswith(quote, k))  # this one is the n-th
        if n > 1:
            span["occurrence"] = n
        out.append(span)
    return out


# --- several sampled answers ---------------------------------------------------------------


def from_samples(parsed: list[Parsed], labels: list[str], sets: bool = False) -> Parsed:
    """A vote from answers sampled at a temperature: each label's share of the answers that gave one (for
    label sets, the share of answers whose set holds it) is its probability; the vote is the most given
    label (ties: the first sampled), or the labels of at least half the sets. All abstaining: an abstention.

    >>> from_samples([Parsed("a"), Parsed("b"), Parsed("a"), Parsed(None, abstain_reason="unsure")], ["a", "b"])
    Parsed(label='a', probs={'a': 0.666667, 'b': 0.333333}, abstain_reason=None, dropped=())
    """
    answered = [p.label for p in parsed if p.label is not None]
    if not answered:
        return Parsed(None, abstain_reason=parsed[0].abstain_reason if parsed else "unparsable")
    if sets:
        share = {label: sum(label in (a.split("|") if a else []) for a in answered) / len(answered) for label in labels}
        probs = {label: round(p, 6) for label, p in share.items()}
        return Parsed("|".join(label for label in labels if share[label] >= 0.5), probs=probs)
    probs = {label: round(answered.count(label) / len(answered), 6) for label in labels}
    return Parsed(max(answered, key=lambda label: (answered.count(label), -answered.index(label))), probs=probs)
