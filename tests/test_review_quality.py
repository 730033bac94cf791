"""Human quality control: blind items, no tell for hidden gold, qualification, "I don't know" caps, the overview."""

import itertools
import uuid
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from labeler.data.imports import import_gold
from labeler.store import models
from labeler.store.models import Role
from review_ui import queue as queue_module
from review_ui.app import create_app
from review_ui.cards import BLIND
from tests.conftest import write_file
from tests.review_client import login, make_users
from tests.test_review_queue import needing_review


def web_for(ws, **routing):
    for key, value in routing.items():
        setattr(ws.config.routing, key, value)
    return TestClient(create_app(ws, secure_cookies=False, session_secret="s"), follow_redirects=False)


def answer(web, csrf, card, label, reason=None):
    return web.post("/api/queue/submit", json={"item_id": card["item_id"], "label": label, "reason": reason,
                                               "client_id": uuid.uuid4().hex}, headers={"X-CSRF-Token": csrf})


def gold_items(ws, tmp_path, n, label="positive", machine_label="negative", split="honeypot"):
    """Gold items whose machines' view (as a run leaves it) suggests `machine_label`, and would go to review."""
    rows = "".join(f"g{k},gold text {k},{label}\n" for k in range(n))
    import_gold(ws, write_file(tmp_path / f"gold-{uuid.uuid4().hex}.csv", "id,text,label\n" + rows), split=split)
    with ws.session() as s:
        for d in s.scalars(select(models.Decision).where(models.Decision.state == models.State.gold)):
            d.details = {"machine": {"label": machine_label, "confidence": 0.55, "review": True,
                                     "reason": "its calibrated confidence is below the level"}}


def test_blind_items_show_no_machine_view_and_the_overview_compares(ws, tmp_path, monkeypatch):
    # Each lease draws twice (a gold item instead? blind?): every combination comes round (random in use).
    draws = itertools.cycle([0.0, 0.9, 0.0, 0.0, 0.9, 0.9, 0.9, 0.0])
    monkeypatch.setattr(queue_module, "random", SimpleNamespace(random=lambda: next(draws)))
    needing_review(ws, tmp_path, 8)
    gold_items(ws, tmp_path, 8)  # gold says positive; the machines suggest negative: a wrong suggestion
    make_users(ws, ann=Role.reviewer, meg=Role.manager)
    web = web_for(ws, review_gold_share=0.5, review_blind_share=0.5)
    csrf = login(web, "ann")
    card, seen = web.get("/api/queue/next").json()["item"], {"blind": 0, "shown": 0}
    while card:
        if card["blind"]:
            seen["blind"] += 1
            assert card["suggestion"] is None and card["confidence"] is None and card["votes"] == []
            assert card["reason"] == BLIND
            label = "positive"  # on their own, right
        else:
            seen["shown"] += 1
            assert card["suggestion"] is not None and card["reason"]
            label = card["suggestion"]  # rubber-stamps whatever is suggested
        card = answer(web, csrf, card, label).json()["item"]
    assert seen["blind"] and seen["shown"]
    with ws.session() as s:
        tasks = s.scalars(select(models.ReviewTask)).all()
    assert all((t.suggested is None) == t.blind for t in tasks)  # what was shown is kept
    manager = web_for(ws)
    login(manager, "meg")
    ann = next(r for r in manager.get("/api/scorecards").json()["reviewers"] if r["reviewer"] == "ann")
    assert ann["gold_accuracy_blind"] == 1.0 and ann["gold_accuracy_shown"] == 0.0
    assert ann["accepted_wrong_suggestion"] == 1.0  # automation bias, measured
    assert ann["median_seconds"] >= 0 and ann["answers_per_hour"] is not None
    page = manager.get("/manage").text
    assert "Accepted a wrong suggestion" in page and "shown / blind" in page


