"""Throughput of `labeler worker` processes sharing one PostgreSQL, against a 100 ms test LLM server.

    python bench/workers.py --store postgresql://postgres@127.0.0.1:5432/DB [--workers 4] [--items 3000]
                            [--latency 0.1] [--jobs 4]

The database must exist and be empty. Starts the test server and the workers as their own
processes, queues `labeler run --distributed`, and prints calls per second from the queueing to
the finished run, beside the concurrency bound (workers x jobs x 16 calls in flight / latency).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from labeler.data.imports import import_items  # noqa: E402
from labeler.store import models  # noqa: E402
from labeler.store.workspace import open_workspace  # noqa: E402
from tests.conftest import write_file, write_project  # noqa: E402
from tests.llm_server import server_process  # noqa: E402

CALLS_PER_JOB = 16  # the llm annotator's max_concurrency


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True, help="an empty PostgreSQL database")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=4, help="jobs each worker runs side by side")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    workers = []
    with server_process(args.latency) as base_url, tempfile.TemporaryDirectory() as tmp:
        yaml_text = (f"name: bench\nlabels: {{positive: liked it, negative: did not like it}}\nfields: [text]\n"
                     f"annotators:\n  - {{name: llm, kind: llm, model: openai/ok, api_base: '{base_url}', "
                     f"max_concurrency: {CALLS_PER_JOB}}}\n")
        root = write_project(Path(tmp) / "proj", yaml_text=yaml_text)
        ws = open_workspace(root, url=args.store)
        rows = "".join(f"i{n},item {n} is {('positive', 'negative')[n % 2]}\n" for n in range(args.items))
        import_items(ws, write_file(Path(tmp) / "items.csv", "id,text\n" + rows))
        env = dict(os.environ, LABELER_DATABASE_URL=args.store)
        try:
            workers = [subprocess.Popen([sys.executable, "-m", "labeler.cli", "worker", "--concurrency", str(args.jobs),
                                         "-p", str(root)], env=env, stderr=subprocess.DEVNULL) for _ in range(args.workers)]
            time.sleep(3)  # let them start
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "labeler.cli", "run", "--distributed", "-p", str(root)],
                           env=env, check=True, capture_output=True)
            while True:
                with ws.session() as s:
                    done = s.scalar(select(func.count()).select_from(models.Run)
                                    .where(models.Run.kind == "run", models.Run.finished_at.is_not(None)))
                if done:
                    break
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            with ws.session() as s:
                votes = s.scalar(select(func.count()).select_from(models.Vote))
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait()
    bound = args.workers * args.jobs * CALLS_PER_JOB / args.latency
    print(f"{args.workers} workers x {args.jobs} jobs, {votes:,} votes in {elapsed:.1f} s "
          f"(queueing to finished run, start-up of the run included)")
    print(f"  {votes / elapsed:,.0f} calls/s; concurrency bound {bound:,.0f} calls/s; "
          f"{votes / elapsed / args.workers:,.0f} calls/s per worker")


if __name__ == "__main__":
    main()
