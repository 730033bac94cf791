"""The labeling run: ask annotators about the items that still need their vote.

Each annotator is an Asker (one annotator at one version). Calls run concurrently up to the
annotator's bound; each answer is written as it arrives (a writer task batches whatever has
arrived since its last write), under the vote's unique key, so a run killed at any moment
can be rerun and pays only for what is missing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from labeler import collector
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.engine import insert_new
from labeler.store.models import utcnow
from labeler.store.workspace import Workspace

# An annotator that fails this many calls in a row, with no success, is stopped for the run...
STOP_AFTER_PERMANENT = 5
# ...and so is one that fails this many in a row of any kind (timeouts, retries run out): a circuit
# breaker, so a hanging or dead model does not hold the run for every item it has left.
STOP_AFTER_FAILURES = 20
# A busy or unreachable store is retried this long before the run stops; meanwhile askers wait.
STORE_RETRY_SECONDS = 60.0
# Answers waiting to be written, at most: past it askers wait, so a stalled store stops spending.
MIN_WRITE_BACKLOG = 32


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


class BatchFailure(Exception):
    """One question of a provider batch that came back without an answer (failed, expired, still running)."""


class Asker(Protocol):
    name: str
    annotator_id: int
    version: str
    max_concurrency: int

    async def ask(self, item: ItemRef) -> Answer: ...


def spend(ws: Workspace, run_id: int | None = None) -> float:
    """What the project's annotators have cost so far (in one run, given its id)."""
    query = (select(func.coalesce(func.sum(models.Vote.cost), 0.0))
             .join(models.Annotator, models.Annotator.id == models.Vote.annotator_id)
             .where(models.Annotator.project_id == ws.project_id))
    if run_id is not None:
        query = query.where(models.Vote.run_id == run_id)
    with ws.session() as s:
        return float(s.scalar(query))


@dataclass
class Budget:
    """What a run may spend (litellm's prices, US dollars): asking stops once the run's or the project's
    cap is reached; calls already in flight finish and are kept."""

    run: float | None = None
    project: float | None = None
    spent_before: float = 0.0  # the project's spend before this run
    spent: float = 0.0
    # Where other processes spend for the same run (distributed batches), the run's spend is read
    # back from the store every `refresh_seconds`: a cap then holds across workers up to the calls
    # in flight and those made within one refresh.
    refresh: Callable[[], float] | None = None
    refresh_seconds: float = 1.0
    read_at: float = 0.0

    @classmethod
    def shared(cls, ws: Workspace, run_id: int) -> "Budget":
        """The budget of a run that several processes spend for, as the store tells it."""
        run_spent = spend(ws, run_id)
        return cls(ws.config.budget.run, ws.config.budget.project, spent_before=spend(ws) - run_spent,
                   spent=run_spent, refresh=lambda: spend(ws, run_id), read_at=time.monotonic())

    def reached(self) -> str | None:
        if self.run is None and self.project is None:
            return None
        if self.refresh is not None and time.monotonic() - self.read_at >= self.refresh_seconds:
            self.spent, self.read_at = self.refresh(), time.monotonic()
        if self.run is not None and self.spent >= self.run:
            return f"the run's budget of ${self.run:g} is spent"
        if self.project is not None and self.spent_before + self.spent >= self.project:
            return f"the project's budget of ${self.project:g} is spent"
        return None

    def left(self) -> float | None:
        """What may still be spent (None: no cap)."""
        caps = ([self.run - self.spent] if self.run is not None else []) + \
            ([self.project - self.spent_before - self.spent] if self.project is not None else [])
        return max(0.0, min(caps)) if caps else None

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "project": self.project, "spent": round(self.spent, 6),
                "project_spent": round(self.spent_before + self.spent, 6), "stopped": self.reached()}


