"""The review queue under concurrency, on SQLite and PostgreSQL."""

import threading
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from labeler.data.imports import import_gold, import_items
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.engine import upsert
from labeler.store.models import Role, State, utcnow
from labeler.store.users import add_user, authenticate
from review_ui.answers import skip, submit
from review_ui.queue import expire_leases, lease_next
from tests.conftest import write_file


def needing_review(ws, tmp_path, n):
    import_items(ws, write_file(tmp_path / "i.csv", "id,text\n" + "".join(f"i{k},text {k}\n" for k in range(n))))
    with ws.session() as s:
        ids = list(s.scalars(select(models.Item.id).where(models.Item.project_id == ws.project_id)))
        machine = {"label": "positive", "confidence": 0.5, "reason": "its calibrated confidence is below the level"}
        upsert(s, models.Decision, [{"item_id": i, "project_id": ws.project_id, "label": "positive", "confidence": 0.5, "state": State.needs_review,
                                     "method": "cascade", "details": {"machine": machine}, "updated_at": utcnow()}
                                    for i in ids], ["item_id"])
    return ids


def user(ws, name, role=Role.reviewer):
    """A new member of the project, as the review app sees them."""
    add_user(ws, name, role, password="long-password")
    return authenticate(ws, name, "long-password")


def decision(ws, item_id):
    with ws.session() as s:
        return s.get(models.Decision, item_id)


def test_agreeing_reviewers_confirm_and_disagreement_escalates_to_experts(ws, tmp_path):
    ids = needing_review(ws, tmp_path, 2)
    ann, bob, eve = user(ws, "ann"), user(ws, "bob"), user(ws, "eve", Role.expert)
    first = lease_next(ws, ann, overlap=2)
    assert lease_next(ws, ann, overlap=2) == first  # asking again returns the same lease
    submit(ws, ann, first.item_id, label="negative", client_id="c1", overlap=2)
    assert decision(ws, first.item_id).state == State.needs_review  # one of two answers
    again = lease_next(ws, bob, overlap=2)
    assert again.item_id == first.item_id  # the item closest to done comes first
    assert submit(ws, bob, again.item_id, label="negative", client_id="c2", overlap=2)["state"] == "confirmed"
    settled = decision(ws, first.item_id)
    assert settled.label == "negative" and [d["user"] for d in settled.details["decided_by"]] == ["ann", "bob"]
    # The other item: they disagree, so it goes to the expert, whose answer settles it.
    other = lease_next(ws, ann, overlap=2)
    submit(ws, ann, other.item_id, label="positive", client_id="c3", overlap=2)
    submit(ws, bob, lease_next(ws, bob, overlap=2).item_id, label="negative", client_id="c4", overlap=2)
    assert decision(ws, other.item_id).state == State.escalated
    assert lease_next(ws, ann, overlap=2) is None  # reviewers do not see escalated items
    expert = lease_next(ws, eve, overlap=2)
    assert expert.item_id == other.item_id
    assert submit(ws, eve, expert.item_id, label="neutral", client_id="c5")["state"] == "confirmed"
    assert decision(ws, other.item_id).label == "neutral"
    assert set(ids) == {first.item_id, other.item_id}


def test_retried_submissions_count_once_and_i_dont_know_needs_a_reason(ws, tmp_path):
    needing_review(ws, tmp_path, 1)
    ann = user(ws, "ann")
    lease = lease_next(ws, ann)
    with pytest.raises(LabelerError, match="needs a reason"):
        submit(ws, ann, lease.item_id, label=None, client_id="x1")
    with pytest.raises(LabelerError, match="unknown label"):
        submit(ws, ann, lease.item_id, label="great", client_id="x1")
    first = submit(ws, ann, lease.item_id, label=None, reason="not about a product", client_id="x1")
    assert first["state"] == "escalated"  # "I don't know" goes to the experts
    assert submit(ws, ann, lease.item_id, label=None, reason="not about a product", client_id="x1")["status"] == "duplicate"
    with ws.session() as s:
        assert s.scalar(select(models.ReviewTask.reason)) == "not about a product"
        assert len(s.scalars(select(models.ReviewTask)).all()) == 1


def test_expired_leases_return_items_to_the_queue(ws, tmp_path):
    needing_review(ws, tmp_path, 1)
    ann, bob = user(ws, "ann"), user(ws, "bob")
    lease = lease_next(ws, ann)
    assert lease_next(ws, bob) is None  # overlap 1: leased to ann
    with ws.session() as s:
        s.execute(update(models.ReviewTask).values(expires_at=utcnow() - timedelta(minutes=1)))
    assert expire_leases(ws) == 1 and expire_leases(ws) == 0  # ann's stale lease, swept once
    assert decision(ws, lease.item_id).review_count == 0
    assert lease_next(ws, bob).item_id == lease.item_id
    assert decision(ws, lease.item_id).review_count == 1


