"""Review API latency with a big store: p50 and p95 of leasing the next item, and of submit-with-next.

    python bench/review_latency.py [--items 100000] [--reviewers 4] [--answers 150] [--overlap 2] [--store URL]

Fills a store (SQLite in a temporary folder, or with --store URL a new database on that PostgreSQL
server) with `--items`
items waiting for review, starts `labeler serve` in its own process, and has `--reviewers` threads
work the queue over HTTP with API tokens. A submit's response carries the next item, so
"submit+next" is the whole cost of one answer as a reviewer feels it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select  # noqa: E402

from labeler.data.imports import import_items  # noqa: E402
from labeler.store import models  # noqa: E402
from labeler.store.engine import upsert  # noqa: E402
from labeler.store.models import Role, State, utcnow  # noqa: E402
from labeler.store.users import add_user  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402
from tests.conftest import PROJECT_YAML, write_project  # noqa: E402
from tests.review_client import serve  # noqa: E402


def fill(root: Path, url: str, items: int) -> list[str]:
    ws = open_workspace(root, url=url)
    csv = root / "items.csv"
    with csv.open("w") as out:
        out.write("id,text\n")
        out.writelines(f"i{k},review text number {k} about a product\n" for k in range(items))
    started = time.perf_counter()
    import_items(ws, csv)
    with ws.session() as s:
        ids = list(s.scalars(select(models.Item.id)))
    for start in range(0, len(ids), 10_000):
        with ws.session() as s:
            upsert(s, models.Decision, [{"item_id": i, "label": "positive", "confidence": 0.6, "state": State.needs_review,
                                         "method": "bench", "details": {}, "updated_at": utcnow()}
                                        for i in ids[start:start + 10_000]], ["item_id"])
    print(f"filled {items:,} items needing review in {time.perf_counter() - started:.1f} s")
    return [add_user(ws, f"r{k}", Role.reviewer, with_token=True) for k in range(64)]


def work(base: str, token: str, answers: int, nexts: list, submits: list) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as web:
        started = time.perf_counter()
        item = web.get("/api/queue/next").json()["item"]
        nexts.append(time.perf_counter() - started)
        for _ in range(answers):
            if item is None:
                return
            started = time.perf_counter()
            response = web.post("/api/queue/submit", json={"item_id": item["item_id"], "label": "negative",
                                                          "client_id": uuid.uuid4().hex})
            submits.append(time.perf_counter() - started)
            response.raise_for_status()
            item = response.json()["item"]


def fresh_database(server_url: str) -> str:
    """A new database on the PostgreSQL server `server_url` names (left for a look afterwards; its name is printed)."""
    import uuid

    from sqlalchemy import create_engine, make_url, text

    from labeler.store.engine import normalise_url

    admin_url = make_url(normalise_url(server_url))
    name = f"labeler_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    print(f"PostgreSQL database {name} (drop it when done)")
    return admin_url.set(database=name).render_as_string(hide_password=False)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--reviewers", type=int, default=4)
    parser.add_argument("--answers", type=int, default=150, help="answers per reviewer")
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--store", help="a PostgreSQL URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        yaml_text = PROJECT_YAML.format(name="bench").replace(
            "  target_accuracy: 0.9\n", f"  target_accuracy: 0.9\n  review_overlap: {args.overlap}\n")
        root = write_project(Path(tmp) / "proj", yaml_text=yaml_text)
        url = fresh_database(args.store) if args.store else f"sqlite:///{Path(tmp) / 'store.db'}"
        tokens = fill(root, url, args.items)
        with serve(root, url) as base:
            nexts: list[float] = []
            submits: list[float] = []
            threads = [threading.Thread(target=work, args=(base, tokens[k], args.answers, nexts, submits))
                       for k in range(args.reviewers)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
    store = "PostgreSQL" if args.store else "SQLite"
    print(f"{store}, {args.items:,} items, {args.reviewers} reviewers at once, overlap {args.overlap}")
    print(f"  next (first lease):  p50 {percentile(nexts, 50):7.1f} ms  p95 {percentile(nexts, 95):7.1f} ms  (n={len(nexts)})")
    print(f"  submit + next:       p50 {percentile(submits, 50):7.1f} ms  p95 {percentile(submits, 95):7.1f} ms  "
          f"(n={len(submits)})")
    print(f"  answers per second:  {len(submits) / elapsed:.1f}")


if __name__ == "__main__":
    main()
