"""Faults outside the program: a full disk, a read-only store, a database connection cut mid-run."""

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select, text

from labeler.data.imports import CHUNK_ROWS
from labeler.store import models
from tests.conftest import write_file, write_project
from tests.llm_server import LLMServer
from tests.test_cli import labeler
from tests.test_routing_run import make_project


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB filesystem (tmpfs), for a disk that fills up; needs the right to mount, as root in CI."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_reported_whole_chunks_stay_and_a_rerun_finishes(tmp_path, tiny_disk):
    root = write_project(tiny_disk / "proj")
    sqlite = {"LABELER_DATABASE_URL": f"sqlite:///{tiny_disk / 'store.db'}"}
    labeler("status", "-p", root, env=sqlite)  # the store exists and fits
    subprocess.run(["mount", "-o", "remount,size=3m", str(tiny_disk)], check=True)  # room for a few chunks
    rows = "".join(f"i{k},{'a long review text ' * 20}{k}\n" for k in range(20_000))  # ~8 MB
    items = write_file(tmp_path / "items.csv", "id,text\n" + rows)
    result = labeler("import", "items", items, "-p", root, check=False, env=sqlite)
    message = " ".join(result.stderr.split())
    assert result.returncode == 1 and "database or disk is full" in message and "Traceback" not in message
    assert "importing the file again finishes it" in message
    written = json.loads(labeler("status", "--json", "-p", root, env=sqlite).stdout)["items"]
    assert 0 < written < 20_000 and written % CHUNK_ROWS == 0  # each chunk is a transaction: whole chunks only
    assert f"after {written} items" in message
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)  # space freed
    labeler("import", "items", items, "-p", root, env=sqlite)
    assert json.loads(labeler("status", "--json", "-p", root, env=sqlite).stdout)["items"] == 20_000


def test_a_read_only_store_is_reported_clearly(tmp_path):
    root = write_project(tmp_path / "proj")
    path = tmp_path / "store.db"
    labeler("status", "-p", root, env={"LABELER_DATABASE_URL": f"sqlite:///{path}"})
    read_only = {"LABELER_DATABASE_URL": f"sqlite:///file:{path}?mode=ro&uri=true"}
    assert json.loads(labeler("status", "--json", "-p", root, env=read_only).stdout)["items"] == 0  # reading works
    items = write_file(tmp_path / "items.csv", "id,text\na,fine\n")
    result = labeler("import", "items", items, "-p", root, check=False, env=read_only)
    assert result.returncode == 1 and "readonly database" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.postgres
def test_database_connections_cut_mid_run_lose_no_vote(tmp_path, pg_url):
    store_url = pg_url
    with LLMServer(latency=0.02) as server:
        ws = make_project(tmp_path, server, [("dear", "ok", 0)], n_items=300, calibration=100, honeypots=0,
                          url=store_url)
        env = {"LABELER_DATABASE_URL": store_url}
        run = subprocess.Popen([sys.executable, "-m", "labeler.cli", "run", "--json", "-p", str(ws.project.root)],
                               env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        database = ws.engine.url.database
        cuts = 0
        while run.poll() is None and cuts < 3:
            with ws.session() as s:
                votes = s.scalar(select(func.count()).select_from(models.Vote))
            if votes >= 60 * (cuts + 1):  # three times during the run, every connection of the run is cut
                with ws.engine.connect() as c:
                    cut = c.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                         "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).scalar()
                cuts += 1 if cut else 0
        out, errors = run.communicate(timeout=120)
        # The run may stop on a cut; a rerun finishes it, asking only what is missing.
        if run.returncode != 0:
            assert "Traceback" not in errors and "the store refused" in errors
        labeler("run", "--json", "-p", ws.project.root, env=env)
        with ws.session() as s:
            voted = s.scalars(select(models.Vote.item_id)).all()
            states = s.scalars(select(models.Decision.state).where(models.Decision.state != models.State.gold)).all()
    assert cuts >= 1
    assert len(voted) == len(set(voted)) == 300  # every item voted, none twice
    assert len(states) == 200 and server.by_model["ok"] <= 300 + 64  # only calls in flight at a cut were repeated


def test_a_store_that_fails_mid_run_stops_the_spending_at_once(tmp_path, store_url, monkeypatch):
    """The vote table vanishes after the 60th answer: the run stops asking within the calls in flight."""
    from labeler.annotators import runner
    from labeler.errors import LabelerError
    from prompts.annotators import build_askers
    from routing.flow import run_project

    monkeypatch.setattr(runner, "STORE_RETRY_SECONDS", 1.0)
    with LLMServer(latency=0.01) as server:
        ws = make_project(tmp_path, server, [("dear", "ok", 0)], n_items=1200, calibration=1000, honeypots=0,
                          url=store_url)
        answers = []

        def on_answer(name, answer, error):
            answers.append(answer)
            if len(answers) == 60:
                with ws.engine.begin() as c:
                    c.execute(text("DROP TABLE vote" + (" CASCADE" if c.dialect.name == "postgresql" else "")))
                at_failure.append(server.by_model["ok"])

        at_failure = []
        with pytest.raises(LabelerError, match="the store refused"):
            run_project(ws, build_askers(ws)[0], on_answer=on_answer)
        # Calls made after the failure: at most those in flight (16) and the answers waiting to be written (32).
        assert server.by_model["ok"] - at_failure[0] <= 16 + 32


def test_export_reads_a_store_on_a_full_disk(tmp_path, tiny_disk):
    """It needed a writable store: on a full disk it failed with 'disk I/O error'."""
    root = write_project(tiny_disk / "proj")
    sqlite = {"LABELER_DATABASE_URL": f"sqlite:///{tiny_disk / 'store.db'}"}
    labeler("import", "items", write_file(tmp_path / "i.csv", "id,text\n" + "".join(f"i{k},text {k}\n" for k in range(300))),
            "-p", root, env=sqlite)
    subprocess.run(f"dd if=/dev/zero of={tiny_disk / 'fill'} bs=1k count=100000", shell=True, capture_output=True)
    assert labeler("status", "-p", root, env=sqlite, check=False).returncode == 1  # the store cannot be opened to write
    out = tmp_path / "labels.jsonl"
    labeler("export", "-o", out, "-p", root, env=sqlite)
    assert len(out.read_text().splitlines()) == 300