def test_a_lease_past_its_expiry_is_swept_when_the_next_reviewer_asks(ws, tmp_path):
    needing_review(ws, tmp_path, 1)
    ann, bob = user(ws, "ann"), user(ws, "bob")
    lease = lease_next(ws, ann, lease_minutes=0.0001)
    time.sleep(0.05)
    assert lease_next(ws, bob).item_id == lease.item_id
    with ws.session() as s:
        assert s.scalars(select(models.ReviewTask.user_id)).all() == [bob.id]


def test_skipped_items_free_their_slot_and_stay_out_of_the_skippers_queue(ws, tmp_path):
    ids = needing_review(ws, tmp_path, 2)
    ann, bob = user(ws, "ann"), user(ws, "bob")
    first = lease_next(ws, ann)
    skip(ws, ann, first.item_id)
    assert decision(ws, first.item_id).review_count == 0
    assert lease_next(ws, ann).item_id == ids[1]  # not the skipped one again
    assert lease_next(ws, bob).item_id == first.item_id  # its slot is free for others


def test_twenty_concurrent_reviewers_never_exceed_the_overlap(ws, tmp_path):
    overlap, n_items = 2, 60
    needing_review(ws, tmp_path, n_items)
    reviewers = [user(ws, f"r{k}") for k in range(20)]
    errors, submitted = [], Counter()

    def open_for(reviewer):
        with ws.session() as s:
            done = set(s.scalars(select(models.ReviewTask.item_id).where(models.ReviewTask.user_id == reviewer.id)))
            waiting = set(s.scalars(select(models.Decision.item_id).where(models.Decision.state == State.needs_review)))
        return bool(waiting - done)

    def work(reviewer):
        try:
            while True:
                lease = lease_next(ws, reviewer, overlap=overlap)
                if lease is None:
                    # PostgreSQL skips rows other reviewers hold locked: "nothing now" is not "nothing left".
                    if open_for(reviewer):
                        time.sleep(0.01)
                        continue
                    return
                client_id = uuid.uuid4().hex
                for _ in range(2):  # a retried submit must count once
                    submit(ws, reviewer, lease.item_id, label="positive", client_id=client_id, overlap=overlap)
                submitted[lease.item_id] += 1
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(r,)) for r in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with ws.session() as s:
        tasks = s.scalars(select(models.ReviewTask)).all()
        states = Counter(d.state for d in s.scalars(select(models.Decision)))
    per_item = Counter(t.item_id for t in tasks)
    assert set(per_item.values()) == {overlap}  # every item exactly `overlap` reviews, never more
    assert len({(t.item_id, t.user_id) for t in tasks}) == len(tasks)  # nobody reviewed an item twice
    assert all(t.submitted_at is not None for t in tasks) and sum(submitted.values()) == n_items * overlap
    assert states == {State.confirmed: n_items}


@pytest.mark.postgres
def test_submit_and_skip_at_once_never_deadlock(project_dir, tmp_path, pg_url):
    """The same reviewer in two sessions: submit locked the decision then the task, skip the other way round."""
    from labeler.store.workspace import open_workspace

    ws = open_workspace(project_dir, url=pg_url)
    needing_review(ws, tmp_path, 60)
    ann = user(ws, "ann")
    errors = []
    for k in range(60):
        lease = lease_next(ws, ann, overlap=1, gold_share=0)
        barrier = threading.Barrier(2)

        def run(fn):
            barrier.wait()
            try:
                fn()
            except LabelerError:
                pass  # the loser of the race finds no lease: a clean refusal
            except Exception as exc:  # a deadlock would land here
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(lambda: submit(ws, ann, lease.item_id, label="positive",
                                                                       client_id=f"s{k}", overlap=1),)),
                   threading.Thread(target=run, args=(lambda: skip(ws, ann, lease.item_id),))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    with ws.session() as s:  # and the counts still add up
        for d in s.scalars(select(models.Decision)):
            live = s.scalar(select(func.count()).select_from(models.ReviewTask).where(
                models.ReviewTask.item_id == d.item_id, models.ReviewTask.skipped_at.is_(None)))
            assert d.review_count == live
    ws.engine.dispose()


