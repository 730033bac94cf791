"""The labeling run: ask annotators about the items that still need their vote.

Each annotator is an Asker (one annotator at one version). Calls run concurrently up to the
annotator's bound; each answer is written as it arrives (a writer task batches whatever has
arrived since its last write), under the vote's unique key, so a run killed at any moment
can be rerun and pays only for what is missing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sqlalchemy import select

from labeler import models
from labeler.errors import LabelerError
from labeler.models import utcnow
from labeler.store import insert_new
from labeler.workspace import Workspace

# An annotator that fails this many calls in a row, with no success, is stopped for the run.
STOP_AFTER_PERMANENT = 5


@dataclass(frozen=True)
class ItemRef:
    id: int
    external_id: str
    fields: dict[str, Any]
    content_hash: str


@dataclass
class Answer:
    label: str | None
    probs: dict[str, float] | None = None
    abstain_reason: str | None = None
    raw: str | None = None
    cost: float = 0.0
    latency_ms: float | None = None
    cache: tuple[str, dict] | None = None  # (key, response) to store with the vote


class PermanentError(Exception):
    """A failure that retrying will not fix (bad key, unknown model, bad request)."""


class Asker(Protocol):
    name: str
    annotator_id: int
    version: str
    max_concurrency: int

    async def ask(self, item: ItemRef) -> Answer: ...


@dataclass
class AnnotatorReport:
    name: str
    version: str
    asked: int = 0
    voted: int = 0
    abstained: int = 0
    failed: int = 0
    cost: float = 0.0
    stopped: str | None = None
    errors: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "errors"}
        data["errors"] = dict(self.errors.most_common(5))
        return data

    def add(self, other: AnnotatorReport | dict[str, Any]) -> None:
        """Count another part of the same annotator's work in (a report, or one's as_dict())."""
        other = other if isinstance(other, dict) else other.as_dict() | {"errors": other.errors}
        for key in ("asked", "voted", "abstained", "failed", "cost"):
            setattr(self, key, getattr(self, key) + other[key])
        self.errors.update(other["errors"])
        self.stopped = self.stopped or other["stopped"]


def pending_items(ws: Workspace, asker: Asker, item_ids: list[int]) -> list[ItemRef]:
    """The items among item_ids without a vote from this annotator at this version."""
    Item, Vote = models.Item, models.Vote
    with ws.session() as s:
        done = set(
            s.scalars(
                select(Vote.item_id).where(Vote.annotator_id == asker.annotator_id, Vote.version == asker.version)
            )
        )
        todo = [i for i in item_ids if i not in done]
        refs: list[ItemRef] = []
        for start in range(0, len(todo), 5000):
            rows = s.execute(
                select(Item.id, Item.external_id, Item.fields, Item.content_hash).where(Item.id.in_(todo[start:start + 5000]))
            ).all()
            refs += [ItemRef(*row) for row in rows]
    refs.sort(key=lambda r: r.id)
    return refs


async def run_askers(
    ws: Workspace,
    askers: list[Asker],
    item_ids: list[int],
    *,
    run_id: int | None = None,
    on_answer: Callable[[str, Answer | None, str | None], None] | None = None,
) -> list[AnnotatorReport]:
    """Ask every asker about the items it has no vote on; all askers run side by side."""
    queue: asyncio.Queue = asyncio.Queue()
    writer = asyncio.create_task(_write_votes(ws, queue, run_id))
    try:
        reports = await asyncio.gather(*(_run_one(ws, a, item_ids, queue, on_answer) for a in askers))
    finally:
        await queue.put(None)
        await writer
    return list(reports)


async def _run_one(ws, asker: Asker, item_ids, queue, on_answer) -> AnnotatorReport:
    report = AnnotatorReport(asker.name, asker.version)
    items = pending_items(ws, asker, item_ids)
    report.asked = len(items)
    if hasattr(asker, "prefetch"):
        asker.prefetch(items)
    limit = asyncio.Semaphore(asker.max_concurrency)
    state = {"permanent_streak": 0, "any_success": False}

    async def one(item: ItemRef) -> None:
        async with limit:
            if report.stopped:
                report.failed += 1
                return
            started = time.perf_counter()
            try:
                answer = await asker.ask(item)
            except Exception as exc:  # a failed vote is reported, never the end of the run
                message = _describe(exc)
                report.failed += 1
                report.errors[message] += 1
                if isinstance(exc, PermanentError):
                    state["permanent_streak"] += 1
                    if state["permanent_streak"] >= STOP_AFTER_PERMANENT and not state["any_success"]:
                        report.stopped = f"stopped after {STOP_AFTER_PERMANENT} permanent errors: {message}"
                if on_answer:
                    on_answer(asker.name, None, message)
                return
            state["permanent_streak"] = 0
            state["any_success"] = True
            if answer.latency_ms is None:
                answer.latency_ms = (time.perf_counter() - started) * 1000
            report.voted += 1
            report.abstained += answer.label is None
            report.cost += answer.cost
            await queue.put((asker, item, answer))
            if on_answer:
                on_answer(asker.name, answer, None)

    await asyncio.gather(*(one(item) for item in items))
    return report


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


async def _write_votes(ws: Workspace, queue: asyncio.Queue, run_id: int | None) -> None:
    """Write whatever has arrived, in one transaction, until told to stop (None)."""
    stop = False
    while not stop:
        batch = [await queue.get()]
        while not queue.empty():
            batch.append(queue.get_nowait())
        if batch[-1] is None:
            stop = True
            batch.pop()
        if batch:
            _store(ws, batch, run_id)


def _store(ws: Workspace, batch: list, run_id: int | None) -> None:
    now = utcnow()
    votes, cache = [], []
    for asker, item, answer in batch:
        votes.append(
            {
                "item_id": item.id, "annotator_id": asker.annotator_id, "version": asker.version, "run_id": run_id,
                "label": answer.label, "abstain_reason": answer.abstain_reason, "probs": answer.probs,
                "raw": answer.raw, "cost": answer.cost, "latency_ms": answer.latency_ms, "created_at": now,
            }
        )
        if answer.cache:
            cache.append({"key": answer.cache[0], "response": answer.cache[1], "created_at": now})
    with ws.session() as s:
        insert_new(s, models.ResponseCache, cache)
        insert_new(s, models.Vote, votes)


def find_item(ws: Workspace, external_id: str | None = None) -> ItemRef:
    """An item by its id, or the first item imported."""
    Item = models.Item
    with ws.session() as s:
        query = select(Item.id, Item.external_id, Item.fields, Item.content_hash).where(Item.project_id == ws.project_id)
        query = query.where(Item.external_id == external_id) if external_id else query.order_by(Item.id)
        row = s.execute(query.limit(1)).first()
    if row is None:
        raise LabelerError(f"no item {external_id!r}" if external_id else "no items yet; `labeler import items FILE`")
    return ItemRef(*row)
