"""Per-annotator and per-reviewer figures: how much each labeled, how often right on gold, how well they agree."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from sklearn.metrics import cohen_kappa_score
from sqlalchemy import select

from labeler import models
from labeler.workspace import Workspace


def _share(right: int, total: int) -> float | None:
    return round(right / total, 4) if total else None


def reviewer_scorecards(ws: Workspace) -> list[dict]:
    """Each reviewer's answers, "I don't know"s, accuracy on (hidden) gold, and Cohen's kappa with the others."""
    Task, User, Item, Gold = models.ReviewTask, models.User, models.Item, models.GoldLabel
    with ws.session() as s:
        rows = s.execute(
            select(Task.item_id, User.name, User.role, Task.label, Gold.label)
            .join(User, User.id == Task.user_id).join(Item, Item.id == Task.item_id)
            .outerjoin(Gold, Gold.item_id == Task.item_id)
            .where(Item.project_id == ws.project_id, Task.submitted_at.is_not(None)).order_by(Task.id)
        ).all()
    cards: dict[str, dict] = {}
    answers: dict[int, dict[str, str]] = defaultdict(dict)
    for item_id, name, role, label, gold in rows:
        card = cards.setdefault(name, {"reviewer": name, "role": role.value, "answers": 0, "dont_know": 0,
                                       "gold_answered": 0, "gold_right": 0})
        card["answers"] += 1
        card["dont_know"] += label is None
        if gold is not None and label is not None:
            card["gold_answered"] += 1
            card["gold_right"] += label == gold
        if label is not None:
            answers[item_id][name] = label
    pairs: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for by_user in answers.values():
        for a, b in combinations(sorted(by_user), 2):
            for me, other in ((a, b), (b, a)):
                pairs[me][0].append(by_user[me])
                pairs[me][1].append(by_user[other])
    for name, card in cards.items():
        mine, theirs = pairs.get(name, ([], []))
        card["gold_accuracy"] = _share(card.pop("gold_right"), card["gold_answered"])
        card["shared_items"] = len(mine)
        card["kappa"] = _kappa(mine, theirs)
    return sorted(cards.values(), key=lambda c: c["reviewer"])


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
