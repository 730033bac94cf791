"""The cascade in `labeler run`: calibration on gold, cheap annotators first, honeypots."""

import pytest
from sqlalchemy import select

from labeler.data.imports import import_gold, import_items
from labeler.store import models
from labeler.store.workspace import open_workspace
from prompts.annotators import build_askers
from routing.flow import run_project
from tests.conftest import write_file, write_project
from tests.llm_server import LLMServer

LABELS = ["positive", "negative"]


@pytest.fixture(scope="module")
def server():
    with LLMServer() as s:
        yield s


def make_project(tmp_path, server, annotators, *, n_items=400, calibration=200, honeypots=40, hp_marker=False,
                 wrong_gold=(), target=0.9, url=None, stop_when_futile=True):
    yaml_text = (f"name: cascade\nlabels: {{positive: liked it, negative: did not like it}}\nfields: [text]\n"
                 f"routing: {{target_accuracy: {target}, confidence: 0.9, stop_when_futile: {str(stop_when_futile).lower()}}}\n"
                 "annotators:\n")
    for name, model, rank in annotators:
        yaml_text += (f"  - {{name: {name}, kind: llm, model: openai/{model}, api_base: '{server.base_url}', "
                      f"cost_rank: {rank}, max_retries: 2}}\n")
    root = write_project(tmp_path / "p", yaml_text=yaml_text)
    ws = open_workspace(root, url=url)
    text = lambda n: f"item {n} is {LABELS[n % 2]}" + (" [hp]" if hp_marker and calibration <= n < calibration + honeypots else "")  # noqa: E731
    import_items(ws, write_file(tmp_path / "items.csv", "id,text\n" + "".join(f"i{n},{text(n)}\n" for n in range(n_items))))
    gold = "id,label,split\n"
    for n in range(calibration + honeypots):
        label = LABELS[(n + (n in wrong_gold)) % 2]
        gold += f"i{n},{label},{'calibration' if n < calibration else 'honeypot'}\n"
    assert import_gold(ws, write_file(tmp_path / "gold.csv", gold)).committed
    return ws


def decisions(ws):
    with ws.session() as s:
        return s.execute(select(models.Item.external_id, models.Decision.label, models.Decision.state,
                                models.Decision.confidence)
                         .join(models.Decision, models.Decision.item_id == models.Item.id)
                         .where(models.Decision.state != models.State.gold)).all()


def calls(server, model):
    return server.by_model.get(model, 0)


def test_cheap_annotator_first_and_the_dear_one_only_where_needed(tmp_path, server, store_url):
    ws = make_project(tmp_path, server, [("cheap", "noisy-0.15", 0), ("dear", "ok", 1)], url=store_url)
    cheap_before, dear_before = calls(server, "noisy-0.15"), calls(server, "ok")
    askers, _ = build_askers(ws)
    assert [a.name for a in askers] == ["cheap", "dear"]
    report = run_project(ws, askers)
    policy = report["policy"]
    assert policy["lambda"] is not None and policy["accuracy_bound"] >= 0.9
    rows = decisions(ws)
    assert len(rows) == 160
    auto = [r for r in rows if r.state == models.State.auto]
    assert len(auto) > 100
    accuracy = sum(r.label == LABELS[int(r.external_id[1:]) % 2] for r in auto) / len(auto)
    assert accuracy >= 0.9
    # The dear annotator saw the calibration gold and only the items the cheap one could not settle.
    cheap_calls = calls(server, "noisy-0.15") - cheap_before
    dear_calls = calls(server, "ok") - dear_before
    assert cheap_calls >= 200 + 160
    assert dear_calls < cheap_calls
    assert all(0.5 <= r.confidence <= 1 for r in auto)


@pytest.mark.parametrize("stop_when_futile", [True, False])
def test_items_no_annotator_left_could_lift_go_to_review_early_unless_told_otherwise(tmp_path, server, stop_when_futile):
    # Three annotators, each wrong on its own tenth of the items: two that agree settle an item;
    # after a disagreement one more vote cannot reach the level, so the third is not asked.
    names = ["a", "b", "c"]
    ws = make_project(tmp_path, server, [(n, f"noisy-0.1-{n}", rank) for rank, n in enumerate(names)], target=0.95,
                      stop_when_futile=stop_when_futile)
    report = run_project(ws, build_askers(ws)[0])
    assert report["policy"]["lambda"] is not None
    with ws.session() as s:
        ids = dict(s.execute(select(models.Annotator.name, models.Annotator.id)).all())
        voted_by_c = set(s.scalars(select(models.Vote.item_id).where(models.Vote.annotator_id == ids["c"])))
        rows = s.execute(select(models.Decision.item_id, models.Decision.state, models.Decision.details)
                         .where(models.Decision.state.in_([models.State.auto, models.State.needs_review]))).all()
    settled_early = {i for i, state, details in rows if state == models.State.auto and details["stage"] < 2}
    routed = {i for i, state, _ in rows if state == models.State.needs_review}
    assert settled_early and routed
    assert not settled_early & voted_by_c  # nobody pays for a vote after the item is settled
    if stop_when_futile:
        assert report["sent_to_review_early"] == len(routed - voted_by_c) > 0
    else:
        assert report["sent_to_review_early"] == 0 and routed <= voted_by_c


