"""Provider batch APIs (`batch: true`) through litellm's file and batch calls to the local test server."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from labeler.annotators.runner import Budget, pending_items, run_askers
from labeler.store import models
from labeler.store.workspace import open_workspace
from prompts.annotators import build_askers
from routing.flow import estimate, run_project
from tests.llm_server import LLMServer
from tests.test_annotators import LABELS, llm, project, run, votes
from tests.test_routing_run import calls, decisions, make_project


@pytest.fixture(scope="module")
def server():
    with LLMServer(batch_seconds=0.1) as s:
        yield s


def batched(name, model, **extra):
    return llm(name, model, batch="true", batch_poll_seconds=0.02, cost_per_1k_tokens=1.0, **extra)


def batch_rows(ws):
    with ws.session() as s:
        return s.execute(select(models.ProviderBatch.batch_id, models.ProviderBatch.status,
                                models.ProviderBatch.requests, models.ProviderBatch.counts)
                         .order_by(models.ProviderBatch.id)).all()


def lines_of(server, batch_id):
    return server.batches[batch_id]["_lines"]


def test_a_stage_goes_as_one_batch_and_a_rerun_pays_nothing(tmp_path, server):
    ws = project(tmp_path, server, batched("gpt", "ok"))
    chats, created = server.by_model.get("ok", 0), len(server.batches)
    report, _ = run(ws)
    [gpt] = report["annotators"]
    assert gpt["voted"] == 30 and gpt["failed"] == 0
    assert len(server.batches) == created + 1 and server.by_model.get("ok", 0) == chats  # no single calls
    [(batch_id, status, requests, counts)] = batch_rows(ws)
    assert status == "completed" and len(requests) == 30 and counts["answered"] == 30
    sent = lines_of(server, batch_id)[0]
    assert sent["url"] == "/v1/chat/completions" and sent["body"]["model"] == "ok" and sent["body"]["logprobs"]
    rows = votes(ws)
    assert all(label == LABELS[int(ext[1:]) % 3] for ext, label, *_ in rows)
    assert all(probs[label] > 0.9 for _, label, probs, *_ in rows)  # logprobs come back through the batch
    assert sum(r.cost for r in rows) == pytest.approx(30 * 101 / 1000)  # the price set: cost_per_1k_tokens
    again, _ = run(ws)
    assert again["annotators"][0]["asked"] == 0 and len(server.batches) == created + 1


def test_requests_that_fail_inside_a_batch_are_failed_votes_and_a_rerun_asks_only_them(tmp_path, server):
    ws = project(tmp_path, server, batched("gpt", "partfail"))
    report, _ = run(ws)
    [gpt] = report["annotators"]
    assert gpt["voted"] == 20 and gpt["failed"] == 10 and gpt["stopped"] is None  # not a dead model
    [example] = gpt["error_examples"].values()
    assert "batch request failed (400): bad request line" in example
    run(ws)
    first, second = batch_rows(ws)
    assert len(second.requests) == 10 and set(second.requests.values()) < set(first.requests.values())
    assert len(votes(ws)) == 20 + 7  # the second batch's third request fails in its turn


def test_an_expired_batch_keeps_what_was_answered(tmp_path, server):
    ws = project(tmp_path, server, batched("gpt", "expire"))
    report, _ = run(ws)
    [gpt] = report["annotators"]
    assert gpt["voted"] == 15 and gpt["failed"] == 15
    assert "batch_expired" in next(iter(gpt["error_examples"].values()))
    assert [r.status for r in batch_rows(ws)] == ["expired"]


def test_a_batch_that_fails_as_a_whole_fails_every_question_with_its_reason(tmp_path, server):
    ws = project(tmp_path, server, batched("gpt", "invalid"), n_items=6)
    report, _ = run(ws)
    [gpt] = report["annotators"]
    assert gpt["failed"] == 6 and gpt["voted"] == 0
    assert "failed: bad model" in next(iter(gpt["error_examples"].values()))
    assert votes(ws) == []


def test_a_batch_still_running_when_the_wait_ends_is_collected_by_the_next_run(tmp_path):
    with LLMServer(batch_seconds=3600) as slow:
        ws = project(tmp_path, slow, batched("gpt", "ok", batch_max_wait=0.3))
        report, _ = run(ws)
        assert report["annotators"][0]["failed"] == 30
        assert "still in_progress" in next(iter(report["annotators"][0]["error_examples"].values()))
        [batch_id] = slow.batches
        slow.batches[batch_id]["_done_at"] = 0  # the provider finishes
        again, _ = run(ws)
        assert again["annotators"][0]["voted"] == 30 and list(slow.batches) == [batch_id]  # collected, not resent
        assert [r.status for r in batch_rows(ws)] == ["completed"]


@pytest.mark.once
def test_a_run_killed_between_submit_and_collect_collects_on_the_rerun(tmp_path):
    with LLMServer(batch_seconds=3600) as slow:
        ws = project(tmp_path, slow, batched("gpt", "ok"))
        process = subprocess.Popen([sys.executable, "-m", "labeler.cli", "run", "-p", str(tmp_path / "p")],
                                   env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not batch_rows(ws) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        [row] = batch_rows(ws)
        assert row.status == "submitted" and votes(ws) == []
        slow.batches[row.batch_id]["_done_at"] = 0
        report, _ = run(ws)
        assert report["annotators"][0]["voted"] == 30 and len(slow.batches) == 1  # paid once
        assert [r.status for r in batch_rows(ws)] == ["completed"]


def test_a_budget_sends_only_what_it_covers(tmp_path, server):
    ws = project(tmp_path, server, batched("gpt", "ok"))
    [asker], _ = build_askers(ws)
    with ws.session() as s:
        ids = list(s.scalars(select(models.Item.id)))
    items = pending_items(ws, asker, ids)
    _, cost = asker.priced(items)
    assert cost > 0
    [report] = asyncio.run(run_askers(ws, [asker], ids, budget=Budget(run=cost / 30 * 10.5)))
    [(batch_id, *_)] = batch_rows(ws)
    assert len(lines_of(server, batch_id)) == 10 and report.voted == 10 and report.unasked == 20
    assert "budget" in report.stopped


def test_the_batch_price_is_litellms_batch_price(tmp_path, server):
    ws = project(tmp_path, server, llm("online", "gpt-4o-mini") + batched("batched", "gpt-4o-mini").replace(
        "    cost_per_1k_tokens: 1.0\n", ""))
    online, batch = build_askers(ws)[0]
    assert batch.config.batch and not online.config.batch
    assert batch.price(1000, 10) == pytest.approx(online.price(1000, 10) / 2)
    dry = {row["annotator"]: row for row in estimate(ws, [online, batch])["annotators"]}  # what --dry-run prints
    assert dry["batched"]["batch"] and dry["batched"]["tokens"] == dry["online"]["tokens"] > 0
    assert dry["batched"]["cost"] == pytest.approx(dry["online"]["cost"] / 2, rel=1e-3)
    report, _ = run(ws, ["batched"])
    assert report["annotators"][0]["cost"] == pytest.approx(30 * batch.price(100, 1))


def test_the_cascade_sends_one_batch_a_stage_and_asks_the_dear_one_only_where_needed(tmp_path, server):
    ws = make_project(tmp_path, server, [("cheap", "noisy-0.15", 0), ("dear", "ok", 1)])
    config = tmp_path / "p" / "labeler.yaml"
    config.write_text(config.read_text().replace("max_retries: 2}", "max_retries: 2, batch: true, batch_poll_seconds: 0.02}"))
    ws = open_workspace(tmp_path / "p")
    before, chats = dict(server.batches), (calls(server, "noisy-0.15"), calls(server, "ok"))
    report = run_project(ws, build_askers(ws)[0])
    sent = [server.batches[b] for b in server.batches if b not in before]
    by_model = {}
    for batch in sent:
        by_model.setdefault(batch["_lines"][0]["body"]["model"], []).append(len(batch["_lines"]))
    assert report["policy"]["lambda"] is not None
    cheap, dear = by_model["noisy-0.15"], by_model["ok"]
    assert sum(cheap) >= 200 + 160 and sum(dear) < sum(cheap)  # the dear model saw only what was left
    assert (calls(server, "noisy-0.15"), calls(server, "ok")) == chats  # no single calls
    auto = [r for r in decisions(ws) if r.state == models.State.auto]
    assert len(auto) > 100 and sum(r.label == LABELS[int(r.external_id[1:]) % 2] for r in auto) / len(auto) >= 0.9


def test_a_store_that_refuses_the_batch_record_stops_the_run_and_says_what_was_sent(tmp_path, server, monkeypatch):
    from sqlalchemy import text

    from labeler.annotators import runner
    from labeler.errors import LabelerError

    monkeypatch.setattr(runner, "STORE_RETRY_SECONDS", 0.5)
    ws = project(tmp_path, server, batched("gpt", "ok") + batched("other", "noisy-0.2"))
    askers, _ = build_askers(ws)
    with ws.engine.begin() as c:  # the store refuses every new batch row
        if c.dialect.name == "sqlite":
            c.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON providerbatch BEGIN SELECT RAISE(ABORT, 'no'); END"))
        else:
            c.execute(text("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'no'; END $$ "
                           "LANGUAGE plpgsql"))
            c.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON providerbatch EXECUTE FUNCTION refuse()"))
    created = len(server.batches)
    with pytest.raises(LabelerError, match=r"provider batch batch_\d+ was sent and not recorded"):
        run_project(ws, askers)
    assert len(server.batches) - created <= 2  # each annotator's one batch in flight, nothing after
    assert votes(ws) == []
