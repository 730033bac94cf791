"""The cascade on label sets (`task: multi_label`): an item's answer is the set of labels that apply.

Each label is a yes/no question. Per label and annotator, a logistic regression from the annotator's
log-odds of yes (its P(yes), or its plain yes or no) to the gold answer says how much its vote moves
the odds (Platt scaling as evidence: a vote that tells nothing, like a model answering at chance, gets
a slope near zero and moves nothing); the votes of an item add up, naive-Bayes fashion, to a posterior
log-odds per label after each stage. The regressions are counted on the calibration gold and
cross-fitted by fold exactly as for one label (routing.project): items of fold f are scored by
regressions that never saw fold f's labels. After a stage an item's answer is the set of labels whose
posterior P(yes) is at least 1/2, and its score is the log-odds that this whole set is right, the labels
taken as independent given the votes: log P(set) = sum over labels of log max(p, 1 - p).

(A confusion matrix per confidence band, as for one label, read P(yes) too coarsely at three bands and
too noisily at eight, and shrinking a band toward everyone's pooled matrix lent an uninformative
annotator the others' skill: on the support example, a chance-level annotator cut the highest
certifiable target from 0.90 to 0.78.)

The level is then chosen on the gold's scores by the same test as for one label (routing.calibration),
"right" meaning the exact set. So the guarantee is on exact-set accuracy: with probability at least
`confidence` over the draw of the gold (or on average, for `guarantee: expected`), at least
`target_accuracy` of the automatically accepted items carry exactly the right set of labels. The
independence only shapes the score; the test does not rest on it. Futility works as for one label: an
item whose set could not reach the level whatever the later stages say (each label moved as far toward
its nearer end as any vote could move it) stops and goes to review.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labeler.tasks import MultiLabel
from routing.cascade import CascadePolicy, Scored
from routing.project import FOLDS, Certified, calibration_gold, fold_of, measured, no_level_reason

SET = "label set"  # the one "label" a policy on sets calibrates: the whole set
CLIP = 9.0  # log-odds of a vote's P(yes) are read within +-CLIP (P(yes) between 1e-4 and 1 - 1e-4)
HARD = 2.0  # the log-odds a plain yes (or, negated, a no) is read as, when a vote gives no probabilities


def log_right(z: np.ndarray) -> np.ndarray:
    """log P(the set is right) from each label's log-odds z (last axis): sum of log sigmoid(|z|)."""
    return -np.logaddexp(0.0, -np.abs(z)).sum(axis=-1)


def log_odds_of(log_p: np.ndarray) -> np.ndarray:
    log_p = np.minimum(log_p, -1e-300)
    return log_p - np.log(-np.expm1(log_p))


@dataclass
class SetPaths(Scored):
    """n items asked stage by stage: `z[i, s, l]`, the log-odds that label l applies after stage s;
    `up[0, s, l]` / `down[0, s, l]`: the most one vote at stage s can raise / lower it (futility)."""

    z: np.ndarray  # (n, S, L)
    active: np.ndarray  # (n, S)
    up: np.ndarray  # (1, S, L)
    down: np.ndarray  # (1, S, L)

    def __post_init__(self):
        self.predicted = ((self.z >= 0) * (1 << np.arange(self.z.shape[2]))).sum(axis=2).astype(np.int64)
        with np.errstate(divide="ignore"):
            self.score = np.where(self.active, log_odds_of(log_right(self.z)), -np.inf)

    def __getitem__(self, rows) -> "SetPaths":
        return SetPaths(self.z[rows], self.active[rows], self.up, self.down)

    def marginals(self, s: int) -> np.ndarray:
        """P(each label applies) after stage s: (n, L)."""
        return 1.0 / (1.0 + np.exp(-self.z[:, s]))

    def futile(self, s: int, lam: float) -> np.ndarray:
        n, S, L = self.z.shape
        if s + 1 >= S or not np.isfinite(lam):
            return np.ones(n, bool)
        z = self.z[:, s][:, None]  # (n, 1, L)
        up = np.cumsum(np.broadcast_to(self.up[:, s + 1:], (n, S - s - 1, L)), axis=1)
        down = np.cumsum(np.broadcast_to(self.down[:, s + 1:], (n, S - s - 1, L)), axis=1)
        farthest = np.maximum(z + up, down - z)  # the largest |z| any later votes could give
        return log_odds_of(log_right(farthest)).max(axis=1) < lam


@dataclass
class Evidence:
    """One fold's reading of votes: per stage and label, evidence = slope * x + offset (x: the vote's
    log-odds of yes), added to the prior log-odds of each label."""

    prior: np.ndarray  # (L,)
    slope: np.ndarray  # (S, L)
    offset: np.ndarray  # (S, L)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The most one vote can raise and lower each label's log-odds, per stage: (S, L) each, >= 0."""
        ends = np.stack([self.slope * -CLIP + self.offset, self.slope * CLIP + self.offset])
        return np.maximum(ends.max(axis=0), 0.0), np.maximum(-ends.min(axis=0), 0.0)


def vote_log_odds(task: MultiLabel, answer: str | None, probs: dict | None, label: str) -> float | None:
    """A vote's log-odds that `label` applies (None: an abstention, which says nothing)."""
    if answer is None:
        return None
    if probs and label in probs:
        return log_odds(probs[label])
    return HARD if label in task.parts(answer) else -HARD


def log_odds(p) -> float:
    """A vote's probability as log-odds, read within +-CLIP."""
    p = min(max(float(p), 1e-4), 1 - 1e-4)
    return float(np.log(p / (1 - p)))


