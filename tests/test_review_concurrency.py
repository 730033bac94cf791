"""Twenty reviewers at once over HTTP against one `labeler serve`, on SQLite and PostgreSQL."""

import random
import threading
import uuid
from collections import Counter

import httpx
from sqlalchemy import select

from labeler.store import models
from labeler.store.models import Role, State
from labeler.store.users import add_user
from labeler.store.workspace import open_workspace
from tests.conftest import PROJECT_YAML, write_project
from tests.review_client import serve
from tests.test_review_queue import needing_review

REVIEWERS, ITEMS, OVERLAP = 20, 60, 2


def test_twenty_reviewers_never_exceed_the_overlap_and_every_submission_counts_once(tmp_path, store_url):
    yaml_text = PROJECT_YAML.format(name="crowd").replace(
        "  target_accuracy: 0.9\n", f"  target_accuracy: 0.9\n  review_overlap: {OVERLAP}\n  review_gold_share: 0\n")
    root = write_project(tmp_path / "proj", yaml_text=yaml_text)
    ws = open_workspace(root, url=store_url)
    needing_review(ws, tmp_path, ITEMS)
    tokens = {f"r{k}": add_user(ws, f"r{k}", Role.reviewer, with_token=True) for k in range(REVIEWERS)}
    recorded, duplicates, errors = Counter(), Counter(), []

    def reviewer(name: str, token: str, base: str) -> None:
        rng = random.Random(name)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as web:
            item = web.get("/api/queue/next").json()["item"]
            while item:
                answer = {"item_id": item["item_id"], "label": rng.choice(["positive", "negative"]),
                          "client_id": uuid.uuid4().hex}
                response = web.post("/api/queue/submit", json=answer)
                if response.status_code != 200:
                    errors.append(response.text)
                    return
                recorded[name] += response.json()["status"] == "recorded"
                if rng.random() < 0.3:  # the response was "lost": the client sends the same answer again
                    retry = web.post("/api/queue/submit", json=answer).json()
                    duplicates[name] += retry["status"] == "duplicate"
                    item = retry["item"]
                else:
                    item = response.json()["item"]

    with serve(root, store_url) as base:
        threads = [threading.Thread(target=reviewer, args=(name, token, base)) for name, token in tokens.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    assert errors == []
    with ws.session() as s:
        tasks = s.execute(select(models.ReviewTask.item_id, models.ReviewTask.user_id)
                          .where(models.ReviewTask.submitted_at.is_not(None))).all()
        states = Counter(s.scalars(select(models.Decision.state)))
        counts = dict(s.execute(select(models.Decision.item_id, models.Decision.review_count)).all())
    per_item = Counter(item for item, _ in tasks)
    assert len(per_item) == ITEMS and set(per_item.values()) == {OVERLAP}  # every item, exactly `overlap` reviews
    assert len(set(tasks)) == len(tasks)  # nobody reviewed an item twice
    assert counts == dict(per_item)  # the queue's running count agrees with the tasks
    assert sum(recorded.values()) == len(tasks) == ITEMS * OVERLAP  # each submission counted once...
    assert sum(duplicates.values()) > 0  # ...retries included, which came back as duplicates
    assert states[State.needs_review] == 0 and states[State.confirmed] + states[State.escalated] == ITEMS
    assert len(recorded) > REVIEWERS // 2  # the work was shared, not done by one fast reviewer
    ws.engine.dispose()
