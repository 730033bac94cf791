"""A labeling run over a project, following the cascade.

1. Every annotator votes on the calibration gold (that is the measurement); the worker model
   and the acceptance level are fitted on it (routing.project).
2. Stage by stage, cheapest annotator first, the items not yet accepted are asked; a share of
   unseen honeypots rides along with each stage. An annotator that does significantly worse
   on them than on calibration gold has a "bad day": its votes in this run are set aside.
3. After each stage, items whose posterior confidence reaches the level are accepted (`auto`);
   items that no later annotator could lift to the level go to review at once (`needs_review`,
   asking nobody else: their votes would buy nothing); what is left after the last stage goes
   to review too.
Without a certified level nothing is accepted automatically. With too little calibration gold
to measure anything, every annotator still votes on new items (suggestions for the reviewers);
once the gold measures the annotators and no level passes, no dearer vote could get an item
accepted, so new items get the first annotator's vote and go to review.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Callable

import numpy as np

from labeler.annotators.recorded import load_recorded
from labeler.annotators.runner import Budget, pending_items, run_askers, spend
from labeler.config import RecordedAnnotator
from labeler.store import models
from labeler.store.models import State, utcnow
from labeler.store.workspace import Workspace
from routing import label_sets, project, spans, store
from routing.calibration import score_drift
from routing.project import ProjectPolicy, Stage, honeypots, scores
from routing.store import gold_of, items_to_label, load_votes

SETTLED = (State.gold, State.confirmed, State.escalated)
FITS = {"single_label": project.fit, "multi_label": label_sets.fit, "spans": spans.fit}  # the cascade's fit for each task type
HONEYPOT_SHARE = 0.05  # honeypots per stage, as a share of the items asked (at least MIN_HONEYPOTS)
MIN_HONEYPOTS = 10


def estimate(ws: Workspace, askers: list, limit: int | None = None) -> dict:
    """What `labeler run` would ask and spend, asking nobody: per annotator the calls it could make (the
    calibration gold it has not voted on, and every new item: an upper bound, since the cascade stops
    asking an item once it is settled), the tokens of their real prompts, and the cost by the model's price."""
    gold = gold_of(ws)
    items = sorted(i for i, g in gold.items() if g[1] == models.Split.calibration) + items_to_label(ws, limit)
    rows = [a.estimate(pending_items(ws, a, items)) if hasattr(a, "estimate")
            else {"annotator": a.name, "calls": 0, "tokens": 0, "cost": 0.0} for a in askers]
    known = [r["cost"] for r in rows if r["cost"] is not None]
    return {"annotators": rows, "items": len(items), "cost": round(sum(known), 6) if len(known) == len(rows) else None,
            "budget": ws.config.budget.model_dump(), "project_spent": round(spend(ws), 6)}


def stages_of(askers: list) -> list[Stage]:
    return [Stage(a.name, a.annotator_id, a.version) for a in askers]


def unseen_honeypots(ws: Workspace, stage: Stage, gold: dict, count: int, seed: int) -> list[int]:
    fresh = sorted(set(honeypots(gold)) - store.voted_by(ws, stage))
    random.Random(seed).shuffle(fresh)
    return fresh[:count]


def fit_policy(ws: Workspace, stages: list[Stage], gold: dict | None = None, correct: bool = True) -> ProjectPolicy:
    """routing.project.fit on this project's calibration gold and its votes. `gold`: gold_of(ws), when the
    caller has it already."""
    gold = gold if gold is not None else gold_of(ws)
    calibration = [i for i, g in gold.items() if g[1] == models.Split.calibration]
    return FITS[ws.config.task](stages, ws.config.label_names, load_votes(ws, stages, calibration), gold,
                                ws.config.routing, correct)


def calibrate(ws: Workspace, askers: list) -> ProjectPolicy:
    return fit_policy(ws, stages_of(askers))


