"""What routing reads from and writes to the store, in one place: votes by stage, gold, the items a run
labels, its decisions and the machines' view of gold. Everything else in routing is statistics on these."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import bindparam, func, select, update

from labeler.store import models
from labeler.store.engine import upsert
from labeler.store.models import State, utcnow
from labeler.store.workspace import Workspace
from routing.project import Stage

# A run writes a decision only over one that machines own: no reviewer has it leased or answered.
# (No IN list: the write is an executemany, which takes no expanding parameters.)
MACHINE_OWNED = (((models.Decision.state == State.auto) | (models.Decision.state == State.needs_review))
                 & (models.Decision.review_count == 0))


def load_votes(ws: Workspace, stages: list[Stage], item_ids: list[int], set_aside: set = frozenset(),
               run_id: int | None = None) -> dict:
    """item -> {stage index: (label, probs)} for each stage's annotator at its version (only the votes
    of one run, given `run_id`).

    `set_aside` holds (annotator id, run id) pairs whose votes are ignored (bad days)."""
    Vote = models.Vote
    keys = {(s.annotator_id, s.version): i for i, s in enumerate(stages)}
    wanted = set(item_ids)
    out: dict[int, dict] = defaultdict(dict)
    with ws.session() as s:
        rows = s.execute(
            select(Vote.item_id, Vote.annotator_id, Vote.version, Vote.label, Vote.probs, Vote.run_id)
            .where(Vote.annotator_id.in_([st.annotator_id for st in stages]),
                   *([Vote.run_id == run_id] if run_id is not None else []))
        ).all()
    for item_id, annotator_id, version, label, probs, run_id in rows:
        stage = keys.get((annotator_id, version))
        if stage is None or item_id not in wanted:
            continue
        # A set-aside vote still marks the stage as reached, but tells nothing.
        out[item_id][stage] = (None, None) if (annotator_id, run_id) in set_aside else (label, probs)
    return out


def calibration_votes(ws: Workspace, names: list[str]) -> tuple[int, dict[str, int]]:
    """The calibration gold items, and how many of them each named annotator has voted on (any version):
    what `calibrate` can measure without asking anybody."""
    Vote, Gold, Item, Annotator = models.Vote, models.GoldLabel, models.Item, models.Annotator
    with ws.session() as s:
        total = s.scalar(select(func.count()).select_from(Gold).join(Item, Item.id == Gold.item_id)
                         .where(Item.project_id == ws.project_id, Gold.split == models.Split.calibration))
        voted = dict(s.execute(
            select(Annotator.name, func.count(func.distinct(Vote.item_id))).join(Vote, Vote.annotator_id == Annotator.id)
            .join(Gold, Gold.item_id == Vote.item_id)
            .where(Annotator.project_id == ws.project_id, Annotator.name.in_(names), Gold.split == models.Split.calibration)
            .group_by(Annotator.name)).all())
    return total, {name: voted.get(name, 0) for name in names}


def gold_of(ws: Workspace) -> dict[int, tuple[str, models.Split]]:
    with ws.session() as s:
        return {
            item_id: (label, split)
            for item_id, label, split in s.execute(
                select(models.GoldLabel.item_id, models.GoldLabel.label, models.GoldLabel.split)
                .join(models.Item, models.Item.id == models.GoldLabel.item_id)
                .where(models.Item.project_id == ws.project_id)
            )
        }


def items_to_label(ws: Workspace, limit: int | None = None) -> list[int]:
    """Items without gold and without a human decision (nor a reviewer at work on them), in import order."""
    Item, Gold, Decision = models.Item, models.GoldLabel, models.Decision
    with ws.session() as s:
        query = (
            select(Item.id)
            .outerjoin(Gold, Gold.item_id == Item.id)
            .outerjoin(Decision, Decision.item_id == Item.id)
            .where(Item.project_id == ws.project_id, Gold.item_id.is_(None),
                   Decision.state.is_(None) | MACHINE_OWNED)
            .order_by(Item.id)
        )
        if limit is not None:
            query = query.limit(limit)
        return list(s.scalars(query))


def voted_by(ws: Workspace, stage: Stage) -> set[int]:
    """The items a stage's annotator has voted on at its version."""
    with ws.session() as s:
        return set(s.scalars(select(models.Vote.item_id).where(
            models.Vote.annotator_id == stage.annotator_id, models.Vote.version == stage.version)))


def external_ids(ws: Workspace, item_ids: list[int]) -> dict[int, str]:
    with ws.session() as s:
        return dict(s.execute(select(models.Item.id, models.Item.external_id).where(models.Item.id.in_(list(item_ids)))).all())


def start_run(ws: Workspace) -> tuple[int, int]:
    """A new labeling run: its row id, and its number as the project's user counts them (1 for the first)."""
    with ws.session() as s:
        run = models.Run(project_id=ws.project_id, kind="run")
        s.add(run)
        s.flush()
        number = s.scalar(select(func.count()).select_from(models.Run).where(
            models.Run.project_id == ws.project_id, models.Run.kind == "run", models.Run.id <= run.id))
        return run.id, number


def finish_run(ws: Workspace, run_id: int, stats: dict) -> None:
    with ws.session() as s:
        row = s.get(models.Run, run_id)
        row.finished_at, row.stats = utcnow(), stats


def write_decisions(ws: Workspace, rows: list[dict], run_id: int) -> dict:
    """Write a run's decisions, each only over one machines own (checked in the same statement: a reviewer
    who took or answered an item during the run keeps it); return this run's decisions per state."""
    Decision = models.Decision
    with ws.session() as s:
        upsert(s, Decision, [row | {"project_id": ws.project_id} for row in rows], keys=["item_id"], where=MACHINE_OWNED)
        return dict(s.execute(
            select(Decision.state, func.count()).join(models.Item, models.Item.id == Decision.item_id)
            .where(models.Item.project_id == ws.project_id, Decision.details["run"].as_integer() == run_id,
                   Decision.state.in_([State.auto, State.needs_review]))
            .group_by(Decision.state)).all())


def write_machine_views(ws: Workspace, views: dict[int, dict]) -> None:
    """Set `details.machine` of these (gold) items' decisions, keeping the rest of their details."""
    Decision = models.Decision
    with ws.session() as s:
        details = dict(s.execute(select(Decision.item_id, Decision.details).where(Decision.item_id.in_(list(views)))).all())
        rows = [{"key": i, "details": dict(details.get(i) or {}, machine=machine)}
                for i, machine in views.items() if i in details]
        if rows:
            s.connection().execute(update(Decision.__table__).where(Decision.__table__.c.item_id == bindparam("key"))
                                   .values(details=bindparam("details")), rows)
