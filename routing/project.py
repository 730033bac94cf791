"""The cascade on a project: a worker model and policy from calibration gold, honeypot checks. Pure:
what it needs from the store comes in as arguments (routing.store reads it; routing.flow runs it).

Stages are the project's annotators, cheapest first. An annotator's votes are split into
confidence bands (terciles of its top probability on gold) and each band is its own worker in
the confusion model, so a confident vote counts for more than a hesitant one.

The worker model is cross-fitted: every item has a fold (a hash of its id, the same rule for
gold and new items), and the items of fold f are scored by a model counted on the calibration
gold of the other folds. So every calibration item's score comes from a model that never saw
its label, and all of the calibration gold tests the acceptance level; a new item is scored
exactly as a calibration item of its fold was, which is what makes the test speak for it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binomtest

from labeler.store import models
from routing.cascade import CascadePolicy, ConfusionModel, Paths, build_paths

MIN_CALIBRATION = 20  # fewer calibration gold items than this: no policy, everything is reviewed
THIN_SUPPORT = 100  # an accepted region resting on fewer gold items than this is said to be thin
HONEYPOT_ALPHA = 0.05  # significance of a "bad day"
FOLDS = 5


def fold_of(item_id: int) -> int:
    """The item's fold: a fixed hash of its id (Knuth's multiplicative), for gold and new items alike."""
    return (int(item_id) * 2654435761 % 2**32) % FOLDS


@dataclass
class Stage:
    name: str
    annotator_id: int
    version: str


class Certified:
    """What a fitted policy says of itself, whatever the task type: needs `stages`, `policy` (a
    CascadePolicy or None), `reason` and `skills`."""

    @property
    def ready(self) -> bool:
        return self.policy is not None and np.isfinite(self.policy.lambda_)

    def certificate(self) -> dict | None:
        """What the automatic labels rest on: the guarantee, and the gold items the accepted region holds."""
        if self.policy is None:
            return None
        accepted, wrong = self.policy.support_
        certificate = {"guarantee": self.policy.guarantee, "target_accuracy": self.policy.target,
                       "confidence": round(1 - self.policy.delta, 6) if self.policy.guarantee == "high_probability" else None,
                       "calibration_items": self.policy.n_test_, "level": self.policy.level,
                       "gold_accepted": accepted, "gold_accepted_wrong": wrong, "warning": None}
        if self.ready and accepted < THIN_SUPPORT:
            certificate["warning"] = (f"the automatic labels rest on {accepted} gold items ({wrong} wrong): a level "
                                      "certified on so few is often a lucky draw of the gold; more calibration gold "
                                      "would make it firm")
        return certificate

    def answer(self, paths, row: int, s: int) -> str:
        """The stored form of item `row`'s answer after stage s (a label, a set, spans)."""
        return self.label_of(int(paths.predicted[row, s]))

    def summary(self) -> dict:
        data = {"stages": [s.name for s in self.stages], "calibrated_accuracy": self.skills, "reason": self.reason}
        if self.policy is not None and not self.ready:  # what would pass instead
            from routing.plan import max_target

            paths, truth = self.policy.gold_
            data["max_target"] = max_target(paths, truth, self.policy.label_names, 1 - self.policy.delta,
                                            self.policy.guarantee)
        if self.policy is not None:
            data |= {
                "lambda": self.policy.level,
                "accuracy_bound": self.policy.bound_,
                "target_accuracy": self.policy.target,
                "confidence": 1 - self.policy.delta,
                "guarantee": self.policy.guarantee,
                "certificate": self.certificate(),
                "thresholds": {s.name: self.policy.thresholds(i) for i, s in enumerate(self.stages)} if self.ready else {},
            }
        return data


def no_level_reason(routing) -> str:
    if routing.guarantee == "high_probability":
        return f"no confidence level reaches accuracy {routing.target_accuracy} with probability {routing.confidence} on this gold"
    return f"no confidence level reaches accuracy {routing.target_accuracy} in expectation on this gold"


