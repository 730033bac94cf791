"""The review app through HTTP: login, CSRF, roles, the queue's round trip, experts, scorecards, escaping."""

import itertools
import uuid
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from labeler.data.imports import import_gold
from labeler.store import models
from labeler.store.models import Role, State
from labeler.store.users import add_user
from review_ui import queue as queue_module
from review_ui.app import create_app
from tests.conftest import write_file
from tests.review_client import PASSWORD, csrf_of, login, make_users
from tests.test_review_queue import decision, needing_review


@pytest.fixture
def app(ws):
    return create_app(ws, secure_cookies=False, session_secret="test-secret")


def client(app):
    return TestClient(app, follow_redirects=False)


def test_a_reviewer_logs_in_and_each_answer_brings_the_next_item(app, ws, tmp_path):
    needing_review(ws, tmp_path, 3)
    make_users(ws, ann=Role.reviewer)
    web = client(app)
    csrf = login(web, "ann")
    first = web.get("/api/queue/next").json()["item"]
    assert first["external_id"] == "i0" and first["fields"] == {"text": "text 0"} and first["suggestion"] == "positive"
    assert web.get("/api/queue/next").json()["item"]["item_id"] == first["item_id"]  # the lease holds
    body = {"item_id": first["item_id"], "label": "negative", "client_id": "a1"}
    assert web.post("/api/queue/submit", json=body).status_code == 403  # no CSRF token
    assert web.post("/api/queue/submit", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    saved = web.post("/api/queue/submit", json=body, headers={"X-CSRF-Token": csrf}).json()
    assert saved["status"] == "recorded" and saved["item"]["external_id"] == "i1"  # one round trip
    assert decision(ws, first["item_id"]).state == State.confirmed
    again = web.post("/api/queue/submit", json=body, headers={"X-CSRF-Token": csrf}).json()
    assert again["status"] == "duplicate"  # a retried submit counts once
    undone = web.post("/api/queue/undo", headers={"X-CSRF-Token": csrf}).json()["item"]
    assert undone["item_id"] == first["item_id"]
    assert decision(ws, first["item_id"]).state == State.needs_review  # the machines' guess is back
    assert decision(ws, first["item_id"]).label == "positive"
    skipped = web.post("/api/queue/skip", json={"item_id": undone["item_id"]}, headers={"X-CSRF-Token": csrf}).json()
    assert skipped["item"]["external_id"] == "i1"
    unknown = web.post("/api/queue/submit", json={"item_id": skipped["item"]["item_id"], "label": "great",
                                                  "client_id": "a2"}, headers={"X-CSRF-Token": csrf})
    assert unknown.status_code == 422 and "unknown label" in unknown.json()["detail"]
    stale = web.post("/api/queue/submit", json={"item_id": first["item_id"], "label": "negative", "client_id": "a3"},
                     headers={"X-CSRF-Token": csrf})
    assert stale.status_code == 409  # skipped: no lease on it any more
    with ws.session() as s:
        actions = [e.action for e in s.scalars(select(models.AuditEvent).order_by(models.AuditEvent.id))]
    assert actions == ["user.add", "review.submit", "review.undo"]


def test_logging_in_and_out(app, ws):
    make_users(ws, ann=Role.reviewer, meg=Role.manager)
    web = client(app)
    assert web.get("/review").status_code == 303 and web.get("/review").headers["location"] == "/login?next=/review"
    page = web.get("/login")
    wrong = web.post("/login", data={"name": "ann", "password": "wrong-password", "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    assert web.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": "x"}).status_code == 403
    ok = web.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": csrf_of(page.text),
                                  "next": "//evil.example/"})
    assert ok.headers["location"] == "/review"  # never a redirect off the site
    csrf = csrf_of(web.get("/review").text)
    assert csrf != csrf_of(page.text)  # a fresh session at login
    assert web.post("/logout", data={"csrf_token": "x"}).status_code == 403
    assert web.post("/logout", data={"csrf_token": csrf}).headers["location"] == "/login"
    assert web.get("/api/queue/next").status_code == 401
    manager = client(app)
    login(manager, "meg")
    assert manager.get("/").headers["location"] == "/manage"


def test_the_session_cookie_is_http_only_and_secure_unless_on_loopback(ws):
    make_users(ws, ann=Role.reviewer)
    for secure in (True, False):
        web = TestClient(create_app(ws, secure_cookies=secure), base_url="https://testserver", follow_redirects=False)
        cookie = web.get("/login").headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and ("secure" in cookie) == secure