def test_without_enough_calibration_gold_nothing_is_automatic(tmp_path, server):
    ws = make_project(tmp_path, server, [("dear", "ok", 0)], n_items=60, calibration=10, honeypots=0)
    report = run_project(ws, build_askers(ws)[0])
    assert "at least 20 are needed" in report["policy"]["reason"]
    assert {r.state for r in decisions(ws)} == {models.State.needs_review}
    assert all(r.label == LABELS[int(r.external_id[1:]) % 2] for r in decisions(ws))  # the best guess is kept


def test_a_bad_day_on_honeypots_sets_the_annotators_votes_aside(tmp_path, server):
    ws = make_project(tmp_path, server, [("moody", "badday", 0), ("steady", "ok", 1)], hp_marker=True)
    report = run_project(ws, build_askers(ws)[0])
    assert report["honeypots"]["moody"]["bad_day"] is True
    assert report["honeypots"]["steady"].get("bad_day") is False
    assert report["bad_day"] == ["moody"]
    rows = decisions(ws)
    # Nothing was accepted on the moody annotator's word: every automatic label came after "steady".
    with ws.session() as s:
        details = [d for (d,) in s.execute(select(models.Decision.details).where(models.Decision.state == models.State.auto))]
    assert details and all(d["stage"] == 1 for d in details)
    assert all(r.label == LABELS[int(r.external_id[1:]) % 2] for r in rows if r.state == models.State.auto)


def test_honeypots_every_annotator_fails_point_at_the_guideline(tmp_path, server):
    # Ten honeypots (all of them ride along) and a cheap stage too weak to settle items alone,
    # so both annotators see every honeypot; two honeypots carry a wrong gold label.
    ws = make_project(tmp_path, server, [("a", "noisy-0.3", 0), ("b", "ok", 1)], honeypots=10, wrong_gold={201, 202},
                      target=0.95)
    report = run_project(ws, build_askers(ws)[0])
    assert {"i201", "i202"} <= set(report["guideline_suspects"])


def test_a_second_run_asks_nothing_new_and_keeps_decisions(tmp_path, server):
    ws = make_project(tmp_path, server, [("dear", "ok", 0)], n_items=300)
    run_project(ws, build_askers(ws)[0])
    before = calls(server, "ok")
    first = sorted(decisions(ws))
    report = run_project(ws, build_askers(ws)[0])
    assert calls(server, "ok") - before <= 10  # at most a few fresh honeypots
    assert sorted(decisions(ws)) == first
    assert report["annotators"][0]["asked"] <= 10


def test_a_run_never_undoes_what_reviewers_did_while_it_ran(tmp_path, server, store_url):
    """Reviewers confirm and lease items after the run fixed its item list, before it decides."""
    from labeler.store.models import Role
    from labeler.store.users import add_user, authenticate
    from review_ui.answers import submit
    from review_ui.queue import lease_next

    ws = make_project(tmp_path, server, [("coin", "noisy-0.45", 0)], n_items=120, calibration=60, honeypots=0,
                      target=0.99, url=store_url)
    run_project(ws, build_askers(ws)[0])
    assert {r.state for r in decisions(ws)} == {models.State.needs_review}
    for name in ("ann", "bob", "cy"):
        add_user(ws, name, Role.reviewer, password="long-password")
    ann, bob, cy = (authenticate(ws, n, "long-password") for n in ("ann", "bob", "cy"))

    from routing.flow import run_askers
    touched = {}

    def asking(askers, item_ids, run_id):  # the run's own asking, with reviewers at work beside it
        if not touched:
            for k in range(3):
                lease = lease_next(ws, ann, overlap=2, gold_share=0)
                submit(ws, ann, lease.item_id, label="positive", client_id=f"a{k}", overlap=2)
                assert lease_next(ws, bob, overlap=2, gold_share=0).item_id == lease.item_id
                submit(ws, bob, lease.item_id, label="positive", client_id=f"b{k}", overlap=2)
                touched[lease.item_id] = "confirmed"
            touched[lease_next(ws, cy, overlap=2, gold_share=0).item_id] = "leased"
        import asyncio
        return asyncio.run(run_askers(ws, askers, item_ids, run_id=run_id))

    report = run_project(ws, build_askers(ws)[0], asking=asking)
    assert report["decisions"]["kept_by_reviewers"] == 4
    with ws.session() as s:
        for item_id, what in touched.items():
            d = s.get(models.Decision, item_id)
            if what == "confirmed":
                assert (d.state, d.label, d.review_count) == (models.State.confirmed, "positive", 2)
                assert [a["user"] for a in d.details["decided_by"]] == ["ann", "bob"]
            else:  # the lease stands, and the item is still the reviewer's to answer
                assert d.state == models.State.needs_review and d.review_count == 1 and d.details["run"] != report["run_id"]