@dataclass
class ProjectPolicy(Certified):
    method = "cascade:confusion+platt"  # what decisions record as their method
    stages: list[Stage]
    label_names: list[str]
    bands: dict[str, list[float]]  # annotator -> band edges on its top probability
    models: list[ConfusionModel] | None = None  # one per fold, each counted on the other folds' gold
    policy: CascadePolicy | None = None
    reason: str | None = None  # why there is no policy
    skills: dict[str, float] = field(default_factory=dict)  # accuracy on calibration gold
    skill_counts: dict[str, int] = field(default_factory=dict)  # ... over this many items
    # Per-label corrections of annotators' probabilities, by the folds whose gold they never saw.
    corrections: dict[frozenset, dict[int, object]] = field(default_factory=dict)

    def worker(self, name: str, probs: dict | None) -> str:
        edges = self.bands.get(name)
        if not probs or not edges:
            return name
        return f"{name}|{int(np.searchsorted(edges, max(probs.values()), side='right'))}"

    def stage_workers(self) -> list[list[str]]:
        """Who may vote at each stage: the annotator, or each of its confidence bands."""
        return [[s.name] + [f"{s.name}|{b}" for b in range(len(self.bands.get(s.name, [])) + 1)] for s in self.stages]

    def paths(self, votes: dict, item_ids: list[int]) -> Paths:
        """Paths for these items from their votes so far (stages not yet asked are not reached)."""
        return cross_fitted(self, votes, item_ids)

    def label_of(self, k: int) -> str:
        return self.label_names[int(k)]

    def label_confidence(self, paths: Paths, row: int, s: int) -> None:
        return None  # one label: its confidence is the decision's


def ordered_votes(policy: ProjectPolicy, votes: dict, item_ids: list[int], upto: int) -> dict:
    """Per item, its votes by stage as (worker, label index) or None (abstained), up to a stage."""
    index = {name: k for k, name in enumerate(policy.label_names)}
    ordered = {}
    for item_id in item_ids:
        by_stage = votes.get(item_id, {})
        row = []
        for s in range(upto + 1):
            if s not in by_stage:
                break  # not asked yet: the stage is not reached
            label, probs = by_stage[s]
            row.append((policy.worker(policy.stages[s].name, probs), index[label]) if label in index else None)
        ordered[item_id] = row
    return ordered


MIN_CORRECTION = 50  # calibration gold items with probabilities a stage needs for its votes to be corrected


def fit_corrections(policy: ProjectPolicy, votes: dict, gold_idx: dict[int, int]) -> None:
    """Where an annotator gives probabilities over three or more labels, a multinomial logistic regression
    from its log-probabilities to the gold label, for each set of folds left out: one fold (new items and
    the gold of that fold, scored by that fold's model) and two (the gold the other folds' models are
    counted on). So every corrected vote comes from a correction that never saw its item's label, and a
    base model's leaning toward some labels is read out of its probabilities, not just its first answer."""
    from sklearn.linear_model import LogisticRegression

    K = len(policy.label_names)
    if K < 3:
        return
    for s in range(len(policy.stages)):
        rows = [(i, v[s][1]) for i, v in votes.items() if i in gold_idx and s in v and v[s][0] is not None
                and v[s][1] and all(label in v[s][1] for label in policy.label_names)]
        if len(rows) < MIN_CORRECTION:
            continue
        x = _log_probs(policy, [p for _, p in rows])
        y, folds = np.array([gold_idx[i] for i, _ in rows]), np.array([fold_of(i) for i, _ in rows])
        for left_out in [frozenset({f}) for f in range(FOLDS)] + \
                [frozenset({f, g}) for f in range(FOLDS) for g in range(f + 1, FOLDS)]:
            train = ~np.isin(folds, list(left_out))
            if train.sum() >= MIN_CORRECTION and len(set(y[train])) >= 2:
                policy.corrections.setdefault(left_out, {})[s] = LogisticRegression(max_iter=2000).fit(x[train], y[train])