def gold_plan(ws: Workspace, policy: ProjectPolicy) -> dict | None:
    """routing.plan's figures for this project's calibration gold, and the new items to send to experts
    next: those (with votes) scored nearest the level being decided."""
    if policy.policy is None:
        return None
    from routing.plan import nearest_the_level, plan

    result = plan(policy.policy)
    paths, _ = policy.policy.gold_
    level = policy.policy.lambda_ if policy.ready else float(np.median(paths.best()[np.isfinite(paths.best())]))
    todo = items_to_label(ws)
    votes = load_votes(ws, policy.stages, todo)
    voted = [i for i in todo if votes.get(i)]
    result["experts_next"] = []
    if voted:
        nearest = [voted[k] for k in nearest_the_level(scores(policy, votes, voted).best(), level)]
        names = store.external_ids(ws, nearest)
        result["experts_next"] = [names[i] for i in nearest]
    return result


def run_project(ws: Workspace, askers: list, *, limit: int | None = None,
                on_answer: Callable | None = None, on_start: Callable | None = None,
                asking: Callable | None = None) -> dict:
    """`asking(askers, item_ids, run_id)` gets the votes (default: here, with asyncio); labeler.annotators.jobs
    passes one that hands batches to workers and waits for them."""
    started = time.perf_counter()
    recorded = {c.name: load_recorded(ws, c) for c in ws.config.annotators if isinstance(c, RecordedAnnotator)}
    run_id, number = store.start_run(ws)
    stages = stages_of(askers)
    gold = gold_of(ws)
    calibration = sorted(i for i, g in gold.items() if g[1] == models.Split.calibration)
    todo = items_to_label(ws, limit)
    if on_start:
        on_start((len(calibration) + len(todo)) * len(askers))
    budget = Budget(ws.config.budget.run, ws.config.budget.project, spent_before=spend(ws))
    breakers: dict = {}  # failures in a row per annotator, over every stage of the run

    def ask(asker_list, item_ids):
        if not asker_list:
            return []
        if asking is not None:
            return asking(asker_list, item_ids, run_id)
        return asyncio.run(run_askers(ws, asker_list, item_ids, run_id=run_id, on_answer=on_answer, budget=budget,
                                      breakers=breakers))

    reports = {r.name: r for r in ask(askers, calibration)}
    policy = fit_policy(ws, stages, gold=gold)
    open_items, accepted, bad_days, checks, futile = list(todo), {}, {}, {}, 0
    for s, asker in enumerate(askers):
        if not open_items:
            break
        hp = unseen_honeypots(ws, stages[s], gold, max(MIN_HONEYPOTS, int(HONEYPOT_SHARE * len(open_items))), run_id)
        for r in ask([asker], open_items + hp):
            _merge(reports, r)
        answers = load_votes(ws, [stages[s]], list(honeypots(gold)), run_id=run_id)
        check = project.honeypot_check(policy, s, {i: v[0][0] for i, v in answers.items()}, gold)
        if check:
            checks[asker.name] = check
            if check.get("bad_day"):
                bad_days[asker.name] = asker.annotator_id
        if not policy.ready:
            if policy.models is None:
                continue  # nothing measured yet (too little gold): every annotator's vote, as suggestions
            break  # measured, and no level certified: no dearer vote could get an item accepted
        votes = load_votes(ws, stages, open_items, {(a, run_id) for a in bad_days.values()})
        paths = scores(policy, votes, open_items)
        lam = policy.policy.lambda_
        take = paths.active[:, s] & (paths.score[:, s] >= lam)
        calibrated = policy.policy.calibrated(s, paths.predicted[:, s], paths.score[:, s])
        confidence = paths.confidence(s)
        for i in np.nonzero(take)[0]:
            accepted[open_items[i]] = (s, policy.answer(paths, i, s), float(calibrated[i]), float(confidence[i]),
                                       policy.label_confidence(paths, i, s))
        stop = ~take & paths.futile(s, lam) if ws.config.routing.stop_when_futile else np.zeros_like(take)
        futile += int(stop.sum()) if s + 1 < len(askers) else 0
        open_items = [item for i, item in enumerate(open_items) if not (take[i] or stop[i])]
    if asking is not None:  # workers spent it: the store says how much
        budget.spent = spend(ws, run_id)
    decisions = _decide(ws, policy, todo, accepted, run_id, {(a, run_id) for a in bad_days.values()})
    drift = _score_drift(ws, policy, todo, {(a, run_id) for a in bad_days.values()})
    result = {
        "run_id": run_id,
        "run": number,  # the project's first run is 1, whatever else the store holds
        "items": len(todo),
        "annotators": [r.as_dict() for r in reports.values()],
        "recorded": recorded,
        "policy": policy.summary(),
        "honeypots": checks,
        "bad_day": sorted(bad_days),
        "guideline_suspects": _guideline_suspects(ws, stages, run_id, gold),
        "decisions": decisions,
        "sent_to_review_early": futile,
        "score_drift": drift,
        "budget": budget.as_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    store.finish_run(ws, run_id, result)
    return result


def _score_drift(ws: Workspace, policy: ProjectPolicy, items: list[int], set_aside: set) -> dict | None:
    """The calibration gold's scores against the new items', by how easy the cascade found each (Paths.ease;
    routing.calibration.score_drift); when they differ, the new items least like the gold, to add to it."""
    if not policy.ready or not items:
        return None
    gold_paths, _ = policy.policy.gold_
    votes = load_votes(ws, policy.stages, items, set_aside)
    asked = [i for i in items if votes.get(i)]
    if not asked:
        return None
    new = scores(policy, votes, asked).ease(policy.policy.lambda_)  # their votes end where the run stopped
    gold = gold_paths.ease(policy.policy.lambda_)
    drift = score_drift(gold, new)
    if drift and drift["flagged"]:
        unlike = [asked[k] for k in np.argsort(-np.abs(new - float(np.median(gold))))[:20]]
        names = store.external_ids(ws, unlike)
        drift["propose_for_gold"] = [names[i] for i in unlike]
    return drift


def _merge(reports: dict, report) -> None:
    if report.name in reports:
        reports[report.name].add(report)
    else:
        reports[report.name] = report


REASONS = {
    "uncertified": "no confidence level is certified on this gold yet",
    "below": "its calibrated confidence is below the level the gold certifies",
    "futile": "no annotator left could have lifted it to the level the gold certifies",
    "disagree": "the machines disagree",
}


def _why(policy: ProjectPolicy, votes: dict) -> str:
    """One line for the reviewer: why the machines left this item to people."""
    if not policy.ready:
        return REASONS["uncertified"]
    labels = {label for label, _ in votes.values() if label is not None}
    return REASONS["disagree"] + "; " + REASONS["below"] if len(labels) > 1 else REASONS["below"]


def _decide(ws: Workspace, policy: ProjectPolicy, items: list[int], accepted: dict, run_id: int, set_aside: set) -> dict:
    """auto for accepted items; needs_review, with the best guess, for the rest. Each decision keeps the
    machines' view (`details.machine`: label, calibrated confidence, why it needs people), which the
    review screen shows; gold items get the same view, so a hidden gold item looks like any other."""
    rows, now = [], utcnow()
    votes = load_votes(ws, policy.stages, items, set_aside) if policy.stages else {}
    rest = [i for i in items if i not in accepted]
    guess = scores(policy, votes, rest) if (policy.models is not None and rest) else None
    method = policy.method
    for item_id, (stage, answer, calibrated, confidence, per_label) in accepted.items():
        machine = _view(per_label, label=answer, confidence=round(calibrated, 6), reason=None)
        rows.append({"item_id": item_id, "label": machine["label"], "confidence": machine["confidence"],
                     "state": State.auto, "method": method, "updated_at": now,
                     "details": {"run": run_id, "stage": stage, "asked": [st.name for st in policy.stages[: stage + 1]],
                                 "posterior": round(confidence, 6), "lambda": policy.policy.level, "machine": machine}})
    for n, item_id in enumerate(rest):
        label, confidence, per_label = _fallback(policy, votes.get(item_id, {}), guess, n)
        machine = _view(per_label, label=label, confidence=confidence, reason=_why(policy, votes.get(item_id, {})),
                        asked=_asked(policy, votes.get(item_id, {})))
        rows.append({"item_id": item_id, "label": label, "confidence": confidence, "state": State.needs_review,
                     "method": method if guess is not None else "majority", "updated_at": now,
                     "details": {"run": run_id, "reason": policy.reason or machine["reason"], "machine": machine}})
    states = store.write_decisions(ws, rows, run_id)
    _gold_views(ws, policy, set_aside)
    counts = {state.value: n for state, n in sorted(states.items(), key=lambda kv: kv[0].value)}
    kept = len(items) - sum(counts.values())
    return counts | ({"kept_by_reviewers": kept} if kept else {})


def _gold_views(ws: Workspace, policy: ProjectPolicy, set_aside: set) -> None:
    """The machines' view of each gold item (not examples), as a new item with its votes would get it:
    the votes a run would have bought before settling it or sending it to review (the calibration stage
    asks every annotator about gold; a live item stops earlier), and the label, calibrated confidence
    and reason those votes give. Calibration gold is scored by its fold's model, which never saw its
    label. So a hidden gold card carries what a real card of the same score carries."""
    gold = [i for i, (_, split) in gold_of(ws).items() if split != models.Split.examples]
    votes = load_votes(ws, policy.stages, gold, set_aside) if policy.stages and gold else {}
    gold = [i for i in gold if votes.get(i)]
    if not gold:
        return
    asked, review = _live_path(ws, policy, votes, gold)
    seen = {i: {s: v for s, v in votes[i].items() if s < asked[n]} for n, i in enumerate(gold)}
    paths = scores(policy, seen, gold) if policy.models is not None else None
    views = {}
    for n, item_id in enumerate(gold):
        label, confidence, per_label = _fallback(policy, seen[item_id], paths, n)
        views[item_id] = _view(per_label, label=label, confidence=confidence, review=bool(review[n]),
                               asked=_asked(policy, seen[item_id]), reason=_why(policy, seen[item_id]) if review[n] else None)
    store.write_machine_views(ws, views)


def _live_path(ws: Workspace, policy: ProjectPolicy, votes: dict, items: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """For items holding every annotator's vote: how many stages a run would have asked each, and whether
    it would have sent it to review, following run_project's rules."""
    S = len(policy.stages)
    if policy.models is None:  # nothing measured: every annotator votes, everything goes to review
        return np.full(len(items), S), np.ones(len(items), bool)
    if not policy.ready:  # measured, no level: the first annotator's vote, then review
        return np.full(len(items), 1), np.ones(len(items), bool)
    paths = scores(policy, votes, items)
    first, _ = paths.accept(policy.policy.lambda_)
    asked = paths.votes_used(policy.policy.lambda_, first) if ws.config.routing.stop_when_futile \
        else np.where(first >= 0, first + 1, paths.active.sum(axis=1))
    return asked, first < 0


def _view(per_label: dict | None, **view) -> dict:
    """The machines' view of an item, with each label's probability where the task type gives one (label sets)."""
    return view | ({"label_confidence": per_label} if per_label is not None else {})


def _asked(policy: ProjectPolicy, by_stage: dict) -> list[list[str]]:
    """The (annotator, version) of the stages whose votes an item's card shows."""
    return [[policy.stages[s].name, policy.stages[s].version] for s in sorted(by_stage)]


def _fallback(policy: ProjectPolicy, votes: dict, guess, n: int) -> tuple[str | None, float | None, dict | None]:
    """The best guess for an item left to review: the posterior after the stages it reached, else a
    majority; None without votes. With it, the per-label confidence where the task type has one."""
    if not any(label is not None for label, _ in votes.values()):
        return None, None, None
    if guess is not None:
        s = max(int(guess.active[n].sum()) - 1, 0)
        k, score = guess.predicted[n:n + 1, s], guess.score[n:n + 1, s]
        return (policy.answer(guess, n, s), round(float(policy.policy.calibrated(s, k, score)[0]), 6),
                policy.label_confidence(guess, n, s))
    labels = [label for label, _ in votes.values() if label is not None]
    order = {label: k for k, label in enumerate(policy.label_names)}  # ties: the first label (a set: any)
    best = max(set(labels), key=lambda lab: (labels.count(lab), -order.get(lab, len(order)), lab))
    return best, round(labels.count(best) / len(labels), 6), None


def _guideline_suspects(ws: Workspace, stages: list[Stage], run_id: int, gold: dict) -> list[str]:
    """The external ids of honeypots that every annotator got wrong, of those asked in this run."""
    in_run = load_votes(ws, stages, list(honeypots(gold)), run_id=run_id)
    suspects = project.guideline_suspects(len(stages), load_votes(ws, stages, list(in_run)), gold)
    names = store.external_ids(ws, suspects)
    return sorted(names[i] for i in suspects)