def fit_evidence(x: np.ndarray, voted: np.ndarray, truth: np.ndarray, counted: np.ndarray | None = None) -> Evidence:
    """x, voted: (n, S, L) vote log-odds and whether there is a vote; truth: (n, L) 0/1; `counted`: (n, L),
    the rows each label's prior is counted on (default all)."""
    from sklearn.linear_model import LogisticRegression

    n, S, L = x.shape
    counted = np.ones((n, L), bool) if counted is None else counted
    rate = ((truth * counted).sum(axis=0) + 1.0) / (counted.sum(axis=0) + 2.0)
    prior = np.log(rate / (1 - rate))
    slope, offset = np.zeros((S, L)), np.zeros((S, L))
    for s in range(S):
        for k in range(L):
            rows = voted[:, s, k]
            y = truth[rows, k]
            if rows.sum() >= 10 and 0 < y.sum() < len(y):
                model = LogisticRegression(C=1.0).fit(x[rows, s, k][:, None], y)
                slope[s, k] = model.coef_[0, 0]
                # the regression's own prior is its intercept's share: evidence is what the vote adds to it
                offset[s, k] = model.intercept_[0] - np.log(y.mean() / (1 - y.mean()))
            elif rows.sum() >= 10:  # one outcome only (an annotator never wrong here): counts, not a regression
                slope[s, k], offset[s, k] = _counted(x[rows, s, k], y)
    return Evidence(prior, slope, offset)


def _counted(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """A yes (x > 0) and a no as log-likelihood ratios, add-one smoothed, as slope and offset on x = +-HARD:
    where one outcome never happened a regression has nothing to fit, yet a vote that was always right says
    something (as much as its count and the smoothing allow)."""
    yes, true = x > 0, y == 1

    def ratio(said):
        return np.log((np.sum(said & true) + 1) / (true.sum() + 2)) - np.log((np.sum(said & ~true) + 1) / ((~true).sum() + 2))

    ev_yes, ev_no = ratio(yes), ratio(~yes)
    return float((ev_yes - ev_no) / (2 * HARD)), float((ev_yes + ev_no) / 2)


@dataclass
class SetPolicy(Certified):
    """The fitted cascade on label sets; the interface routing.flow uses of routing.project.ProjectPolicy."""

    method = "cascade:label-evidence+platt"

    stages: list
    label_names: list[str]
    models: list[Evidence] | None = None  # one per fold, counted on the other folds' gold
    policy: CascadePolicy | None = None
    reason: str | None = None
    skills: dict[str, float] = field(default_factory=dict)  # exact-set accuracy on calibration gold
    skill_counts: dict[str, int] = field(default_factory=dict)

    def label_of(self, k: int) -> str:
        return MultiLabel(self.label_names).join(label for b, label in enumerate(self.label_names) if int(k) >> b & 1)

    def label_confidence(self, paths: SetPaths, row: int, s: int) -> dict[str, float]:
        return {label: round(float(p), 6) for label, p in zip(self.label_names, paths.marginals(s)[row])}

    def read_votes(self, votes: dict, items: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, S, L) vote log-odds, whether each is a vote, and (n, S) whether each stage was reached."""
        n, S, L = len(items), len(self.stages), len(self.label_names)
        task = MultiLabel(self.label_names)
        x, voted, active = np.zeros((n, S, L)), np.zeros((n, S, L), bool), np.zeros((n, S), bool)
        for r, i in enumerate(items):
            by_stage = votes.get(i, {})
            for s in range(S):
                if s not in by_stage:
                    break  # not asked yet: the stage is not reached
                active[r, s] = True
                answer, probs = by_stage[s]
                for k, label in enumerate(self.label_names):
                    value = vote_log_odds(task, answer, probs, label)
                    if value is not None:
                        x[r, s, k], voted[r, s, k] = value, True
        return x, voted, active

    def paths(self, votes: dict, items: list[int]) -> SetPaths:
        """Each item scored by its fold's evidence (routing.project.fold_of)."""
        x, voted, active = self.read_votes(votes, items)
        folds = np.array([fold_of(i) for i in items], dtype=np.int64)
        S, L = len(self.stages), len(self.label_names)
        z = np.zeros(x.shape)
        for f, ev in enumerate(self.models):
            rows = folds == f
            steps = np.where(voted[rows], ev.slope * np.clip(x[rows], -CLIP, CLIP) + ev.offset, 0.0)
            z[rows] = ev.prior + np.cumsum(steps, axis=1)
        bounds = [ev.bounds() for ev in self.models]
        up = np.max([b[0] for b in bounds], axis=0).reshape(1, S, L)
        down = np.max([b[1] for b in bounds], axis=0).reshape(1, S, L)
        return SetPaths(z, active, up, down)


def fit(stages: list, labels: list[str], votes: dict, gold: dict, routing, correct: bool = True) -> SetPolicy:
    """routing.project.fit for label sets (`gold`: item -> (label set, split)). `correct` is for one label's
    per-label corrections, which a yes/no question does not need."""
    gold, calib = calibration_gold(gold, votes, len(stages))
    result = SetPolicy(stages, list(labels))
    if not measured(result, votes, gold, calib):
        return result
    task = MultiLabel(labels)
    truth = np.array([[int(label in task.parts(gold[i][0])) for label in labels] for i in calib])
    x, voted, _ = result.read_votes(votes, calib)
    folds = np.array([fold_of(i) for i in calib])
    result.models = []
    for f in range(FOLDS):
        train = folds != f if (folds != f).any() else np.ones(len(calib), bool)  # a fold that is all the gold
        result.models.append(fit_evidence(x[train], voted[train], truth[train]))
    bits = (truth * (1 << np.arange(len(labels)))).sum(axis=1)
    result.policy = CascadePolicy([SET], routing.target_accuracy, routing.confidence, routing.guarantee).fit(
        result.paths(votes, calib), bits)
    if not result.ready:
        result.reason = no_level_reason(routing)
    return result
