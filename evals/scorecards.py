"""Per-annotator and per-reviewer figures: how much each labeled, how often right on gold, how well they agree."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from statistics import median

from sklearn.metrics import cohen_kappa_score
from sqlalchemy import func, select

from labeler.store import models
from labeler.store.workspace import Workspace


def _share(right: int, total: int) -> float | None:
    return round(right / total, 4) if total else None


def reviewer_scorecards(ws: Workspace) -> list[dict]:
    """Per reviewer: answers, "I don't know"s (and whether they are over the project's cap), accuracy on
    hidden gold with the machines' view shown and blind, how often a wrong suggestion was accepted
    (automation bias), Cohen's kappa with the other reviewers, agreement with experts, answers per hour
    and median seconds per item. Qualification answers are not counted here (the attempts are)."""
    Task, User, Item, Gold, Membership = models.ReviewTask, models.User, models.Item, models.GoldLabel, models.Membership
    with ws.session() as s:
        rows = s.execute(
            select(Task.item_id, User.name, Membership.role, Task.label, Gold.label, Task.blind, Task.suggested,
                   Task.leased_at, Task.submitted_at)
            .join(User, User.id == Task.user_id).join(Item, Item.id == Task.item_id)
            .join(Membership, (Membership.user_id == User.id) & (Membership.project_id == ws.project_id))
            .outerjoin(Gold, Gold.item_id == Task.item_id)
            .where(Item.project_id == ws.project_id, Task.submitted_at.is_not(None), Task.qualification_id.is_(None))
            .order_by(Task.submitted_at)
        ).all()
    cards: dict[str, dict] = {}
    answers: dict[int, dict[str, str]] = defaultdict(dict)
    experts: dict[int, str] = {}
    seconds: dict[str, list[float]] = defaultdict(list)
    times: dict[str, list] = defaultdict(list)
    recent: dict[str, list] = defaultdict(list)
    for item_id, name, role, label, gold, blind, suggested, leased, submitted in rows:
        card = cards.setdefault(name, {"reviewer": name, "role": role.value, "answers": 0, "dont_know": 0,
                                       **{k: 0 for k in ("gold_answered", "gold_right", "blind_answered", "blind_right",
                                                         "shown_answered", "shown_right", "wrong_shown",
                                                         "wrong_accepted")}})
        card["answers"] += 1
        card["dont_know"] += label is None
        recent[name].append(label is None)
        seconds[name].append((submitted - leased).total_seconds())
        times[name].append(submitted)
        if gold is not None and label is not None:
            right = label == gold
            card["gold_answered"] += 1
            card["gold_right"] += right
            mode = "blind" if blind else "shown"
            card[f"{mode}_answered"] += 1
            card[f"{mode}_right"] += right
            if not blind and suggested is not None and suggested != gold:
                card["wrong_shown"] += 1
                card["wrong_accepted"] += label == suggested
        if label is not None:
            answers[item_id][name] = label
            if role in (models.Role.expert, models.Role.admin):
                experts[item_id] = label
    pairs: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for by_user in answers.values():
        for a, b in combinations(sorted(by_user), 2):
            for me, other in ((a, b), (b, a)):
                pairs[me][0].append(by_user[me])
                pairs[me][1].append(by_user[other])
    cap = ws.config.routing.review_dont_know_cap
    for name, card in cards.items():
        mine, theirs = pairs.get(name, ([], []))
        card["gold_accuracy"] = _share(card.pop("gold_right"), card["gold_answered"])
        card["gold_accuracy_blind"] = _share(card.pop("blind_right"), card["blind_answered"])
        card["gold_accuracy_shown"] = _share(card.pop("shown_right"), card["shown_answered"])
        card["accepted_wrong_suggestion"] = _share(card.pop("wrong_accepted"), card["wrong_shown"])
        card["shared_items"] = len(mine)
        card["kappa"] = _kappa(mine, theirs)
        with_expert = [(label, experts[i]) for i, by_user in answers.items() if i in experts
                       for who, label in by_user.items() if who == name and card["role"] not in ("expert", "admin")]
        card["agrees_with_experts"] = _share(sum(a == b for a, b in with_expert), len(with_expert))
        card["with_experts"] = len(with_expert)
        last = recent[name][-50:]
        card["dont_know_share"] = round(sum(last) / len(last), 4)
        card["dont_know_flagged"] = len(last) >= 10 and card["dont_know_share"] >= cap
        card["median_seconds"] = round(float(median(seconds[name])), 1)
        hours = max((times[name][-1] - times[name][0]).total_seconds() / 3600, 1 / 60)
        card["answers_per_hour"] = round(card["answers"] / hours, 1) if card["answers"] > 1 else None
    return sorted(cards.values(), key=lambda c: c["reviewer"])


def dont_know_summary(ws: Workspace, limit: int = 10) -> dict:
    """Why reviewers did not know (reasons by count), and the items most often not known or skipped:
    suspects for the guideline."""
    Task, Item = models.ReviewTask, models.Item
    with ws.session() as s:
        reasons = s.execute(
            select(Task.reason, func.count()).join(Item, Item.id == Task.item_id)
            .where(Item.project_id == ws.project_id, Task.submitted_at.is_not(None), Task.label.is_(None))
            .group_by(Task.reason).order_by(func.count().desc()).limit(limit)).all()
        troubled = s.execute(
            select(Item.external_id, func.count()).join(Task, Task.item_id == Item.id)
            .where(Item.project_id == ws.project_id,
                   (Task.skipped_at.is_not(None)) | (Task.submitted_at.is_not(None) & Task.label.is_(None)))
            .group_by(Item.external_id).order_by(func.count().desc(), Item.external_id).limit(limit)).all()
    return {"reasons": [{"reason": r, "count": n} for r, n in reasons],
            "items": [{"id": i, "skipped_or_not_known": n} for i, n in troubled]}


def _kappa(a: list[str], b: list[str]) -> float | None:
    if len(a) < 2:
        return None
    if len(set(a) | set(b)) == 1:
        return 1.0  # everyone gave one label throughout: perfect, though kappa's formula is 0/0
    return round(float(cohen_kappa_score(a, b)), 4)


def annotator_scorecards(ws: Workspace) -> list[dict]:
    """Each machine annotator's votes, abstentions, accuracy on gold and agreement with human-settled labels."""
    Vote, Annotator, Gold, Decision = models.Vote, models.Annotator, models.GoldLabel, models.Decision
    with ws.session() as s:
        rows = s.execute(
            select(Annotator.name, Vote.item_id, Vote.label, Gold.label, Decision.label, Decision.state)
            .join(Annotator, Annotator.id == Vote.annotator_id)
            .outerjoin(Gold, Gold.item_id == Vote.item_id).outerjoin(Decision, Decision.item_id == Vote.item_id)
            .where(Annotator.project_id == ws.project_id).order_by(Vote.id)
        ).all()
    newest = {(name, item): (label, gold, decided, state) for name, item, label, gold, decided, state in rows}
    cards: dict[str, dict] = {}
    for (name, _), (label, gold, decided, state) in newest.items():
        card = cards.setdefault(name, {"annotator": name, "items": 0, "abstentions": 0, "gold_answered": 0,
                                       "gold_right": 0, "confirmed": 0, "confirmed_agree": 0})
        card["items"] += 1
        if label is None:
            card["abstentions"] += 1
            continue
        if gold is not None:
            card["gold_answered"] += 1
            card["gold_right"] += label == gold
        elif state == models.State.confirmed:
            card["confirmed"] += 1
            card["confirmed_agree"] += label == decided
    for card in cards.values():
        card["gold_accuracy"] = _share(card.pop("gold_right"), card["gold_answered"])
        card["agrees_with_reviewers"] = _share(card.pop("confirmed_agree"), card["confirmed"])
    return sorted(cards.values(), key=lambda c: c["annotator"])


def recent_disagreements(ws: Workspace, limit: int = 20) -> list[dict]:
    """Items sent to experts, newest first, with who answered what."""
    Item, Decision = models.Item, models.Decision
    with ws.session() as s:
        rows = s.execute(
            select(Item.external_id, Decision.state, Decision.label, Decision.method, Decision.details, Decision.updated_at)
            .join(Decision, Decision.item_id == Item.id)
            .where(Item.project_id == ws.project_id, Decision.method.in_(["review", "expert"]),
                   Decision.state.in_([models.State.escalated, models.State.confirmed]))
            .order_by(Decision.updated_at.desc()).limit(limit * 4)
        ).all()
    found = []
    for external_id, state, label, method, details, updated in rows:
        answers = details.get("decided_by", [])
        reviewers = [a for a in answers if a["role"] not in ("expert", "admin")]
        if len({a["label"] for a in reviewers}) > 1 or any(a["label"] is None for a in reviewers):
            found.append({"id": external_id, "state": state.value, "label": label, "settled_by": method,
                          "at": updated.isoformat(), "answers": answers})
    return found[:limit]
