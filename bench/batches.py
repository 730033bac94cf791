"""What `batch: true` saves: the same items asked one call at a time and as one provider batch, priced by litellm.

    python bench/batches.py [--items 1000] [--models gpt-4o-mini gpt-4.1-mini gpt-4o]

A local test server (tests/llm_server.py) answers both ways, as OpenAI's chat and batch endpoints do,
and reports 100 prompt and 1 completion tokens a question; the model names are litellm's, so each
response is priced by litellm's list (online: the response's cost; batch: litellm's batch prices).
Printed per model: the run's measured cost per 1,000 items both ways and the saving, the calls made,
the wall time, and the dry-run estimate for the bench's real prompts (token-counted) both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABELS = ["positive", "negative", "neutral"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=["gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"])
    args = parser.parse_args()
    from tests.llm_server import server_process

    with server_process() as base_url:
        measure(args, base_url)


def measure(args, base_url: str) -> None:
    from sqlalchemy import func, select

    from labeler.annotators.runner import run_askers
    from labeler.data.imports import import_items
    from labeler.store import models
    from labeler.store.workspace import open_workspace
    from prompts.annotators import build_askers
    from routing.flow import estimate

    print(f"{args.items} items; costs in US dollars per 1,000 items, litellm's prices")
    print(f"{'model':<14} {'online $':>9} {'batch $':>9} {'saving':>7} {'calls':>6} {'batches':>7} "
          f"{'online s':>8} {'batch s':>8} {'dry-run online $':>16} {'dry-run batch $':>15}")
    for model in args.models:
        cost, seconds, dry, batches = {}, {}, {}, 0
        for name in ("online", "batch"):  # a project each: the two would share their response cache
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp) / "batches"
                root.mkdir()
                annotator = (f"  - {{name: {name}, kind: llm, model: openai/{model}, api_base: '{base_url}', "
                             f"max_concurrency: 64{', batch: true, batch_poll_seconds: 0.05' if name == 'batch' else ''}}}\n")
                (root / "labeler.yaml").write_text(f"name: batches\nlabels: {{{', '.join(f'{x}: {x}' for x in LABELS)}}}\n"
                                                   f"fields: [text]\nannotators:\n{annotator}")
                (root / "guidelines.md").write_text("# Bench\n\n" + "".join(f"## {x}\n{x}\n\n" for x in LABELS))
                (root / "items.csv").write_text("id,text\n" + "".join(
                    f"i{n},item {n}: the delivery came {n % 7} days late but the product is {LABELS[n % 3]}\n"
                    for n in range(args.items)))
                ws = open_workspace(root)
                import_items(ws, root / "items.csv")
                with ws.session() as s:
                    items = list(s.scalars(select(models.Item.id)))
                [asker], _ = build_askers(ws)
                dry[name] = estimate(ws, [asker])["cost"]
                started = time.perf_counter()
                asyncio.run(run_askers(ws, [asker], items))
                seconds[name] = time.perf_counter() - started
                with ws.session() as s:
                    cost[name] = s.scalar(select(func.sum(models.Vote.cost))) or 0.0
                    voted = s.scalar(select(func.count()).select_from(models.Vote))
                    batches += s.scalar(select(func.count()).select_from(models.ProviderBatch))
                assert voted == len(items), f"{name}: {voted} of {len(items)} voted"
        per_k = {name: c * 1000 / args.items for name, c in cost.items()}
        saving = 1 - per_k["batch"] / per_k["online"] if per_k["online"] else float("nan")
        print(f"{model:<14} {per_k['online']:>9.4f} {per_k['batch']:>9.4f} {saving:>7.1%} {args.items:>6} "
              f"{batches:>7} {seconds['online']:>8.1f} {seconds['batch']:>8.1f} "
              f"{dry['online'] * 1000 / args.items:>16.4f} {dry['batch'] * 1000 / args.items:>15.4f}")


if __name__ == "__main__":
    main()