def test_qualification_before_real_items_with_mistakes_and_a_cool_down(ws, tmp_path):
    needing_review(ws, tmp_path, 3)
    gold_items(ws, tmp_path, 6, split="calibration")
    make_users(ws, ann=Role.reviewer, bob=Role.reviewer, meg=Role.manager)
    from labeler.config import Qualification

    web = web_for(ws, review_qualification=Qualification(items=3, pass_mark=1.0, cooldown_hours=1), review_gold_share=0)
    csrf = login(web, "ann")
    card = web.get("/api/queue/next").json()["item"]
    for k in range(3):
        assert card["external_id"].startswith("g") and card["blind"]  # gold, shown without the machines
        assert card["qualification"] == {"answered": k, "of": 3}
        reply = answer(web, csrf, card, "negative" if k == 0 else "positive").json()  # one wrong
        card = reply["item"]
    assert card is None and "qualification not passed (2 of 3 right" in reply["message"]
    mine = web.get("/api/queue/qualification").json()
    assert mine["attempts"][0]["passed"] is False
    [mistake] = mine["mistakes"]
    assert mistake["answered"] == "negative" and mistake["gold"] == "positive" and mistake["guideline"] == "liked it"
    bob = web_for(ws)
    bob_csrf = login(bob, "bob")
    card = bob.get("/api/queue/next").json()["item"]
    for _ in range(3):
        card = answer(bob, bob_csrf, card, "positive").json()["item"]
    assert card is not None and card["external_id"].startswith("i") and card["qualification"] is None  # real work now
    manager = web_for(ws)
    login(manager, "meg")
    history = manager.get("/api/scorecards").json()["qualifications"]
    assert {(q["reviewer"], q["passed"]) for q in history} == {("ann", False), ("bob", True)}
    assert "Qualification" in manager.get("/manage").text


def test_a_reviewer_who_slips_on_hidden_gold_is_paused_and_requalifies(ws, tmp_path):
    from labeler.config import Qualification

    needing_review(ws, tmp_path, 30)
    gold_items(ws, tmp_path, 30, split="calibration")
    make_users(ws, ann=Role.reviewer)
    web = web_for(ws, review_gold_share=0.5, review_qualification=Qualification(items=2, pass_mark=0.8, window=5))
    csrf = login(web, "ann")
    card, paused = web.get("/api/queue/next").json()["item"], False
    for _ in range(2):  # qualify
        card = answer(web, csrf, card, "positive").json()["item"]
    for _ in range(40):
        if card["qualification"]:
            paused = True
            break
        gold = card["external_id"].startswith("g")
        card = answer(web, csrf, card, "negative" if gold else "positive").json()["item"]  # wrong on every gold item
    assert paused  # after 5 wrong hidden gold answers
    attempts = web.get("/api/queue/qualification").json()["attempts"]
    assert attempts[0]["reason"].startswith("paused: 0% right on the last 5 hidden gold items")


def test_dont_know_over_the_cap_needs_a_written_reason_and_is_flagged(ws, tmp_path):
    needing_review(ws, tmp_path, 20)
    make_users(ws, ann=Role.reviewer, meg=Role.manager)
    web = web_for(ws, review_dont_know_cap=0.1)
    csrf = login(web, "ann")
    card = web.get("/api/queue/next").json()["item"]
    for k in range(10):
        card = answer(web, csrf, card, None, "Not enough context") .json()["item"] if k < 2 else \
            answer(web, csrf, card, "positive").json()["item"]
    listed = answer(web, csrf, card, None, "Not enough context")
    assert listed.status_code == 422 and "in your own words" in listed.json()["detail"]
    written = answer(web, csrf, card, None, "two products are described at once")
    assert written.json()["status"] == "recorded"
    manager = web_for(ws)
    login(manager, "meg")
    scores = manager.get("/api/scorecards").json()
    ann = next(r for r in scores["reviewers"] if r["reviewer"] == "ann")
    assert ann["dont_know_flagged"] and ann["dont_know_share"] == pytest.approx(3 / 11, abs=1e-3)
    assert scores["dont_know"]["reasons"][0] == {"reason": "Not enough context", "count": 2}
    assert scores["dont_know"]["items"][0]["skipped_or_not_known"] == 1


def test_a_page_a_role_may_not_open_says_so_in_html(ws):
    make_users(ws, eve=Role.expert)
    web = web_for(ws)
    login(web, "eve")
    page = web.get("/manage")
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    assert "not for your role" in page.text and 'href="/"' in page.text and "expert role may not do this" in page.text
    assert web.get("/api/metrics").json() == {"detail": "the expert role may not do this"}  # the API stays JSON