def _log_probs(policy: ProjectPolicy, probs: list[dict]) -> np.ndarray:
    return np.log(np.clip([[p.get(label, 0.0) for label in policy.label_names] for p in probs], 1e-9, None))


def corrected(policy: ProjectPolicy, votes: dict, items: list[int], left_out) -> dict:
    """The items' votes with each correctable stage's label and probabilities read through the correction
    that left out `left_out(item)`'s folds (votes elsewhere as they are)."""
    if not policy.corrections:
        return votes
    out = {i: dict(votes.get(i, {})) for i in items}
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in items:
        for s, (label, probs) in out[i].items():
            if label is not None and probs:
                groups[(left_out(i), s)].append(i)
    for (key, s), members in groups.items():
        model = policy.corrections.get(key, {}).get(s)
        if model is None:
            continue
        p = model.predict_proba(_log_probs(policy, [out[i][s][1] for i in members]))
        for row, i in zip(p, members):
            probs = {policy.label_names[int(c)]: float(q) for c, q in zip(model.classes_, row)}
            out[i][s] = (max(probs, key=probs.get), probs)
    return out


def measure_skills(result, votes: dict, gold: dict, calib: list[int]) -> None:
    """Each stage's accuracy on the calibration gold it voted on (an exact set, for label sets), and over how many."""
    for s, stage in enumerate(result.stages):
        voted = [i for i in calib if votes[i][s][0] is not None]
        if voted:
            result.skills[stage.name] = round(sum(votes[i][s][0] == gold[i][0] for i in voted) / len(voted), 4)
            result.skill_counts[stage.name] = len(voted)


def calibration_gold(gold: dict, votes: dict, n_stages: int) -> tuple[dict, list[int]]:
    """The calibration gold (item -> (answer, split)), and its items every stage voted on, in order."""
    gold = {i: g for i, g in gold.items() if g[1] == models.Split.calibration}
    return gold, sorted(i for i in gold if len(votes.get(i, {})) == n_stages)


def measured(result, votes: dict, gold: dict, calib: list[int]) -> bool:
    """Each stage's skill on the calibration gold, and whether there is enough of it to fit on (else the reason
    why not, in `result.reason`)."""
    measure_skills(result, votes, gold, calib)
    result.reason = unmeasurable(result.stages, calib)
    return result.reason is None


def unmeasurable(stages: list, calib: list[int]) -> str | None:
    """Why no policy can be fitted (no annotators, too little voted gold); None when one can."""
    if not stages:
        return "no annotators to ask"
    if len(calib) < MIN_CALIBRATION:
        return f"{len(calib)} calibration gold items voted by every annotator; at least {MIN_CALIBRATION} are needed"
    return None


def fit(stages: list[Stage], labels: list[str], votes: dict, gold: dict, routing, correct: bool = True) -> ProjectPolicy:
    """The worker model and the policy from the calibration gold's votes (`votes`: routing.store.load_votes;
    `gold`: item -> (label, split), routing.store.gold_of; `routing`: the project's routing settings).
    `correct`: False reads votes as they are, without the per-label corrections (bench/local_cascade.py
    measures what they buy)."""
    gold, calib = calibration_gold(gold, votes, len(stages))
    result = ProjectPolicy(stages, labels, bands={})
    if correct:
        fit_corrections(result, {i: votes[i] for i in calib}, {i: labels.index(gold[i][0]) for i in calib})
    seen = corrected(result, votes, list(votes), lambda i: frozenset({fold_of(i)}))  # each out of its fold
    for s, stage in enumerate(stages):
        top = [max(v[s][1].values()) for v in seen.values() if s in v and v[s][0] is not None and v[s][1]]
        result.bands[stage.name] = list(np.quantile(top, [1 / 3, 2 / 3])) if len(top) >= 30 else []
    if not measured(result, votes, gold, calib):
        return result
    target, confidence, guarantee = routing.target_accuracy, routing.confidence, routing.guarantee
    gold_idx = {i: labels.index(gold[i][0]) for i in calib}
    result.models = []
    for f in range(FOLDS):
        train = [i for i in calib if fold_of(i) != f] or calib  # a fold that is all the gold: no better choice
        # The gold this fold's model is counted on, its votes corrected without their own fold's labels either.
        ordered = ordered_votes(result, corrected(result, votes, train, lambda i: frozenset({f, fold_of(i)})), train,
                                len(stages) - 1)
        pairs = [(v[0], v[1], gold_idx[i]) for i in train for v in ordered[i] if v is not None]
        result.models.append(ConfusionModel(len(labels)).fit(
            [w for w, _, _ in pairs], np.array([o for _, o, _ in pairs], np.int64),
            np.array([g for _, _, g in pairs], np.int64)))
    paths = cross_fitted(result, votes, calib)
    result.policy = CascadePolicy(labels, target, confidence, guarantee).fit(paths, np.array([gold_idx[i] for i in calib]))
    if not result.ready:
        result.reason = no_level_reason(routing)
    return result


