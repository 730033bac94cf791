"""The `model` annotator of a spans project: a linear-chain CRF (sklearn-crfsuite) over tokens.

Trained, like the classifier (labeler.annotators.classifier), on gold (not honeypots) and confirmed
spans, with the same versioning by training labels and the same cross-fitting: items it was trained
on get the spans of a model that never saw them. Tokens are words and single punctuation marks; tags
are BIO per type, so its own spans never overlap (a gold span that overlaps an earlier one is left out
of its training). A span's probability is the least of its tokens' marginal probabilities of their tags; with its spans
it gives the probability that no other token is in one (labeler.tasks.NOTHING_ELSE).
"""

from __future__ import annotations

import re

import numpy as np

from labeler.annotators.classifier import FOLDS, choose_training, item_text
from labeler.annotators.runner import Answer, ItemRef
from labeler.config import ModelAnnotator
from labeler.store.workspace import Workspace
from labeler.tasks import NOTHING_ELSE, span_key

TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in TOKEN.finditer(text)]


def _shape(word: str) -> str:
    return re.sub(r"(.)\1+", r"\1", re.sub(r"[A-Z]", "X", re.sub(r"[a-z]", "x", re.sub(r"\d", "d", word))))


def features(text: str, spans: list[tuple[int, int]]) -> list[dict]:
    words = [text[s:e] for s, e in spans]
    out = []
    for k, w in enumerate(words):
        f = {"bias": 1.0, "lower": w.lower(), "suffix3": w[-3:].lower(), "prefix2": w[:2].lower(), "shape": _shape(w),
             "title": w.istitle(), "upper": w.isupper(), "digit": w.isdigit(), "first": k == 0}
        for d in (-2, -1, 1, 2):
            j = k + d
            if 0 <= j < len(words):
                f[f"{d}:lower"], f[f"{d}:title"] = words[j].lower(), words[j].istitle()
            else:
                f[f"{d}:edge"] = True
        out.append(f)
    return out


def bio(text: str, spans: list[tuple[int, int, str]]) -> list[str]:
    """A BIO tag per token for the spans (a token is in a span when they overlap; overlapping spans: the first)."""
    toks = tokens(text)
    tags = ["O"] * len(toks)
    for start, end, label in sorted(spans):
        inside = [k for k, (s, e) in enumerate(toks) if s < end and e > start]
        if not inside or any(tags[k] != "O" for k in inside):
            continue
        tags[inside[0]] = f"B-{label}"
        for k in inside[1:]:
            tags[k] = f"I-{label}"
    return tags


def decode(toks: list[tuple[int, int]], tags: list[str], marginals: list[dict] | None = None):
    """Spans (start, end, label, probability) from BIO tags; an I- without its B- starts a span too."""
    out, current = [], None
    for k, tag in enumerate(tags + ["O"]):
        p = marginals[k].get(tag, 0.0) if marginals and k < len(tags) else 1.0
        kind, _, label = tag.partition("-")
        if current and (kind != "I" or label != current[2]):
            out.append(tuple(current))
            current = None
        if kind == "B" or (kind == "I" and current is None):
            current = [toks[k][0], toks[k][1], label, p]
        elif kind == "I":
            current[1], current[3] = toks[k][1], min(current[3], p)
    return out


class TaggerAsker:
    """Trains at construction; answers from the fitted CRF (no calls, no cost)."""

    max_concurrency = 64

    def __init__(self, config: ModelAnnotator, annotator_id: int, ws: Workspace):
        self.name, self.annotator_id = config.name, annotator_id
        self.fields, self.task = ws.config.fields, ws.task
        self.train = choose_training(ws, config.name, config.retrain_every)
        with_spans = sum(1 for label in self.train.labels if label)
        self.ready = len(self.train.labels) >= config.min_labels and with_spans > 0
        self.reason = None if self.ready else (
            f"needs {config.min_labels} labelled items, some with spans, to train; has {len(self.train.labels)} "
            f"({with_spans} with spans)")
        self.choice = {"features": "crf"}
        self.version = self.train.fingerprint("crf")
        self.out_of_fold: dict[int, tuple] = {}
        if self.ready:
            x = [features(t, tokens(t)) for t in self.train.texts]
            y = [bio(t, self.task.spans(label)) for t, label in zip(self.train.texts, self.train.labels)]
            self.model = self._fit(x, y)
            self._cross_fit(x, y)

    @staticmethod
    def _fit(x, y):
        import sklearn_crfsuite

        return sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.05, c2=0.05, max_iterations=100,
                                    all_possible_transitions=True).fit(x, y)

    def _cross_fit(self, x, y) -> None:
        from sklearn.model_selection import KFold

        if len(x) < FOLDS:
            return  # too few to hold any out: trained items get the full model's spans
        for fit_idx, held_idx in KFold(FOLDS, shuffle=True, random_state=0).split(np.zeros(len(x))):
            model = self._fit([x[i] for i in fit_idx], [y[i] for i in fit_idx])
            for i in held_idx:
                self.out_of_fold[self.train.item_ids[i]] = self._spans(model, self.train.texts[i], x[i])

    @staticmethod
    def _spans(model, text: str, x: list[dict]) -> tuple[list, float]:
        """Its spans with their probabilities, and the probability that no other token is in a span."""
        if not x:
            return [], 1.0
        tags, marginals = model.predict_single(x), model.predict_marginals_single(x)
        outside = [m.get("O", 0.0) for tag, m in zip(tags, marginals) if tag == "O"]
        return decode(tokens(text), tags, marginals), float(np.prod(outside))

    def prefetch(self, items: list[ItemRef]) -> None:
        return None

    async def ask(self, item: ItemRef) -> Answer:
        found = self.out_of_fold.get(item.id)
        if found is None:
            text = item_text(item.fields, self.fields)
            found = self._spans(self.model, text, features(text, tokens(text)))
        spans, nothing_else = found
        label = self.task.canonical([(s, e, label) for s, e, label, _ in spans])
        probs = {span_key(s, e, label): round(float(p), 6) for s, e, label, p in spans}
        return Answer(label=label, probs=probs | {NOTHING_ELSE: round(nothing_else, 6)}, cost=0.0)