@dataclass
class AnnotatorReport:
    name: str
    version: str
    asked: int = 0
    voted: int = 0
    abstained: int = 0
    failed: int = 0
    unasked: int = 0  # not asked: the budget was spent
    cost: float = 0.0
    stopped: str | None = None
    errors: Counter = field(default_factory=Counter)  # by kind: the error's type (and HTTP status)
    examples: dict = field(default_factory=dict)  # one message per kind
    notes: dict | None = None  # what the annotator chose for itself (e.g. a classifier's features)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("errors", "examples")}
        data["errors"] = dict(self.errors.most_common(5))
        data["error_examples"] = {kind: self.examples[kind] for kind in data["errors"] if kind in self.examples}
        return data


    def add(self, other: AnnotatorReport | dict[str, Any]) -> None:
        """Count another part of the same annotator's work in (a report, or one's as_dict())."""
        other = other if isinstance(other, dict) else other.as_dict() | {"errors": other.errors}
        for key in ("asked", "voted", "abstained", "failed", "unasked", "cost"):
            setattr(self, key, getattr(self, key) + other.get(key, 0))
        self.errors.update(other["errors"])
        self.examples = other.get("error_examples", {}) | self.examples
        self.stopped = self.stopped or other["stopped"]
        self.notes = self.notes or other.get("notes")


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
    budget: Budget | None = None,
    breakers: dict[str, Breaker] | None = None,
) -> list[AnnotatorReport]:
    """Ask every asker about the items it has no vote on; all askers run side by side. `breakers` carries
    each annotator's failures in a row from one call to the next (the stages of one run).

    Answers go to the store through a short queue: while the store is busy every asker waits
    (no call is made whose answer could not be kept), and when it refuses for good the askers
    are stopped at once; only the answers in flight and in the queue are lost."""
    with collector.for_calls():  # many calls: see labeler.collector
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(MIN_WRITE_BACKLOG, sum(a.max_concurrency for a in askers)))
        writer = asyncio.create_task(_write_votes(ws, queue, run_id))
        asking = asyncio.ensure_future(asyncio.gather(*(_run_one(ws, a, item_ids, queue, on_answer, budget, breakers)
                                                        for a in askers)))
        try:
            await asyncio.wait({writer, asking}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():  # the writer ends early only when the store refused for good
                asking.cancel()
                with suppress(asyncio.CancelledError):
                    await asking
                writer.result()
            reports = asking.result()
            await queue.put(None)
            await writer
        finally:
            for task in (asking, writer):
                task.cancel()
        return list(reports)


@dataclass
class Breaker:
    """One annotator's failures in a row over a whole run, whichever stage asked: a model that hangs in
    the calibration stage is not asked 20 more times in its own."""

    permanent_streak: int = 0
    failure_streak: int = 0
    any_success: bool = False
    tripped: str | None = None


async def _run_one(ws, asker: Asker, item_ids, queue, on_answer, budget: Budget | None = None,
                   breakers: dict[str, Breaker] | None = None) -> AnnotatorReport:
    breaker = (breakers if breakers is not None else {}).setdefault(asker.name, Breaker())
    report = AnnotatorReport(asker.name, asker.version, notes=getattr(asker, "choice", None), stopped=breaker.tripped)
    items = pending_items(ws, asker, item_ids)
    report.asked = len(items)
    if hasattr(asker, "prefetch") and not breaker.tripped:
        asker.prefetch(items)
    limit = asyncio.Semaphore(asker.max_concurrency)

    def failed(exc: Exception, count_in_breaker: bool = True) -> None:
        message, kind = _describe(exc), error_kind(exc)
        report.failed += 1
        report.errors[kind] += 1
        report.examples.setdefault(kind, message)
        if count_in_breaker:
            breaker.failure_streak += 1
            if isinstance(exc, PermanentError):
                breaker.permanent_streak += 1
                if breaker.permanent_streak >= STOP_AFTER_PERMANENT and not breaker.any_success:
                    breaker.tripped = breaker.tripped or f"stopped after {STOP_AFTER_PERMANENT} permanent errors: {message}"
            if breaker.failure_streak >= STOP_AFTER_FAILURES:
                breaker.tripped = breaker.tripped or f"stopped after {STOP_AFTER_FAILURES} failures in a row: {message}"
            report.stopped = report.stopped or breaker.tripped
        if on_answer:
            on_answer(asker.name, None, message)

    async def answered(item: ItemRef, answer: Answer) -> None:
        breaker.permanent_streak = breaker.failure_streak = 0
        breaker.any_success = True
        report.voted += 1
        report.abstained += answer.label is None
        report.cost += answer.cost
        if budget is not None:
            budget.spent += answer.cost
        await queue.put((asker, item, answer))
        if on_answer:
            on_answer(asker.name, answer, None)

    async def one(item: ItemRef) -> None:
        async with limit:
            if budget is not None and (spent := budget.reached()):
                report.unasked += 1
                report.stopped = report.stopped or f"stopped: {spent}"
                return
            if report.stopped:
                report.failed += 1
                return
            started = time.perf_counter()
            try:
                answer = await asker.ask(item)
            except Exception as exc:  # a failed vote is reported, never the end of the run
                failed(exc)
                return
            if answer.latency_ms is None:
                answer.latency_ms = (time.perf_counter() - started) * 1000
            await answered(item, answer)

    batches = getattr(asker, "batches", None)
    if batches is None:
        await asyncio.gather(*(one(item) for item in items))
        return report
    # One provider batch for the items: what the budget covers is sent; a question the batch did not
    # answer is a failed vote (not a sign of a dead model: the breaker counts only failures to send).
    if budget is not None and (spent := budget.reached()):
        report.unasked, report.stopped = len(items), report.stopped or f"stopped: {spent}"
        return report
    if report.stopped:
        report.failed = len(items)
        return report
    async for item, answer in batches.answers(items, budget.left() if budget is not None else None):
        if answer is None:
            report.unasked += 1
            report.stopped = report.stopped or "stopped: the budget does not cover the rest of the batch"
        elif isinstance(answer, Exception):
            failed(answer, count_in_breaker=not isinstance(answer, BatchFailure))
        else:
            await answered(item, answer)
    return report


def _connection_failure(exc: BaseException) -> OSError | None:
    """The refused, reset or unresolvable connection behind an error, if that is what it was: litellm
    reports one as an InternalServerError (500), as if the server had answered."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, socket.gaierror)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def error_kind(exc: BaseException) -> str:
    """What kind of failure, without the details that differ call by call (timings, ids)."""
    if (failure := _connection_failure(exc)) is not None:
        return f"{type(failure).__name__} (no answer from the server)"
    cause = exc.__cause__ if isinstance(exc, PermanentError) and exc.__cause__ else exc
    status = getattr(cause, "status_code", None)
    return f"{type(cause).__name__}" + (f" ({status})" if status else "")


def _describe(exc: Exception) -> str:
    if (failure := _connection_failure(exc)) is not None:
        return f"could not reach the server: {type(failure).__name__}: {str(failure)[:200]}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


async def _write_votes(ws: Workspace, queue: asyncio.Queue, run_id: int | None) -> None:
    """Write whatever has arrived, in one transaction, until told to stop (None)."""
    stop = False
    loop = asyncio.get_running_loop()
    # Its own thread: the default pool may be full of local-model calls, and the loop must not block.
    with ThreadPoolExecutor(1, thread_name_prefix="labeler-writer") as thread:
        while not stop:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            if batch[-1] is None:
                stop = True
                batch.pop()
            if batch:
                await loop.run_in_executor(thread, _store_retrying, ws, batch, run_id)


def _store_busy(exc: BaseException) -> bool:
    """A store that is locked, restarting or cut off may come back; a broken constraint will not."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _store_retrying(ws: Workspace, batch: list, run_id: int | None) -> None:
    keeping(lambda: _store(ws, batch, run_id), f"{len(batch)} answers in hand were not kept")


def keeping(write: Callable[[], Any], lost: str) -> Any:
    """`write()`, retried while the store is busy; a store that refuses for good stops the run, saying what
    was lost."""
    try:
        for attempt in Retrying(stop=stop_after_delay(STORE_RETRY_SECONDS), retry=retry_if_exception(_store_busy),
                                wait=wait_random_exponential(multiplier=0.2, max=5), reraise=True):
            with attempt:
                return write()
    except DBAPIError as exc:
        raise LabelerError(f"the store refused: {exc.orig}; asking stopped, rerun to finish ({lost})") from exc


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
