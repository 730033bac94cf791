"""`labeler worker` processes on PostgreSQL: a run shared by two workers, and one killed mid-run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from labeler.store import models
from tests.llm_server import LLMServer
from tests.test_cli import labeler
from tests.test_routing_run import make_project

CHEAP, DEAR = "noisy-0.15", "ok"


def start_worker(root, url, log, stalled_after=6):
    return subprocess.Popen(
        [sys.executable, "-m", "labeler.cli", "worker", "--concurrency", "4", "--heartbeat", "1",
         "--stalled-after", str(stalled_after), "-p", str(root)],
        env=dict(os.environ, LABELER_DATABASE_URL=url), stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def votes(ws) -> int:
    with ws.session() as s:
        return s.scalar(select(func.count()).select_from(models.Vote))


def batch_workers(ws) -> set[str]:
    with ws.session() as s:
        return {r.stats["worker"] for r in s.scalars(select(models.Run).where(models.Run.kind == "batch"))}


def finished_runs(ws) -> list:
    with ws.session() as s:
        return s.scalars(select(models.Run).where(models.Run.kind == "run", models.Run.finished_at.is_not(None))).all()


def test_run_needs_postgresql_for_workers(tmp_path):
    sqlite = {"LABELER_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    with LLMServer() as server:
        ws = make_project(tmp_path, server, [("dear", DEAR, 0)], n_items=30, calibration=20, honeypots=0,
                          url=sqlite["LABELER_DATABASE_URL"])
    result = labeler("run", "--distributed", "-p", ws.project.root, check=False, env=sqlite)
    assert result.returncode == 1 and "needs PostgreSQL" in result.stderr
    assert "needs PostgreSQL" in labeler("worker", "-p", ws.project.root, check=False, env=sqlite).stderr


@pytest.mark.postgres
def test_two_workers_share_a_run_and_a_killed_one_loses_nothing(tmp_path, pg_url):
    with LLMServer(latency=0.1) as server:
        ws = make_project(tmp_path, server, [("cheap", CHEAP, 0), ("dear", DEAR, 1)], url=pg_url)
        root = ws.project.root
        env_url = {"LABELER_DATABASE_URL": pg_url}
        log = (tmp_path / "workers.log").open("w")
        first, second = start_worker(root, pg_url, log), start_worker(root, pg_url, log)
        try:
            queued = json.loads(labeler("run", "--distributed", "--json", "-p", root, env=env_url).stdout)
            assert queued["job"] > 0  # it returned at once; the workers do the run
            wait_for(lambda: len(batch_workers(ws)) == 2, 120, "both workers to finish a batch")
            assert not finished_runs(ws)
            os.kill(first.pid, signal.SIGKILL)  # mid-run: its jobs stay in `doing` until swept
            wait_for(lambda: finished_runs(ws), 240, "the run to finish")
            status = json.loads(labeler("status", "--json", "-p", root, env=env_url).stdout)
        finally:
            for worker in (first, second):
                worker.terminate()
            for worker in (first, second):
                try:
                    worker.wait(15)
                except subprocess.TimeoutExpired:
                    worker.kill()
            log.close()
        with ws.session() as s:
            cheap = s.scalar(select(func.count()).select_from(models.Vote).join(models.Annotator)
                             .where(models.Annotator.name == "cheap"))
            batches = s.scalars(select(models.Run).where(models.Run.kind == "batch")).all()
            states = dict(s.execute(select(models.Decision.state, func.count()).group_by(models.Decision.state)).all())
        # Every item has its decision; the cheap annotator voted on every calibration and open item once
        # (the unique key forbids twice); calls beyond the votes come only from the killed worker's batches
        # in hand (4 jobs of 50 items), asked again by the survivor.
        assert states[models.State.auto] + states.get(models.State.needs_review, 0) == 160
        assert cheap >= 200 + 160
        assert server.by_model[CHEAP] - cheap <= 4 * 50
        assert any(b.stats["worker"].endswith(f"-{second.pid}") for b in batches[-3:])  # the survivor finished it
        assert status["jobs"]["label_batch"].get("succeeded", 0) >= len(batches) - 4
        assert "doing" not in status["jobs"]["label_batch"] and "todo" not in status["jobs"]["label_batch"]


def test_the_job_queue_connects_with_the_stores_own_password():
    from sqlalchemy.engine import make_url

    from labeler.annotators.jobs import conninfo
    from labeler.errors import LabelerError

    # SQLAlchemy's URL hides the password when printed; the queue must get the real one.
    assert conninfo(make_url("postgresql+psycopg://ann:s3cret@db:5432/labels")) == "postgresql://ann:s3cret@db:5432/labels"
    with pytest.raises(LabelerError, match="needs PostgreSQL"):
        conninfo(make_url("sqlite:///x.db"))


@pytest.mark.postgres
def test_a_run_budget_holds_across_workers(tmp_path, pg_url):
    with LLMServer(latency=0.2) as server:
        ws = make_project(tmp_path, server, [("dear", DEAR, 0)], url=pg_url)
        root = ws.project.root
        text = (root / "labeler.yaml").read_text().replace("max_retries: 2}", "max_retries: 2, max_concurrency: 2, "
                                                                               "cost_per_1k_tokens: 1.0}")
        (root / "labeler.yaml").write_text(text + "budget: {run: 2.0}\n")
        log = (tmp_path / "workers.log").open("w")
        # No job is taken for stalled here (a busy machine may miss heartbeats): one cascade, one run.
        workers = [start_worker(root, pg_url, log, stalled_after=300) for _ in range(2)]
        try:
            labeler("run", "--distributed", "-p", root, env={"LABELER_DATABASE_URL": pg_url})
            wait_for(lambda: finished_runs(ws), 240, "the run to finish")
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait(15)
            log.close()
        [run] = finished_runs(ws)
        with ws.session() as s:
            costs = s.scalars(select(models.Vote.cost).where(models.Vote.run_id == run.id)).all()
    per_call = max(costs)  # about $0.1: some 100 tokens at $1 per 1,000
    # Without a shared budget every batch would ask all its items: 360 calls, some $36. With it, the
    # workers stop within a refresh (1 s) of the cap: 8 batches at 2 calls in flight, 0.2 s a call.
    assert run.stats["budget"]["stopped"].startswith("the run's budget of $2 is spent")
    assert 2.0 <= sum(costs) <= 2.0 + 8 * 2 * 6 * per_call and len(costs) < 200
    assert sum(a["unasked"] for a in run.stats["annotators"]) > 0
