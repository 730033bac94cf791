"""The cascade on spans (`task: spans`): an item's answer is the set of typed spans in its text.

The votes of an item propose candidate spans (matched by exact offsets and type); each candidate is a
yes/no question, as a label is for label sets (routing.label_sets), read with the evidence of its type:
per stage and type, a logistic regression from the vote's log-odds that the candidate is a span (its
own probability for it, else a plain yes when it proposed it, a no when it answered without it) to
whether the gold has it. A candidate exists from the stage that first proposed it: so an item's score
after stage s depends on the votes up to s only, on gold as on new items. The item's answer is the
candidates whose posterior P(span) is at least 1/2, its score the log-odds that this whole set is
right, and the level is chosen on gold by the same test as for one label, "right" meaning the exact
set of spans (a gold span no vote proposed makes the item wrong at every stage). So the guarantee is
on accepted items: at least `target_accuracy` of them carry exactly the gold's spans, with probability
at least `confidence` over the draw of the gold (on average, for `guarantee: expected`); precision and
recall of their spans are then at least as high.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labeler.tasks import NOTHING_ELSE, Spans
from routing.cascade import CascadePolicy
from routing.label_sets import (
    CLIP,
    HARD,
    SET,
    Evidence,
    SetPaths,
    fit_evidence,
    log_odds,
    log_odds_of,
    log_right,
)
from routing.project import FOLDS, Certified, calibration_gold, fold_of, measured, no_level_reason

MAX_CANDIDATES = 60  # per item (an answer is a bit mask of them); the most proposed are kept
ABSENT = -90.0  # the log-odds of a slot no vote has proposed (yet): not in the answer, no weight on the score


@dataclass
class SpanPaths(SetPaths):
    """SetPaths whose labels are each item's own candidates (`candidates[i]`, stored forms); `up` and
    `down` are per candidate (their type's), zero on empty slots."""

    candidates: list = field(default_factory=list)
    rest: np.ndarray | None = None  # (n, S): the log-odds that the gold holds no span beyond the candidates

    def __post_init__(self):
        super().__post_init__()
        with np.errstate(divide="ignore"):  # the set is right if its candidates are and nothing was missed
            right = log_right(self.z) - np.logaddexp(0.0, -self.rest)
            self.score = np.where(self.active, log_odds_of(right), -np.inf)

    def __getitem__(self, rows) -> "SpanPaths":
        index = np.arange(len(self.z))[rows]
        return SpanPaths(self.z[rows], self.active[rows], self.up[rows], self.down[rows],
                         [self.candidates[i] for i in np.atleast_1d(index)], self.rest[rows])


def _candidates(task: Spans, by_stage: dict) -> list[str]:
    counts: dict[str, int] = {}
    for answer, _ in by_stage.values():
        for part in task.parts(answer):
            counts[part] = counts.get(part, 0) + 1
    kept = sorted(counts, key=lambda c: -counts[c])[:MAX_CANDIDATES]
    return sorted(kept)


@dataclass
class Completeness:
    """Per stage, the log-odds that the gold holds no span beyond the candidates proposed by then: a logistic
    regression on the stage's vote's own claim (its P(nothing else), else a plain claim), counted on whether
    the gold's spans were all among the candidates after that stage; the stage's rate of that, add-one
    smoothed, where the claim does not vary or one outcome never happened."""

    slope: np.ndarray  # (S,)
    intercept: np.ndarray  # (S,)

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        return self.slope * np.clip(x, -CLIP, CLIP) + self.intercept

    @classmethod
    def fit(cls, x: np.ndarray, complete: np.ndarray) -> "Completeness":
        from sklearn.linear_model import LogisticRegression

        n, S = complete.shape
        slope, intercept = np.zeros(S), np.zeros(S)
        for s in range(S):
            y = complete[:, s]
            intercept[s] = np.log((y.sum() + 1.0) / (n - y.sum() + 1.0))
            if n >= 10 and 0 < y.sum() < n and np.ptp(x[:, s]) > 0:
                model = LogisticRegression(C=1.0).fit(x[:, s][:, None], y)
                slope[s], intercept[s] = model.coef_[0, 0], model.intercept_[0]
        return cls(slope, intercept)


@dataclass
class SpanPolicy(Certified):
    """The fitted cascade on spans; the interface routing.flow uses of routing.project.ProjectPolicy."""

    method = "cascade:span-evidence+platt"

    stages: list
    label_names: list[str]  # the span types
    models: list[Evidence] | None = None  # one per fold; its "labels" are the types
    rest_models: list[Completeness] | None = None  # per fold: whether anything was missed
    policy: CascadePolicy | None = None
    reason: str | None = None
    skills: dict[str, float] = field(default_factory=dict)  # exact-spans accuracy on calibration gold
    skill_counts: dict[str, int] = field(default_factory=dict)

    @property
    def task(self) -> Spans:
        return Spans(self.label_names)

    def answer(self, paths: SpanPaths, row: int, s: int) -> str:
        return self.task.canonical("|".join(c for c, z in zip(paths.candidates[row], paths.z[row, s]) if z >= 0))

    def label_confidence(self, paths: SpanPaths, row: int, s: int) -> dict[str, float]:
        """P(span) of each candidate proposed by stage s."""
        return {c: round(float(1 / (1 + np.exp(-z))), 6) for c, z in zip(paths.candidates[row], paths.z[row, s])
                if z > ABSENT}

    def read_votes(self, votes: dict, items: list[int]):
        """Per item its candidates, and (n, S, C) vote log-odds, whether each is a vote, whether the candidate
        was proposed by then; (n, C) each candidate's type; (n, S) whether each stage was reached, and each
        vote's log-odds that the text holds no span beyond its own (0 where there is no vote)."""
        task, n, S = self.task, len(items), len(self.stages)
        candidates = [_candidates(task, votes.get(i, {})) for i in items]
        C = max([len(c) for c in candidates] + [1])
        x, voted, proposed = np.zeros((n, S, C)), np.zeros((n, S, C), bool), np.zeros((n, S, C), bool)
        rest = np.zeros((n, S))  # each vote's log-odds that nothing is missing beyond its spans (0: no vote)
        types, active = np.zeros((n, C), np.int64), np.zeros((n, S), bool)
        for r, i in enumerate(items):
            by_stage = votes.get(i, {})
            for c, key in enumerate(candidates[r]):
                types[r, c] = self.label_names.index(key.rsplit(":", 1)[1])
            for s in range(S):
                if s not in by_stage:
                    break  # not asked yet: the stage is not reached
                active[r, s] = True
                answer, probs = by_stage[s]
                if answer is None:
                    continue  # an abstention says nothing of any candidate
                parts = set(task.parts(answer))
                rest[r, s] = log_odds(probs[NOTHING_ELSE]) if probs and NOTHING_ELSE in probs else HARD
                for c, key in enumerate(candidates[r]):
                    if probs and key in probs:
                        x[r, s, c] = log_odds(probs[key])
                    else:
                        x[r, s, c] = HARD if key in parts else -HARD
                    voted[r, s, c] = True
                    proposed[r, s, c] = key in parts
        slots = np.arange(C)[None, :] < np.array([len(c) for c in candidates])[:, None]
        exists = (np.cumsum(proposed, axis=1) > 0) & slots[:, None, :]
        return candidates, x, voted, exists, types, active, rest

    def paths(self, votes: dict, items: list[int]) -> SpanPaths:
        """Each item scored by its fold's evidence (routing.project.fold_of)."""
        candidates, x, voted, exists, types, active, rest_x = self.read_votes(votes, items)
        folds = np.array([fold_of(i) for i in items], dtype=np.int64)
        z, up, down, rest = np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape[:2])
        bounds = [ev.bounds() for ev in self.models]
        most_up = np.max([b[0] for b in bounds], axis=0)  # (S, T)
        most_down = np.max([b[1] for b in bounds], axis=0)
        for f, ev in enumerate(self.models):
            rows = folds == f
            t = types[rows]  # (r, C)
            slope, offset = np.moveaxis(ev.slope[:, t], 0, 1), np.moveaxis(ev.offset[:, t], 0, 1)  # (r, S, C)
            steps = np.where(voted[rows], slope * np.clip(x[rows], -CLIP, CLIP) + offset, 0.0)
            z[rows] = ev.prior[t][:, None, :] + np.cumsum(steps, axis=1)
            rest[rows] = self.rest_models[f].log_odds(rest_x[rows])
        up[:] = np.moveaxis(most_up[:, types], 0, 1)
        down[:] = np.moveaxis(most_down[:, types], 0, 1)
        z = np.where(exists, z, ABSENT)
        slots = exists[:, -1:, :] if x.shape[1] else exists
        up, down = np.where(slots, up, 0.0), np.where(slots, down, 0.0)
        return SpanPaths(z, active, up, down, candidates, rest)


