"""Time and peak memory of importing and exporting many items through the CLI.

    python bench/import_export.py [--items 1000000] [--store URL]

Writes a CSV of `--items` short reviews, then runs `labeler import items` and `labeler export`
as their own processes (SQLite in a temporary folder unless --store gives a PostgreSQL URL) and
prints wall time and peak resident memory of each; the target is under 1 GB for a million items.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import write_project  # noqa: E402


def measured(args: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS in MB of one CLI process (its own, not this script's)."""
    code = ("import resource, runpy, sys; sys.argv = ['labeler', *sys.argv[1:]];\n"
            "try:\n    runpy.run_module('labeler.cli', run_name='__main__')\n"
            "finally:\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return elapsed, int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--store", help="a PostgreSQL URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_project(Path(tmp) / "proj", name="bench")
        csv = Path(tmp) / "items.csv"
        with csv.open("w") as out:
            out.write("id,text\n")
            out.writelines(f"item-{k},review number {k}: the kettle was fine but the lid rattled a little\n"
                           for k in range(args.items))
        env = dict(os.environ, LABELER_DATABASE_URL=args.store or f"sqlite:///{Path(tmp) / 'store.db'}")
        size = csv.stat().st_size / 1e6
        print(f"{args.items:,} items, {size:.0f} MB of CSV, store: {'PostgreSQL' if args.store else 'SQLite'}")
        for name, command in (
            ("import", ["import", "items", str(csv), "-p", str(root)]),
            ("import again", ["import", "items", str(csv), "-p", str(root)]),
            ("export jsonl", ["export", "-o", str(Path(tmp) / "out.jsonl"), "-p", str(root)]),
        ):
            seconds, peak = measured(command, env)
            print(f"  {name:13s} {seconds:7.1f} s  {args.items / seconds:9,.0f} items/s  peak {peak:6.0f} MB")
    print(f"(this script's own peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