def test_a_run_ends_with_a_certificate_and_a_score_drift_check(tmp_path, server):
    ws = make_project(tmp_path, server, [("cheap", "noisy-0.15", 0), ("dear", "ok", 1)])
    report = run_project(ws, build_askers(ws)[0])
    certificate = report["policy"]["certificate"]
    assert certificate["guarantee"] == "high_probability" and certificate["calibration_items"] == 200
    assert 0 < certificate["gold_accepted"] <= 200 and certificate["gold_accepted_wrong"] >= 0
    assert set(report["score_drift"]) >= {"statistic", "p_value", "flagged"}
    assert not report["score_drift"]["flagged"]  # the gold is a fair draw of the items here
    import io
    import json

    from labeler.data.exports import write_export

    out = io.StringIO()
    write_export(ws, out, "jsonl")
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    auto = [r for r in rows if r["state"] == "auto"]
    assert auto and all(r["certified"] == {"guarantee": "high_probability", "level": report["policy"]["lambda"],
                                           "target_accuracy": 0.9, "confidence": 0.9} for r in auto)
    assert all(r["certified"] is None for r in rows if r["state"] != "auto")  # what a user needs to trust a row


def test_calibrate_says_what_it_needs_first_then_what_more_gold_would_buy(tmp_path, server):
    import json

    from tests.test_cli import labeler

    ws = make_project(tmp_path, server, [("cheap", "noisy-0.15", 0), ("dear", "ok", 1)], target=0.95)
    before = calls(server, "noisy-0.15")
    early = labeler("calibrate", "-p", ws.project.root)
    assert "needs at least 20 calibration gold items voted by every annotator" in " ".join(early.stderr.split())
    assert "cheap 0, dear 0" in early.stderr and calls(server, "noisy-0.15") == before  # asked nobody
    labeler("run", "--limit", "0", "-p", ws.project.root)  # asks only the calibration gold
    assert calls(server, "noisy-0.15") - before == 200
    report = json.loads(labeler("calibrate", "--json", "-p", ws.project.root).stdout)
    plan = report["plan"]
    assert 0.9 <= plan["max_target"] <= 0.99 and set(plan["auto_fraction_at"]) == {"0.99", "0.95", "0.9", "0.85"}
    sizes = [row["gold_items"] for row in plan["gold_plan"]]
    assert sizes == sorted(sizes) and sizes[0] == 200 and sizes[-1] >= 600
    assert plan["experts_next"] == []  # no new item has votes yet
    text = labeler("calibrate", "-p", ws.project.root).stdout
    assert "this gold certifies targets up to" in text and "with more gold, at 0.95" in text


def test_runs_are_numbered_as_the_project_counts_them(tmp_path, server):
    """The first run of a fresh project was called "run 4" (the store's row id, classifier trainings counted)."""
    ws = make_project(tmp_path, server, [("cheap", "noisy-0.15", 0)], n_items=260, calibration=200, honeypots=0)
    with ws.session() as s:  # another project's runs and other kinds of run share the table
        s.add_all([models.Run(project_id=ws.project_id, kind="train"), models.Run(project_id=ws.project_id, kind="train")])
    first = run_project(ws, build_askers(ws)[0])
    second = run_project(ws, build_askers(ws)[0])
    assert (first["run"], second["run"]) == (1, 2) and first["run_id"] > 2


def test_the_collector_is_tuned_only_while_a_run_asks(tmp_path, server):
    """Each call leaves thousands of short-lived objects and each full pass of the collector walked all the
    imports left: while asking, what existed before is frozen and the first generation is larger; nested runs
    keep it so until the last ends, and then the collector is as it was."""
    import asyncio
    import gc

    from labeler.annotators.runner import run_askers
    from labeler.collector import FIRST_GENERATION, for_calls

    ws = make_project(tmp_path, server, [("cheap", "ok", 0)], n_items=30, calibration=10, honeypots=0)
    with ws.session() as s:
        item_ids = list(s.scalars(select(models.Item.id)))
    before = gc.get_threshold(), gc.get_freeze_count()
    seen = []
    asyncio.run(run_askers(ws, build_askers(ws)[0], item_ids,
                           on_answer=lambda *_: seen.append((gc.get_threshold()[0], gc.get_freeze_count()))))
    assert len(seen) == 30
    assert all(threshold == FIRST_GENERATION and frozen > before[1] for threshold, frozen in seen)
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    with for_calls():
        with for_calls():
            pass
        assert gc.get_threshold()[0] == FIRST_GENERATION and gc.get_freeze_count() > before[1]
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
