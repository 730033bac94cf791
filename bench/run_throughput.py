"""Calls per second of `labeler run` against a local server with fixed latency, beside bare litellm.

    python bench/run_throughput.py [--items 3000] [--latency 0.1] [--concurrency 64]

Prints: the bound (concurrency / latency), a bare asyncio loop of litellm.acompletion at the
same concurrency, `labeler run` in this process (prompt building, parsing, cache and vote writes
included), the same as a command in its own process on a fresh project (its start included:
Python, litellm's import, the store), the bare loop as a process of its own too (its start, that is
Python and litellm's import, included), their ratios, the number of calls a rerun makes (must be 0), the
garbage collector's time in the bare loop and in the run, and what a command pays before its first call
(Python with litellm's import; `labeler run` with nothing to ask), and a run's imports with Python's
collector as it comes and as the command sets it (labeler.collector).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



async def bare_litellm(base_url: str, calls: int, concurrency: int) -> float:
    """Only litellm, set as labeler sets it (its packaged price list, no telemetry, quiet): the loop a user
    would write."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm as lm

    lm.telemetry, lm.suppress_debug_info = False, True

    limit = asyncio.Semaphore(concurrency)
    messages = [{"role": "system", "content": "Labels:\n- positive: p\n- negative: n\n"},
                {"role": "user", "content": "item is positive"}]

    async def one():
        async with limit:
            await lm.acompletion(model="openai/ok", messages=messages, api_base=base_url, api_key="x",
                                 num_retries=0, max_tokens=16, logprobs=True, top_logprobs=5)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--bare-only", metavar="URL", help=argparse.SUPPRESS)  # the bare loop, as its own process
    args = parser.parse_args()
    if args.bare_only:
        asyncio.run(bare_litellm(args.bare_only, args.items, args.concurrency))
        return
    from tests.llm_server import server_process

    with server_process(args.latency) as base_url:
        measure(args, base_url)


def project(root: Path, base_url: str, args) -> None:
    from labeler.data.imports import import_items
    from labeler.store.workspace import open_workspace

    root.mkdir()
    (root / "labeler.yaml").write_text(
        "name: bench\nlabels: {positive: p, negative: n}\nfields: [text]\nannotators:\n"
        f"  - {{name: gpt, kind: llm, model: openai/ok, api_base: '{base_url}', "
        f"max_concurrency: {args.concurrency}}}\n"
    )
    (root / "guidelines.md").write_text("# Bench\n\n## positive\np\n\n## negative\nn\n")
    items = root / "items.csv"
    items.write_text("id,text\n" + "".join(f"i{n},item {n} is {'positive' if n % 2 else 'negative'}\n" for n in range(args.items)))
    ws = open_workspace(root)
    import_items(ws, items)
    ws.engine.dispose()


@contextmanager
def collector_time():
    """The seconds Python's garbage collector runs inside the block (a one-element list, filled at its end)."""
    spent, started = [0.0], [0.0]

    def timed(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - started[0]

    gc.callbacks.append(timed)
    try:
        yield spent
    finally:
        gc.callbacks.remove(timed)


RUN_IMPORTS = "import labeler.cli, routing.flow, prompts.annotators, sklearn.linear_model, litellm"


def start_costs(tmp: Path, base_url: str, args) -> dict[str, float]:
    """What a command pays before its first call, best of three: Python with litellm's import; `labeler run`
    on a project with nothing left to ask (one item, already voted); and the imports of a run that asks (the
    command, the cascade, the prompts, scikit-learn, litellm) with Python's collector as it comes and as the
    command sets it."""
    done = tmp / "done"
    project(done, base_url, argparse.Namespace(items=1, concurrency=args.concurrency))
    run = [sys.executable, "-m", "labeler.cli", "run", "-p", str(done), "--json"]
    subprocess.run(run, check=True, capture_output=True)
    commands = {"litellm": [sys.executable, "-c", "import os; os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'; "
                                                  "import litellm"],
                "run": run,
                "imports": [sys.executable, "-c", RUN_IMPORTS],
                "imports, collector set": [sys.executable, "-c", "from labeler import collector; "
                                                                 "collector.for_commands(); " + RUN_IMPORTS]}
    best = {}
    for name, command in commands.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        best[name] = min(times)
    return best


def measure(args, base_url: str) -> None:
    from labeler.store.workspace import open_workspace
    from prompts.annotators import build_askers
    from routing.flow import run_project

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        project(root, base_url, args)
        ws = open_workspace(root)
        with collector_time() as bare_gc:
            bare = asyncio.run(bare_litellm(base_url, args.items, args.concurrency))
        askers, _ = build_askers(ws)
        started = time.perf_counter()
        with collector_time() as ours_gc:
            report = run_project(ws, askers)
        ours = report["annotators"][0]["voted"] / (time.perf_counter() - started)
        calls = report["annotators"][0]["voted"] + report["annotators"][0]["failed"]
        rerun = run_project(ws, build_askers(ws)[0])
        rerun_calls = rerun["annotators"][0]["asked"]
        cli_root = Path(tmp) / "cli"
        project(cli_root, base_url, args)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "labeler.cli", "run", "-p", str(cli_root), "--json"], check=True,
                       capture_output=True)
        cli = args.items / (time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--bare-only", base_url, "--items", str(args.items),
                        "--concurrency", str(args.concurrency)], check=True, capture_output=True)
        bare_process = args.items / (time.perf_counter() - started)
        starts = start_costs(Path(tmp), base_url, args)
    bound = args.concurrency / args.latency
    print(f"items {args.items}, latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}")
    print(f"bound (concurrency / latency):   {bound:8.1f} calls/s")
    print(f"bare litellm.acompletion loop:   {bare:8.1f} calls/s")
    print(f"labeler run:                     {ours:8.1f} calls/s  ({calls} calls)")
    print(f"labeler run / bare litellm:      {ours / bare:8.1%}")
    print(f"labeler run as a command:        {cli:8.1f} calls/s  (its start included)")
    print(f"... / bare litellm:              {cli / bare:8.1%}")
    print(f"bare loop as a process:          {bare_process:8.1f} calls/s  (its start included)")
    print(f"command / bare loop as process:  {cli / bare_process:8.1%}")
    print(f"rerun calls:                     {rerun_calls:8d}")
    print(f"collector (gc), bare loop        {bare_gc[0]:8.2f} s")
    print(f"collector (gc), labeler run      {ours_gc[0]:8.2f} s")
    print(f"start: Python + import litellm   {starts['litellm']:8.2f} s")
    print(f"start: labeler run, nothing to ask {starts['run']:6.2f} s  (imports, the store, the plan; best of 3)")
    print(f"imports of a run, Python's collector {starts['imports']:5.2f} s")
    print(f"imports of a run, collector set  {starts['imports, collector set']:8.2f} s  (labeler.collector.for_commands)")


if __name__ == "__main__":
    main()
