"""Distributed labeling on procrastinate: `labeler worker` processes on any number of machines share one PostgreSQL.

`labeler run --distributed` defers one cascade job and returns. A worker takes it and runs the
cascade exactly as `labeler run` does, except that each stage's LLM questions become batch jobs
(annotator, prompt version, items) which any worker takes. Jobs run at least once; votes are
written under the unique key (item, annotator, prompt version) and finished calls are cached,
so a batch run twice votes once and pays once. A worker killed mid-job leaves its jobs in
`doing` (procrastinate #1518): every worker sweeps the jobs of workers whose heartbeat stopped
back to `todo`.

The CLI wires in what the jobs need from the upper layers (building askers, the cascade), so
this module stays in the `labeler` layer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from typing import Any, Callable

import procrastinate
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from labeler.annotators.llm import LLMAsker
from labeler.annotators.runner import AnnotatorReport, Budget, pending_items, run_askers
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.models import utcnow
from labeler.store.workspace import Workspace

log = logging.getLogger(__name__)
BATCHES, CASCADES = "labeler-batches", "labeler-cascades"  # procrastinate queues
BATCH_SIZE = 50
POOL_SIZE = 16
POLL_SECONDS = 0.5
FINISHED = ("succeeded", "failed", "cancelled", "aborted")

blueprint = procrastinate.Blueprint()
wiring: dict[str, Any] = {}  # workspace, build_asker, build_askers, run_project: set by `labeler worker`


def conninfo(url) -> str:
    """libpq's form of the store URL (a str, or SQLAlchemy's URL, whose str() would hide the password)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise LabelerError("distributed labeling needs PostgreSQL: set LABELER_DATABASE_URL to a postgresql:// URL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _has_queue(connection) -> bool:
    return connection.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None


def make_app(ws: Workspace) -> procrastinate.App:
    # Room in the pool for the listener, heartbeats and every job at once: a starved heartbeat looks like a dead worker.
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=conninfo(ws.engine.url), min_size=2, max_size=POOL_SIZE))
    app.add_tasks_from(blueprint, namespace="labeler")
    return app


def ensure_schema(ws: Workspace) -> None:
    """Install procrastinate's tables once per database (an advisory lock keeps two starters apart)."""
    conninfo(ws.engine.url)
    with ws.engine.begin() as c:
        c.execute(text("SELECT pg_advisory_xact_lock(hashtext('labeler:procrastinate-schema'))"))
        if not _has_queue(c):
            # Straight to psycopg: with no parameters it leaves the schema's "%" signs alone.
            c.connection.driver_connection.execute(procrastinate.schema.SchemaManager.get_schema())


def enqueue_run(ws: Workspace, *, limit: int | None = None, annotators: list[str] | None = None) -> int:
    """Defer the cascade of a run; returns its job id. Workers do the rest."""
    ensure_schema(ws)
    app = make_app(ws)
    with app.open():
        return app.configure_task("labeler:run_cascade").defer(project=ws.config.name, limit=limit,
                                                              annotators=annotators)


def queue_status(ws: Workspace) -> dict[str, dict[str, int]] | None:
    """Jobs per task and status, or None where there is no job queue (SQLite, or never used)."""
    if ws.engine.dialect.name != "postgresql":
        return None
    with ws.engine.connect() as c:
        if not _has_queue(c):
            return None
        rows = c.execute(text("SELECT task_name, status::text, count(*) FROM procrastinate_jobs "
                              "WHERE task_name LIKE 'labeler:%' GROUP BY 1, 2")).all()
    status: dict[str, dict[str, int]] = {}
    for task, state, count in rows:
        status.setdefault(task.removeprefix("labeler:"), {})[state] = count
    return status


def _workspace(project: str) -> Workspace:
    ws = wiring["workspace"]
    if ws.config.name != project:
        raise LabelerError(f"this worker serves project {ws.config.name!r}, not {project!r}")
    return ws


@blueprint.task(name="label_batch", queue=BATCHES, pass_context=True,
                retry=procrastinate.RetryStrategy(max_attempts=5, exponential_wait=2))
async def label_batch(context, project: str, annotator: str, prompt: str, version: str, items: list[int],
                      run_id: int) -> None:
    ws = _workspace(project)
    config = next((c for c in ws.config.annotators if c.name == annotator), None)
    if config is None:
        raise LabelerError(f"annotator {annotator!r} is not in this worker's labeler.yaml")
    asker = wiring["build_asker"](ws, config, ws.annotator_ids()[annotator], prompt=prompt)
    if asker.version != version:  # e.g. another model in this worker's labeler.yaml
        raise LabelerError(f"{annotator}: this worker builds version {asker.version}, the run asked for {version}")
    [report] = await run_askers(ws, [asker], items, run_id=run_id, budget=Budget.shared(ws, run_id))
    with ws.session() as s:  # the batch's report, for the cascade to add up
        s.add(models.Run(project_id=ws.project_id, kind="batch", finished_at=utcnow(),
                         stats={"run": run_id, "job": context.job.id, "worker": context.worker_name, **report.as_dict()}))