def truth_bits(candidates: list[str], gold: str, task: Spans) -> int:
    """The gold spans as a mask of the item's candidates; -1 when the gold holds one no vote proposed."""
    wanted = set(task.parts(gold))
    if not wanted <= set(candidates):
        return -1
    return sum(1 << c for c, key in enumerate(candidates) if key in wanted)


def fit(stages: list, labels: list[str], votes: dict, gold: dict, routing, correct: bool = True) -> SpanPolicy:
    """routing.project.fit for spans (`gold`: item -> (spans, split)); `correct` is unused, as for label sets."""
    gold, calib = calibration_gold(gold, votes, len(stages))
    result = SpanPolicy(stages, list(labels))
    if not measured(result, votes, gold, calib):
        return result
    task = result.task
    candidates, x, voted, exists, types, _, rest_x = result.read_votes(votes, calib)
    # one row per (item, candidate), its evidence in its type's column: the regressions of label sets
    n, S, C = x.shape
    T = len(labels)
    rows = exists[:, -1, :]  # (n, C)
    item_of, slot = np.nonzero(rows)
    onehot = np.eye(T, dtype=bool)[types[item_of, slot]]  # (N, T)
    xs = np.where(onehot[:, None, :], x[item_of, :, slot][:, :, None], 0.0)
    vs = voted[item_of, :, slot][:, :, None] & onehot[:, None, :]
    truth = np.array([[int(candidates[i][c] in task.parts(gold[calib[i]][0]))] for i, c in zip(item_of, slot)])
    truth = truth * onehot if len(truth) else np.zeros((0, T))
    folds = np.array([fold_of(calib[i]) for i in item_of], dtype=np.int64)
    complete = np.array([[set(task.parts(gold[i][0])) <= {c for c, e in zip(candidates[r], exists[r, s]) if e}
                          for s in range(S)] for r, i in enumerate(calib)], dtype=int).reshape(n, S)
    item_folds = np.array([fold_of(i) for i in calib], dtype=np.int64)
    result.models, result.rest_models = [], []
    for f in range(FOLDS):
        train = folds != f if (folds != f).any() else np.ones(len(folds), bool)
        result.models.append(fit_evidence(xs[train], vs[train], truth[train], onehot[train]))
        train = item_folds != f if (item_folds != f).any() else np.ones(len(calib), bool)
        result.rest_models.append(Completeness.fit(rest_x[train], complete[train]))
    bits = np.array([truth_bits(candidates[r], gold[i][0], task) for r, i in enumerate(calib)])
    result.policy = CascadePolicy([SET], routing.target_accuracy, routing.confidence, routing.guarantee).fit(
        result.paths(votes, calib), bits)
    if not result.ready:
        result.reason = no_level_reason(routing)
    return result