def test_the_queue_prefers_items_whose_likely_label_the_reviewer_is_accurate_on(ws, tmp_path):
    ids = needing_review(ws, tmp_path, 40)
    ann = user(ws, "ann")
    with ws.session() as s:  # 20 items the machines think negative, then 20 they think positive
        for n, item_id in enumerate(ids):
            d = s.get(models.Decision, item_id)
            d.details = {"machine": {"label": "negative" if n < 20 else "positive", "confidence": 0.6}}
    gold = "id,text,label\n" + "".join(f"g{k},gold {k},{'positive' if k < 12 else 'negative'}\n" for k in range(24))
    import_gold(ws, write_file(tmp_path / "g.csv", gold), split=models.Split.honeypot)
    with ws.session() as s:  # ann's history: right on every positive item, wrong on most negative ones
        for k, item_id in enumerate(s.scalars(select(models.GoldLabel.item_id).order_by(models.GoldLabel.item_id))):
            answer = "positive" if k < 12 else ("negative" if k < 14 else "positive")
            s.add(models.ReviewTask(item_id=item_id, user_id=ann.id, leased_at=utcnow(), expires_at=utcnow(),
                                    submitted_at=utcnow(), label=answer, client_id=f"h{k}"))
    first = lease_next(ws, ann, overlap=1, gold_share=0)
    assert first.item_id in ids[20:]  # a likely-positive item, though the likely-negative ones come first by id
    newbie = user(ws, "bob")
    assert lease_next(ws, newbie, overlap=1, gold_share=0).item_id == ids[0]  # no history: items in order


def test_hidden_gold_stands_in_only_for_an_item_it_looks_like(ws, tmp_path):
    """Gold cards told themselves apart by a reason no real card had (its fold's model scored it lower)."""
    ids = needing_review(ws, tmp_path, 4)
    asked = [["a", "1"], ["b", "1"]]
    rows = "".join(f"g{k},gold {k},positive\n" for k in range(5))
    import_gold(ws, write_file(tmp_path / "g.csv", "id,text,label\n" + rows), split=models.Split.honeypot)
    real = {"label": "positive", "confidence": 0.5, "reason": "the machines disagree", "asked": asked}
    gold = {"g0": dict(real, confidence=0.55), "g1": dict(real, reason="its calibrated confidence is below the level"),
            "g2": dict(real, asked=asked + [["c", "1"]]), "g3": dict(real, asked=asked[:1]), "g4": dict(real, reason=None)}
    with ws.session() as s:
        for item in s.scalars(select(models.Item)):
            d = s.get(models.Decision, item.id)
            d.details = {"machine": dict(gold[item.external_id], review=True) if item.external_id in gold else real}
    ann = user(ws, "ann")
    shown = []
    while (lease := lease_next(ws, ann, overlap=1, gold_share=1.0)) is not None:
        shown.append(lease.external_id)
        submit(ws, ann, lease.item_id, label="positive", client_id=uuid.uuid4().hex, overlap=1)
    assert "g0" in shown and not {"g1", "g2", "g3", "g4"} & set(shown)  # only the look-alike stands in
    assert len(shown) == len(ids) + 1  # the open item it stood in for still came round


def test_client_ids_are_one_users_per_item_so_another_project_reusing_one_is_recorded(ws, tmp_path):
    """A submission in A with a client id the same reviewer had used in B was answered "duplicate" and dropped."""
    from labeler.store.workspace import open_workspace
    from tests.conftest import write_project

    needing_review(ws, tmp_path, 1)
    b = open_workspace(write_project(tmp_path / "b", name="project-b"), url=ws.engine.url.render_as_string(hide_password=False))
    needing_review(b, tmp_path / "b", 2)
    sam = user(ws, "sam")
    add_user(b, "sam", Role.reviewer)
    sam_b = authenticate(b, "sam", "long-password")
    in_b = lease_next(b, sam_b, overlap=1)
    assert submit(b, sam_b, in_b.item_id, label="positive", client_id="same-id", overlap=1)["status"] == "recorded"
    in_a = lease_next(ws, sam, overlap=1)
    assert submit(ws, sam, in_a.item_id, label="negative", client_id="same-id", overlap=1)["status"] == "recorded"
    assert decision(ws, in_a.item_id).label == "negative"
    assert submit(ws, sam, in_a.item_id, label="negative", client_id="same-id", overlap=1)["status"] == "duplicate"
    again = lease_next(b, sam_b, overlap=1)  # the same client id on another item of B: its own submission
    assert submit(b, sam_b, again.item_id, label="positive", client_id="same-id", overlap=1)["status"] == "recorded"
    b.engine.dispose()