@blueprint.task(name="run_cascade", queue=CASCADES, pass_context=True,
                retry=procrastinate.RetryStrategy(max_attempts=3, wait=5))
def run_cascade(context, project: str, limit: int | None = None, annotators: list[str] | None = None) -> None:
    ws = _workspace(project)
    askers, skipped = wiring["build_askers"](ws, annotators)
    if skipped:
        log.warning("annotators left out: %s", skipped)
    wiring["run_project"](ws, askers, limit=limit, asking=BatchAsking(context.app, ws))


class BatchAsking:
    """Gets a stage's votes from workers: LLM questions as batch jobs, the classifier here."""

    def __init__(self, app: procrastinate.App, ws: Workspace):
        self.app, self.ws = app, ws

    def __call__(self, askers: list, item_ids: list[int], run_id: int) -> list[AnnotatorReport]:
        remote = [a for a in askers if isinstance(a, LLMAsker) and not a.config.batch]  # batches wait here
        local = [a for a in askers if a not in remote]  # cheap and trained where it runs, or batched
        reports = asyncio.run(run_askers(self.ws, local, item_ids, run_id=run_id)) if local else []
        jobs = []
        task = self.app.tasks["labeler:label_batch"]
        for asker in remote:
            todo = [ref.id for ref in pending_items(self.ws, asker, item_ids)]
            batches = [todo[k:k + BATCH_SIZE] for k in range(0, len(todo), BATCH_SIZE)]
            if batches:
                jobs += task.batch_defer(*({"project": self.ws.config.name, "annotator": asker.name,
                                            "prompt": asker.task.name, "version": asker.version, "items": b,
                                            "run_id": run_id} for b in batches))
        self._wait(jobs)
        return reports + self._reports(run_id, remote)

    def _wait(self, job_ids: list[int]) -> None:
        while job_ids:
            with self.ws.engine.connect() as c:
                states = Counter(dict(c.execute(text(
                    "SELECT status::text, count(*) FROM procrastinate_jobs WHERE id = ANY(:ids) GROUP BY 1"),
                    {"ids": job_ids}).all()))
            if sum(states[s] for s in FINISHED) == len(job_ids):
                if states["failed"]:
                    raise LabelerError(f"{states['failed']} of {len(job_ids)} batch jobs failed (see procrastinate_jobs)")
                return
            time.sleep(POLL_SECONDS)

    def _reports(self, run_id: int, askers: list) -> list[AnnotatorReport]:
        Run = models.Run
        with self.ws.session() as s:
            batches = s.scalars(select(Run.stats).where(Run.project_id == self.ws.project_id, Run.kind == "batch",
                                                        Run.stats["run"].as_integer() == run_id)).all()
        reports = []
        for asker in askers:
            report = AnnotatorReport(asker.name, asker.version)
            for stats in batches:
                if (stats["name"], stats["version"]) == (asker.name, asker.version):
                    report.add(stats)
            reports.append(report)
        return reports


async def sweep_stalled(app: procrastinate.App, stalled_after: float) -> None:
    """Put jobs of workers whose heartbeat stopped (killed, frozen) back in the queue, forever."""
    while True:
        await asyncio.sleep(stalled_after / 2)
        try:
            for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
                log.warning("job %s (%s) stalled on a dead worker: retrying it", job.id, job.task_name)
                await app.job_manager.retry_job(job)
        except Exception as exc:  # another worker swept it first, the database restarted...: next round
            log.warning("stalled-job sweep: %s", exc)


async def work(ws: Workspace, *, concurrency: int, heartbeat: float, stalled_after: float,
               on_ready: Callable[[], None] | None = None) -> None:
    """Run a worker until it is stopped (SIGINT or SIGTERM finish the jobs in hand first)."""
    ensure_schema(ws)
    app = make_app(ws)
    async with app.open_async():
        sweeper = asyncio.create_task(sweep_stalled(app, stalled_after))
        if on_ready:
            on_ready()
        try:
            await app.run_worker_async(queues=[BATCHES, CASCADES], concurrency=concurrency,
                                       name=f"{socket.gethostname()}-{os.getpid()}",
                                       update_heartbeat_interval=heartbeat, stalled_worker_timeout=stalled_after,
                                       fetch_job_polling_interval=1.0)
        finally:
            sweeper.cancel()
