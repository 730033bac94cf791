"""Review API latency with a big store, on SQLite and PostgreSQL: the first lease, and submit-with-next.

    python bench/review_latency.py [--items 1000000] [--reviewers 4 20] [--pace 2] [--seconds 120]
                                   [--answers 150] [--overlap 2] [--postgres URL | --sqlite-only]
                                   [--server-log /var/log/postgresql/postgresql-15-main.log]

Fills each store (SQLite in a temporary folder; a new database on the PostgreSQL server at
`--postgres`, default $LABELER_TEST_POSTGRES_URL or the one on 127.0.0.1:5432 when it answers) with
`--items` items waiting for review, starts `labeler serve` in its own process, and has each number
of `--reviewers` work the queue over HTTP at once with API tokens, in two ways:

- paced: each reviewer reads for a while between answers (exponential, `--pace` seconds on
  average: a quick human) for `--seconds`. Latency here is what a reviewer feels.
- flat out: each reviewer answers `--answers` items without a pause. Answers per second is the
  server's capacity; latency here is mostly queueing (reviewers / capacity), not work.

A submit's response carries the next item, so "submit+next" is the whole cost of one answer.

With `--server-log` (PostgreSQL's log file, readable by you; the bench database logs every statement
with its duration), each line also says how long the server itself worked per answer: what of the
latency is the store's work, and what is round trips and Python on both ends.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, make_url, select, text  # noqa: E402

from labeler.data.imports import import_items  # noqa: E402
from labeler.store import models  # noqa: E402
from labeler.store.engine import upsert  # noqa: E402
from labeler.store.models import Role, State, utcnow  # noqa: E402
from labeler.store.users import add_user  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402
from tests.conftest import PROJECT_YAML, write_project  # noqa: E402
from tests.review_client import serve  # noqa: E402

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def fill(root: Path, url: str, items: int, users: int) -> list[str]:
    ws = open_workspace(root, url=url)
    csv = root / "items.csv"
    with csv.open("w") as out:
        out.write("id,text\n")
        out.writelines(f"i{k},review text number {k} about a product\n" for k in range(items))
    started = time.perf_counter()
    import_items(ws, csv)
    with ws.session() as s:
        ids = list(s.scalars(select(models.Item.id)))
    machine = {"label": "positive", "confidence": 0.6, "reason": "its calibrated confidence is below the level"}
    for start in range(0, len(ids), 10_000):
        with ws.session() as s:
            upsert(s, models.Decision, [{"item_id": i, "project_id": ws.project_id, "label": "positive", "confidence": 0.6,
                                         "state": State.needs_review, "method": "bench", "details": {"machine": machine},
                                         "updated_at": utcnow()} for i in ids[start:start + 10_000]], ["item_id"])
    print(f"  filled {items:,} items needing review in {time.perf_counter() - started:.0f} s", flush=True)
    tokens = [add_user(ws, f"r{k}", Role.reviewer, with_token=True) for k in range(users)]
    ws.engine.dispose()
    return tokens


def work(base: str, token: str, pace: float, until: float, answers: int, nexts: list, submits: list) -> None:
    rng = random.Random(token)
    if pace:  # people do not all arrive in the same millisecond
        time.sleep(rng.uniform(0, pace))
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as web:
        started = time.perf_counter()
        item = web.get("/api/queue/next").json()["item"]
        nexts.append(time.perf_counter() - started)
        done = 0
        while item is not None and done < answers and time.perf_counter() < until:
            if pace:
                time.sleep(rng.expovariate(1 / pace))
            started = time.perf_counter()
            response = web.post("/api/queue/submit", json={"item_id": item["item_id"], "label": "negative",
                                                          "client_id": uuid.uuid4().hex})
            submits.append(time.perf_counter() - started)
            response.raise_for_status()
            item = response.json()["item"]
            done += 1


def phase(base: str, tokens: list[str], pace: float, seconds: float, answers: int) -> dict:
    nexts: list[float] = []
    submits: list[float] = []
    until = time.perf_counter() + (seconds if pace else 3600)
    threads = [threading.Thread(target=work, args=(base, token, pace, until, answers if not pace else 10**9, nexts, submits))
               for token in tokens]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"nexts": nexts, "submits": submits, "elapsed": time.perf_counter() - started}


def server_ms(log: Path, offset: int, database: str) -> tuple[float, int]:
    """The durations PostgreSQL logged for `database` since `offset` of its log: total ms and statements."""
    total, statements = 0.0, 0
    with log.open(errors="replace") as lines:
        lines.seek(offset)
        for line in lines:
            found = re.search(r"@(\S+) LOG:\s+duration: ([\d.]+) ms", line)
            if found and found.group(1) == database:
                total, statements = total + float(found.group(2)), statements + 1
    return total, statements


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def bench_store(name: str, url: str, args) -> None:
    print(f"{name}, {args.items:,} items, overlap {args.overlap}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        yaml_text = PROJECT_YAML.format(name="bench").replace(
            "  target_accuracy: 0.9\n", f"  target_accuracy: 0.9\n  review_overlap: {args.overlap}\n")
        root = write_project(Path(tmp) / "proj", yaml_text=yaml_text)
        url = url or f"sqlite:///{Path(tmp) / 'store.db'}"
        tokens = fill(root, url, args.items, 2 * sum(args.reviewers))
        log = args.server_log if url.startswith("postgresql") else None
        if log:
            log_statements(url)
        with serve(root, url) as base:
            for reviewers in args.reviewers:
                for pace in (args.pace, 0.0):
                    offset = log.stat().st_size if log else 0
                    result = phase(base, [tokens.pop() for _ in range(reviewers)], pace, args.seconds, args.answers)
                    how = f"paced ({pace:g} s between answers)" if pace else "flat out"
                    submits = result["submits"]
                    server = ""
                    if log and submits:
                        total, statements = server_ms(log, offset, make_url(url).database)
                        server = (f" | server {total / len(submits):4.1f} ms an answer "
                                  f"({statements / len(submits):.0f} statements)")
                    print(f"  {reviewers:3d} reviewers {how:28s} first lease p50 {ms(result['nexts'], 50):6.1f} "
                          f"p95 {ms(result['nexts'], 95):6.1f} ms | submit+next p50 {ms(submits, 50):6.1f} "
                          f"p95 {ms(submits, 95):6.1f} ms (n={len(submits)}) | {len(submits) / result['elapsed']:5.1f} "
                          f"answers/s{server}", flush=True)


def log_statements(url: str) -> None:
    """Every statement on the bench database logged with its duration (from the next connection on)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'ALTER DATABASE "{make_url(url).database}" SET log_min_duration_statement = 0'))
    engine.dispose()


