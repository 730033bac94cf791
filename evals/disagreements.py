"""Where humans overturned the machines: candidate guideline examples, grouped by label pair."""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import select

from labeler.annotators.classifier import item_text
from labeler.store import models
from labeler.store.workspace import Workspace


def overturned(ws: Workspace) -> dict[tuple[str, str], list[dict]]:
    """(machine label, human label) -> items a reviewer or expert settled against the machines' majority."""
    Item, Decision, Vote = models.Item, models.Decision, models.Vote
    with ws.session() as s:
        settled = s.execute(
            select(Item.id, Item.external_id, Item.fields, Decision.label, Decision.state)
            .join(Decision, Decision.item_id == Item.id)
            .where(Item.project_id == ws.project_id, Decision.state.in_([models.State.confirmed, models.State.escalated]),
                   Decision.label.is_not(None))
        ).all()
        votes = defaultdict(list)
        annotators = dict(s.execute(select(models.Annotator.id, models.Annotator.kind)
                                    .where(models.Annotator.project_id == ws.project_id)).all())
        for item_id, annotator_id, label in s.execute(
            select(Vote.item_id, Vote.annotator_id, Vote.label).where(Vote.item_id.in_([r[0] for r in settled]))
        ):
            if label is not None and annotators.get(annotator_id) != "human":
                votes[item_id].append(label)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for item_id, external_id, fields, human, state in settled:
        if not votes[item_id]:
            continue
        machine, count = Counter(votes[item_id]).most_common(1)[0]
        if machine != human:
            groups[(machine, human)].append({"id": external_id, "text": item_text(fields, ws.config.fields),
                                             "machine_votes": f"{count}/{len(votes[item_id])}", "state": state.value})
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def suggest_markdown(groups: dict[tuple[str, str], list[dict]], per_pair: int = 5) -> str:
    """Markdown ready to paste into the guideline's label sections."""
    if not groups:
        return "<!-- No item has been overturned by a reviewer yet. -->\n"
    parts = []
    for (machine, human), items in groups.items():
        parts.append(f"<!-- {len(items)} item(s) the machines called {machine!r} and reviewers {human!r} -->")
        parts.append(f"### {human}\n\nExamples (not {machine}):")
        parts += [f"- {' '.join(item['text'].split())}" for item in items[:per_pair]]
        parts.append("")
    return "\n".join(parts)