def test_progress_counts_a_reviewers_answers_and_the_waiting_items_at_most_every_few_seconds(ws, tmp_path, monkeypatch):
    from review_ui import queue

    def waiting_becomes(count):  # counted in the background: no answer waits for a count of the backlog
        waited = time.monotonic()
        while queue.progress(ws, ann)["waiting"] != count and time.monotonic() - waited < 10:
            time.sleep(0.05)

    needing_review(ws, tmp_path, 5)
    ann = user(ws, "ann")
    assert queue.progress(ws, ann) == {"answered": 0, "waiting": None}  # not counted yet
    waiting_becomes(5)
    assert queue.progress(ws, ann) == {"answered": 0, "waiting": 5}
    submit(ws, ann, lease_next(ws, ann).item_id, label="positive", client_id="c1")
    bob = user(ws, "bob")
    submit(ws, bob, lease_next(ws, bob).item_id, label="positive", client_id="c2")  # two items settled
    assert queue.progress(ws, ann) == {"answered": 1, "waiting": 5}  # the count of waiting items is a moment old
    monkeypatch.setattr(queue, "WAITING_SECONDS", 0.0)  # stale now: counted again
    waiting_becomes(3)
    assert queue.progress(ws, ann) == {"answered": 1, "waiting": 3}
    key = next(k for k in queue._waiting if k[1] == ws.project_id and k[0] == str(ws.engine.url))
    at, _, count = queue._waiting[key]
    queue._waiting[key] = (at, 1.0, 99)  # a count that took a second: redone only after 1 / COUNTING_SHARE s
    time.sleep(0.2)
    assert queue.progress(ws, ann)["waiting"] == 99


def _answered(ws, item_ids, reviewer):
    """Submitted tasks of `reviewer` on these items, each counted on its decision (as the queue keeps it)."""
    with ws.session() as s:
        for k, item_id in enumerate(item_ids):
            s.add(models.ReviewTask(item_id=item_id, user_id=reviewer.id, leased_at=utcnow(), expires_at=utcnow(),
                                    submitted_at=utcnow(), label="positive", client_id=f"{reviewer.name}{k}"))
            s.get(models.Decision, item_id).review_count += 1


def test_a_lease_reads_a_window_of_the_queue_and_searches_a_level_whole_only_near_its_end(ws, tmp_path, monkeypatch):
    """A lease reads WINDOW entries of each level, so its work does not grow with the backlog; an item open to
    the reviewer beyond every window (the end of the queue: all else is theirs) is still found."""
    from review_ui import queue

    monkeypatch.setattr(queue, "WINDOW", 5)
    ids = needing_review(ws, tmp_path, 30)
    ann, cat = user(ws, "ann"), user(ws, "cat")
    _answered(ws, ids[:29], ann)  # level 1 (overlap 2): ann's own answers, then one item cat answered
    _answered(ws, ids[29:], cat)
    reads = []
    monkeypatch.setattr(queue, "_search", lambda *args, real=queue._search: reads.append(1) or real(*args))
    assert lease_next(ws, ann, overlap=2, gold_share=0).item_id == ids[29]
    assert reads == [1]  # found by searching the level whole: its window held only ann's items
    bob = user(ws, "bob")
    assert lease_next(ws, bob, overlap=2, gold_share=0).item_id == ids[0]  # the level's window was enough
    assert reads == [1]


def test_one_project_never_leases_anothers_items_sharing_its_store(ws, tmp_path, monkeypatch):
    from labeler.store.workspace import open_workspace
    from review_ui import queue
    from tests.conftest import write_project

    monkeypatch.setattr(queue, "WINDOW", 5)
    b = open_workspace(write_project(tmp_path / "b", name="project-b"), url=ws.engine.url.render_as_string(hide_password=False))
    needing_review(b, tmp_path / "b", 40)  # B's items first: they fill the start of the store's ids
    mine = needing_review(ws, tmp_path, 2)
    ann = user(ws, "ann")
    leased = [lease_next(ws, ann, overlap=1, gold_share=0) for _ in range(2)]
    assert leased[0].item_id == mine[0] and leased[1].item_id == mine[0]  # the same lease until answered
    submit(ws, ann, mine[0], label="positive", client_id="a", overlap=1)
    assert lease_next(ws, ann, overlap=1, gold_share=0).item_id == mine[1]
    submit(ws, ann, mine[1], label="positive", client_id="b", overlap=1)
    assert lease_next(ws, ann, overlap=1, gold_share=0) is None
    b.engine.dispose()


def test_an_answer_and_the_next_lease_share_a_transaction_and_a_busy_queue_keeps_the_answer(ws, tmp_path, monkeypatch):
    from review_ui import answers, queue

    ids = needing_review(ws, tmp_path, 3)
    ann = user(ws, "ann")
    first = lease_next(ws, ann, overlap=1)
    result, lease = answers.submit_and_lease(ws, ann, first.item_id, label="negative", client_id="c1")
    assert result["status"] == "recorded" and lease.item_id == ids[1]
    assert decision(ws, first.item_id).label == "negative"

    def busy(*args, **kwargs):  # every open item held by other reviewers' transactions, this once
        monkeypatch.setattr(answers, "lease_in", queue.lease_in)
        raise queue.Busy
    monkeypatch.setattr(answers, "lease_in", busy)
    result, lease = answers.submit_and_lease(ws, ann, ids[1], label="positive", client_id="c2")
    assert result["status"] == "recorded" and decision(ws, ids[1]).label == "positive"  # kept
    assert lease.item_id == ids[2]  # asked for again on its own