def cross_fitted(policy: ProjectPolicy, votes: dict, item_ids: list[int]) -> Paths:
    """Paths for these items from their votes so far, each scored by its fold's model (and its votes read
    through its fold's corrections); the futility bound holds for every fold."""
    n, S, K = len(item_ids), len(policy.stages), len(policy.label_names)
    logits, active = np.zeros((n, S, K)), np.zeros((n, S), bool)
    folds = np.array([fold_of(i) for i in item_ids], dtype=np.int64)
    ordered = ordered_votes(policy, corrected(policy, votes, item_ids, lambda i: frozenset({fold_of(i)})), item_ids, S - 1)
    for f, model in enumerate(policy.models):
        rows = np.nonzero(folds == f)[0]
        part = build_paths(model, [item_ids[r] for r in rows], ordered, S)
        logits[rows], active[rows] = part.logits, part.active
    workers = policy.stage_workers()
    reach = np.stack([np.min([m.reach(workers[s]) for m in policy.models], axis=0) for s in range(S)])[None]
    return Paths(logits, active, reach)


def scores(policy, votes: dict, item_ids: list[int]):
    """Paths for these items from their votes so far, by the policy of their task type."""
    return policy.paths(votes, item_ids)


def honeypots(gold: dict) -> dict[int, str]:
    """Honeypot item -> gold label, from gold_of()."""
    return {i: g[0] for i, g in gold.items() if g[1] == models.Split.honeypot}


def honeypot_check(policy: ProjectPolicy, stage: int, answers: dict[int, str | None], gold: dict) -> dict | None:
    """This run's honeypot answers of one stage's annotator (`answers`: item -> label) against its
    calibrated accuracy: a one-sided binomial test, significant at HONEYPOT_ALPHA, is a bad day."""
    st = policy.stages[stage]
    gold = honeypots(gold)
    rows = [(i, label) for i, label in answers.items() if i in gold]
    if not rows:
        return None
    right = sum(label == gold[item_id] for item_id, label in rows)
    expected = policy.skills.get(st.name)
    result = {"honeypots": len(rows), "right": right, "accuracy": round(right / len(rows), 4), "calibrated_accuracy": expected}
    if expected is not None:
        # Laplace's rule keeps a flawless calibration record from making one slip "impossible".
        n = policy.skill_counts[st.name]
        p_value = binomtest(right, len(rows), (expected * n + 1) / (n + 2), alternative="less").pvalue
        result |= {"p_value": round(float(p_value), 6), "bad_day": bool(p_value < HONEYPOT_ALPHA)}
    return result


def guideline_suspects(n_stages: int, this_run: dict, gold: dict) -> list[int]:
    """Honeypots that every annotator got wrong in this run (`this_run`: item -> {stage: (label, probs)}):
    likely a guideline problem."""
    gold = honeypots(gold)
    if n_stages < 2:
        return []
    return sorted(i for i, by_stage in this_run.items()
                  if i in gold and len(by_stage) == n_stages
                  and all(lab is not None and lab != gold[i] for lab, _ in by_stage.values()))