def fresh_database(server_url: str) -> str:
    """A new database on the PostgreSQL server `server_url` names (left for a look afterwards; its name is printed)."""
    from labeler.store.engine import normalise_url

    admin_url = make_url(normalise_url(server_url))
    name = f"labeler_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    print(f"  PostgreSQL database {name} (drop it when done)")
    return admin_url.set(database=name).render_as_string(hide_password=False)


def postgres_answers() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--reviewers", type=int, nargs="+", default=[4, 20], help="reviewers at once, one run each")
    parser.add_argument("--pace", type=float, default=2.0, help="mean seconds a paced reviewer reads between answers")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the paced reviewers work")
    parser.add_argument("--answers", type=int, default=150, help="answers per reviewer flat out")
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get("LABELER_TEST_POSTGRES_URL"),
                        help=f"a PostgreSQL server to make a database on (default {DEFAULT_POSTGRES} when it answers)")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--postgres-only", action="store_true")
    parser.add_argument("--server-log", type=Path, help="PostgreSQL's log file: adds the server's own time an answer")
    args = parser.parse_args()
    if not args.postgres_only:
        bench_store("SQLite", "", args)
    postgres = args.postgres or (DEFAULT_POSTGRES if postgres_answers() else None)
    if args.sqlite_only or not postgres:
        print("PostgreSQL: skipped" + ("" if args.sqlite_only else " (no server answers; give --postgres URL)"))
        return
    bench_store("PostgreSQL", fresh_database(postgres), args)


if __name__ == "__main__":
    main()
