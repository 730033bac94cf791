"""Provider batch APIs: a stage's questions to one `llm` annotator sent as one batch (about half the price).

The questions go up as a JSONL file whose `custom_id` is each question's response cache key; the batch
id is stored (ProviderBatch) as soon as the provider takes it, and the run polls with backoff. Collected
answers are cached in the transaction that marks their batch collected. So a run killed between submit
and collect finds its batch on the rerun and collects it instead of paying again; one killed after
collecting finds the answers in the cache; votes are written under their unique key as always.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from typing import AsyncIterator

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from labeler.annotators.llm import LLMAsker, _endpoint, litellm
from labeler.annotators.runner import Answer, BatchFailure, ItemRef, keeping
from labeler.store import models
from labeler.store.engine import insert_new
from labeler.store.models import utcnow

TERMINAL = {"completed", "failed", "expired", "cancelled"}
MAX_POLL_SECONDS = 600.0
ENDPOINT = "/v1/chat/completions"


_loop: asyncio.AbstractEventLoop | None = None


def _on_provider_loop(call):
    """`call` run on one event loop kept for provider file and batch calls: litellm caches their HTTP clients
    per loop, and one left from a closed loop (each stage of a run is an asyncio.run) fails when collected."""

    async def run(**kwargs):
        global _loop
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="labeler-provider-batches", daemon=True).start()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(**kwargs), _loop))

    return run


class ProviderBatches:
    """The batch side of one LLM annotator at one prompt version."""

    def __init__(self, asker: LLMAsker):
        self.asker, self.config = asker, asker.config
        model, provider, _, _ = litellm().get_llm_provider(self.config.model, api_base=self.config.api_base)
        self.model = model  # as the provider names it, inside each request
        # Files and batches take the provider where chat calls take the model.
        self.endpoint = {k: v for k, v in _endpoint(self.config.model, self.config.api_base, asker.api_key).items()
                         if k != "model"} | {"custom_llm_provider": provider, "timeout": self.config.timeout}

    async def _provider(self, call, **kwargs):
        """A provider file or batch call, retried like a chat call, on the loop kept for them."""
        return await self.asker.retrying(_on_provider_loop(call), **kwargs, **self.endpoint)

    async def answers(self, items: list[ItemRef], room: float | None = None
                      ) -> AsyncIterator[tuple[ItemRef, Answer | Exception | None]]:
        """Each item's answer (or why it has none; None: not asked, the budget would not cover it): cached
        ones first, then those of batches sent earlier and not yet collected, then a new batch's."""
        asker = self.asker
        keys = {item.id: asker.cache_key(item) for item in items}
        hits = getattr(asker, "_hits", {})
        for item in [i for i in items if keys[i.id] in hits]:
            yield item, await asker.ask(item)
        rest = [i for i in items if keys[i.id] not in hits]
        open_batches = [b for b in keeping(self._open, "nothing was sent") if set(b.requests) & {keys[i.id] for i in rest}]
        waiting = {key for b in open_batches for key in b.requests}
        new = [i for i in rest if keys[i.id] not in waiting]
        if room is not None and new:
            _, cost = asker.priced(new, sample=50)
            if cost:  # a price known: send what the budget covers
                affordable = math.floor(room / (cost / len(new)))
                for item in new[affordable:]:
                    yield item, None
                new = new[:affordable]
        polls = [self._collect(b.id, b.batch_id, b.requests) for b in open_batches]
        if new:
            try:
                batch_id = await self._submit(new, keys)
            except Exception as exc:  # the provider did not take it: every question fails alike
                for item in new:
                    yield item, exc
            else:
                row_id = keeping(lambda: self._record(batch_id, new, keys),
                                 f"provider batch {batch_id} was sent and not recorded; its answers are lost")
                polls.append(self._collect(row_id, batch_id, {keys[i.id]: i.id for i in new}))
        sent = waiting | {keys[i.id] for i in new}
        by_key = {keys[i.id]: i for i in rest if keys[i.id] in sent}
        for finished in asyncio.as_completed(polls):
            for key, result in (await finished).items():
                if (item := by_key.pop(key, None)) is None:
                    continue  # another stage's question, cached for it
                if isinstance(result, Exception):
                    yield item, result
                else:
                    answer = await asker.read(item, result)
                    answer.cost = result.get("_cost", 0.0)
                    yield item, answer

    def _open(self) -> list:
        """This annotator's batches sent and not yet collected (id, batch_id, requests)."""
        B = models.ProviderBatch
        with self.asker.engine.connect() as c:
            return c.execute(select(B.id, B.batch_id, B.requests).where(
                B.annotator_id == self.asker.annotator_id, B.version == self.asker.version,
                B.status == "submitted").order_by(B.id)).all()

    async def _submit(self, items: list[ItemRef], keys: dict[int, str]) -> str:
        lines = []
        for item in items:
            body = dict(self.asker.params, model=self.model, messages=self.asker.task.messages(item.fields))
            lines.append(json.dumps({"custom_id": keys[item.id], "method": "POST", "url": ENDPOINT, "body": body}))
        lm = litellm()
        upload = await self._provider(lm.acreate_file, file=("labeler-batch.jsonl", ("\n".join(lines) + "\n").encode()),
                                      purpose="batch")
        batch = await self._provider(lm.acreate_batch, completion_window="24h", endpoint=ENDPOINT, input_file_id=upload.id,
                                     metadata={"annotator": self.asker.name, "version": self.asker.version})
        return batch.id

    def _record(self, batch_id: str, items: list[ItemRef], keys: dict[int, str]) -> int:
        """The batch's row, written the moment the provider took it: from here on its questions are paid for."""
        with self.asker.engine.begin() as c:
            return c.execute(models.ProviderBatch.__table__.insert().values(
                annotator_id=self.asker.annotator_id, version=self.asker.version, batch_id=batch_id,
                requests={keys[item.id]: item.id for item in items}, status="submitted", created_at=utcnow(),
                counts={}).returning(models.ProviderBatch.id)).scalar_one()

    async def _collect(self, row_id: int, batch_id: str, requests: dict[str, int]) -> dict[str, dict | Exception]:
        """Poll the batch until it ends (or the wait runs out), then its results by cache key."""
        lm, delay, deadline = litellm(), self.config.batch_poll_seconds, time.monotonic() + self.config.batch_max_wait
        while True:
            batch = await self._provider(lm.aretrieve_batch, batch_id=batch_id)
            if batch.status in TERMINAL:
                break
            if time.monotonic() + delay > deadline:
                still = BatchFailure(f"batch {batch_id} still {batch.status} after {self.config.batch_max_wait:g} s; "
                                     "rerun to collect it")
                return {key: still for key in requests}
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL_SECONDS)
        results: dict[str, dict | Exception] = {}
        for line in await self._lines(batch.output_file_id):
            response = line.get("response") or {}
            if response.get("status_code") == 200 and isinstance(response.get("body"), dict):
                data = response["body"]
                data["_cost"] = self._cost(data.get("usage") or {})
                results[line.get("custom_id")] = data
            else:
                results[line.get("custom_id")] = BatchFailure(_line_error(line))
        for line in await self._lines(batch.error_file_id):
            results[line.get("custom_id")] = BatchFailure(_line_error(line))
        why = _batch_error(batch)
        for key in requests:
            results.setdefault(key, BatchFailure(why))
        answered = {k: v for k, v in results.items() if k in requests and isinstance(v, dict)}
        keeping(lambda: self._store(row_id, batch, answered), f"the answers of batch {batch_id} were not kept; "
                "a rerun collects them")
        return results

    async def _lines(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        content = await self._provider(litellm().afile_content, file_id=file_id)
        return [json.loads(line) for line in content.content.decode().splitlines() if line.strip()]

    def _cost(self, usage: dict) -> float:
        return self.asker.price(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0) or 0.0

    def _store(self, row_id: int, batch, answered: dict[str, dict]) -> None:
        """The answers cached and the batch marked collected, in one transaction."""
        now = utcnow()
        counts = batch.request_counts.model_dump() if getattr(batch, "request_counts", None) else {}
        with Session(self.asker.engine) as s, s.begin():
            insert_new(s, models.ResponseCache, [{"key": k, "response": v, "created_at": now} for k, v in answered.items()])
            s.execute(update(models.ProviderBatch).where(models.ProviderBatch.id == row_id)
                      .values(status=batch.status, collected_at=now, counts=counts | {"answered": len(answered)}))


def _line_error(line: dict) -> str:
    error = line.get("error") or ((line.get("response") or {}).get("body") or {}).get("error") or {}
    status = (line.get("response") or {}).get("status_code")
    message = error.get("message") if isinstance(error, dict) else str(error)
    code = error.get("code") if isinstance(error, dict) else None
    return "batch request failed" + (f" ({status})" if status else "") + (f" [{code}]" if code else "") + \
        (f": {message}" if message else "")


def _batch_error(batch) -> str:
    if batch.status == "expired":
        return f"batch {batch.id} expired before this question ran; rerun to ask again"
    errors = getattr(batch, "errors", None)
    data = (errors.get("data") if isinstance(errors, dict) else getattr(errors, "data", None)) or []
    first = data[0] if data else None
    message = (first.get("message") if isinstance(first, dict) else getattr(first, "message", None)) if first else None
    return f"batch {batch.id} {batch.status}" + (f": {message}" if message else "")