def test_api_tokens_for_programs_and_roles_that_are_too_low(app, ws, tmp_path):
    needing_review(ws, tmp_path, 2)
    bot = add_user(ws, "bot", Role.reviewer, with_token=True)
    boss = add_user(ws, "boss", Role.manager, with_token=True)
    web = client(app)
    as_bot, as_boss = {"Authorization": f"Bearer {bot}"}, {"Authorization": f"Bearer {boss}"}
    lease = web.get("/api/queue/next", headers=as_bot).json()["item"]
    answer = {"item_id": lease["item_id"], "label": "neutral", "client_id": "t1"}
    assert web.post("/api/queue/submit", json=answer, headers=as_bot).status_code == 200  # tokens need no CSRF
    assert web.get("/api/queue/next", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert web.get("/api/metrics", headers=as_bot).status_code == 403
    assert web.get("/api/queue/next", headers=as_boss).status_code == 403  # managers watch, they do not review
    metrics = web.get("/api/metrics", headers=as_boss).json()
    assert metrics["states"]["confirmed"] == 1 and metrics["labels_per_reviewer"] == {"bot": 1}
    made = web.post("/api/users", json={"name": "carl", "role": "reviewer", "token": True}, headers=as_boss)
    assert made.status_code == 403  # only admins add users


def test_experts_see_the_answers_settle_items_and_make_gold(app, ws, tmp_path):
    ids = needing_review(ws, tmp_path, 1)
    make_users(ws, ann=Role.reviewer, eve=Role.expert)
    ann, eve = client(app), client(app)
    ann_csrf, eve_csrf = login(ann, "ann"), login(eve, "eve")
    lease = ann.get("/api/queue/next").json()["item"]
    ann.post("/api/queue/submit", json={"item_id": lease["item_id"], "label": None, "reason": "Not enough context",
                                        "client_id": "k1"}, headers={"X-CSRF-Token": ann_csrf})
    assert decision(ws, ids[0]).state == State.escalated
    escalated = eve.get("/api/queue/next").json()["item"]
    assert escalated["answers"] == [{"user": "ann", "role": "reviewer", "label": None, "reason": "Not enough context"}]
    eve.post("/api/queue/submit", json={"item_id": ids[0], "label": "negative", "client_id": "k2"},
             headers={"X-CSRF-Token": eve_csrf})
    assert decision(ws, ids[0]).state == State.confirmed and decision(ws, ids[0]).method == "expert"
    made = eve.post(f"/api/items/{ids[0]}/gold", json={"label": "negative", "split": "examples"},
                    headers={"X-CSRF-Token": eve_csrf})
    assert made.status_code == 204
    with ws.session() as s:
        gold = s.get(models.GoldLabel, ids[0])
    assert (gold.label, gold.split) == ("negative", models.Split.examples)
    assert decision(ws, ids[0]).state == State.gold
    history = eve.get("/api/items/i0").json()["history"]
    assert [h["action"] for h in history] == ["gold.add", "review.submit", "review.submit"]
    assert ann.post(f"/api/items/{ids[0]}/gold", json={"label": "negative"},
                    headers={"X-CSRF-Token": ann_csrf}).status_code == 403


def test_hidden_gold_measures_reviewers_and_kappa_compares_them(app, ws, tmp_path, monkeypatch):
    # Every other lease draws a gold item (the share is random in use; here it must not be).
    draws = itertools.cycle([0.0, 0.9])
    monkeypatch.setattr(queue_module, "random", SimpleNamespace(random=lambda: next(draws)))
    needing_review(ws, tmp_path, 6)
    gold_file = write_file(tmp_path / "g.csv", "id,text,label\n" + "".join(f"g{k},gold {k},positive\n" for k in range(4)))
    import_gold(ws, gold_file, split=models.Split.honeypot)
    with ws.session() as s:  # the view a run leaves on gold items that would have gone to review
        for d in s.scalars(select(models.Decision).where(models.Decision.state == State.gold)):
            d.details = {"machine": {"label": "positive", "confidence": 0.5, "review": True,
                                     "reason": "its calibrated confidence is below the level"}}
    make_users(ws, ann=Role.reviewer, bob=Role.reviewer, meg=Role.manager)
    ws.config.routing.review_gold_share = 0.5
    ws.config.routing.review_overlap = 2
    answers = {"ann": "positive", "bob": "negative"}
    seen_gold = {}
    for name, label in answers.items():
        web = client(app)
        csrf = login(web, name)
        item = web.get("/api/queue/next").json()["item"]
        seen_gold[name] = 0
        while item:
            seen_gold[name] += item["external_id"].startswith("g")
            item = web.post("/api/queue/submit", json={"item_id": item["item_id"], "label": label,
                                                       "client_id": uuid.uuid4().hex},
                            headers={"X-CSRF-Token": csrf}).json()["item"]
    assert seen_gold["ann"] > 0 and seen_gold["bob"] > 0
    with ws.session() as s:
        gold_states = s.scalars(select(models.Decision.state).join(models.GoldLabel,
                                models.GoldLabel.item_id == models.Decision.item_id)).all()
    assert set(gold_states) == {State.gold}  # answers on gold settle nothing
    manager = client(app)
    login(manager, "meg")
    cards = {c["reviewer"]: c for c in manager.get("/api/scorecards").json()["reviewers"]}
    assert cards["ann"]["gold_accuracy"] == 1.0 and cards["bob"]["gold_accuracy"] == 0.0
    assert cards["ann"]["shared_items"] >= 6 and cards["ann"]["kappa"] == 0.0  # always opposite labels: no agreement
    disagreements = manager.get("/api/scorecards").json()["disagreements"]
    assert len(disagreements) == 6 and all(d["state"] == "escalated" for d in disagreements)
    page = manager.get("/manage")
    assert page.status_code == 200 and "Cohen" in page.text and "ann" in page.text


def test_item_text_and_ids_are_escaped_in_pages(app, ws, tmp_path):
    hostile = '<img src=x onerror="alert(1)">'
    import_items_file = write_file(tmp_path / "h.jsonl", '{"id": "%s", "text": "<script>alert(2)</script>"}\n'
                                   % hostile.replace('"', '\\"'))
    from labeler.data.imports import import_items
    import_items(ws, import_items_file)
    with ws.session() as s:
        item_id = s.scalar(select(models.Item.id))
    make_users(ws, ann=Role.reviewer, bob=Role.reviewer, meg=Role.manager)
    from labeler.store.engine import upsert
    with ws.session() as s:
        upsert(s, models.Decision, [{"item_id": item_id, "project_id": ws.project_id, "label": "positive", "state": State.needs_review,
                                     "method": "m", "details": {}}], ["item_id"])
    ws.config.routing.review_overlap = 2
    for name, label in (("ann", "positive"), ("bob", "negative")):
        web = client(app)
        csrf = login(web, name)
        item = web.get("/api/queue/next").json()["item"]
        assert item["fields"]["text"] == "<script>alert(2)</script>"  # JSON carries it as data
        web.post("/api/queue/submit", json={"item_id": item["item_id"], "label": label, "client_id": name},
                 headers={"X-CSRF-Token": csrf})
    manager = client(app)
    login(manager, "meg")
    page = manager.get("/manage").text
    assert hostile not in page and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    assert "script-src 'self'" in manager.get("/manage").headers["content-security-policy"]


def test_ids_too_big_for_the_store_are_bad_requests_not_server_errors(app, ws, tmp_path):
    needing_review(ws, tmp_path, 1)
    make_users(ws, eve=Role.expert)
    web = client(app)
    csrf = login(web, "eve")
    headers = {"X-CSRF-Token": csrf}
    for huge in (2**63, 2**64 + 5, -1):
        assert web.post("/api/queue/submit", json={"item_id": huge, "label": "positive", "client_id": f"c{huge}"},
                        headers=headers).status_code == 422
        assert web.post("/api/queue/skip", json={"item_id": huge}, headers=headers).status_code == 422
        assert web.post(f"/api/items/{huge}/gold", json={"label": "positive"}, headers=headers).status_code == 422


def test_a_busy_store_is_503_with_retry_after_not_500(project_dir, tmp_path, monkeypatch):
    """A long import holds SQLite's write lock: a submit waits, then is told to come back, losing nothing."""
    import sqlite3

    from labeler.store import engine as store
    from labeler.store.workspace import open_workspace

    monkeypatch.setattr(store, "SQLITE_BUSY_SECONDS", 0.5)
    path = tmp_path / "busy.db"
    ws = open_workspace(project_dir, url=f"sqlite:///{path}")
    needing_review(ws, tmp_path, 1)
    make_users(ws, ann=Role.reviewer)
    web = client(create_app(ws, secure_cookies=False, session_secret="s"))
    csrf = login(web, "ann")
    item = web.get("/api/queue/next").json()["item"]
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    body = {"item_id": item["item_id"], "label": "negative", "client_id": "k1"}
    busy = web.post("/api/queue/submit", json=body, headers={"X-CSRF-Token": csrf})
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    page = web.post("/logout", data={"csrf_token": csrf})  # a page route: a page, not JSON
    assert page.status_code == 503 and "text/html" in page.headers["content-type"] and "store is busy" in page.text
    holder.rollback()
    assert web.post("/api/queue/submit", json=body, headers={"X-CSRF-Token": csrf}).json()["status"] == "recorded"
