"""LLM annotators: one call per item through litellm, with retries, a response cache and cost.

The prompt is a PromptTask (built by the `prompts` layer): messages for an item, and the
parse of an answer. Retries are for transient errors only (429, 5xx, timeouts, resets),
with jittered backoff that honours Retry-After; anything else fails that one vote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Any, Protocol

from sqlalchemy import select
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from labeler import models
from labeler.config import LLMAnnotator
from labeler.errors import LabelerError
from labeler.runner import Answer, ItemRef, PermanentError

TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
MAX_RETRY_AFTER = 120.0
TOP_LOGPROBS = 5


class PromptTask(Protocol):
    version: str

    def messages(self, fields: dict[str, Any]) -> list[dict[str, str]]: ...

    def parse(self, text: str | None, top_logprobs: list[dict] | None = None): ...


def litellm():
    """Import litellm lazily (it takes a second) and quietly."""
    import litellm as module

    module.telemetry = False
    module.suppress_debug_info = True
    return module


def is_transient(exc: BaseException) -> bool:
    lm = litellm()
    if isinstance(exc, (lm.RateLimitError, lm.InternalServerError, lm.ServiceUnavailableError, lm.Timeout,
                        lm.APIConnectionError, lm.BadGatewayError, asyncio.TimeoutError, ConnectionError)):
        return True
    return getattr(exc, "status_code", None) in TRANSIENT_STATUS


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait, from a Retry-After header."""
    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return min(float(value), MAX_RETRY_AFTER) if value is not None else None
    except ValueError:
        return None


class _Wait:
    """Exponential backoff with full jitter, never shorter than the server's Retry-After."""

    def __init__(self):
        self.backoff = wait_random_exponential(multiplier=0.25, max=20)

    def __call__(self, state) -> float:
        asked = retry_after(state.outcome.exception()) or 0.0
        return max(asked, self.backoff(state))


class RateLimit:
    """At most `rpm` call starts per minute in this process."""

    def __init__(self, rpm: int | None):
        self.interval = 60.0 / rpm if rpm else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


def top_logprobs_of(choice: dict) -> list[dict] | None:
    """The first answer token's top logprobs, skipping leading whitespace tokens."""
    content = ((choice or {}).get("logprobs") or {}).get("content") or []
    for token in content:
        if str(token.get("token", "")).strip():
            return token.get("top_logprobs") or [token]
    return None


class LLMAsker:
    def __init__(self, config: LLMAnnotator, annotator_id: int, task: PromptTask, engine, *, max_tokens: int = 16):
        self.config = config
        self.name = config.name
        self.annotator_id = annotator_id
        self.task = task
        self.version = task.version
        self.max_concurrency = config.max_concurrency
        self.engine = engine
        self.rate = RateLimit(config.rpm)
        self.params: dict[str, Any] = {"temperature": config.temperature, "max_tokens": max_tokens}
        if config.logprobs:
            self.params |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        self.api_key = None
        if config.api_key_env:
            self.api_key = os.environ.get(config.api_key_env)
            if not self.api_key:
                raise LabelerError(f"annotator {config.name}: environment variable {config.api_key_env} is not set")

    def cache_key(self, item: ItemRef) -> str:
        # The key, like everything stored, never includes the API key.
        blob = json.dumps([self.config.model, self.version, item.content_hash, self.params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def prefetch(self, items: list[ItemRef]) -> None:
        """Load the cached responses for these items in a few queries, not one per call."""
        keys = [self.cache_key(item) for item in items]
        self._hits: dict[str, dict] = {}
        with self.engine.connect() as c:
            for start in range(0, len(keys), 2000):
                rows = c.execute(
                    select(models.ResponseCache.key, models.ResponseCache.response)
                    .where(models.ResponseCache.key.in_(keys[start:start + 2000]))
                )
                self._hits.update(dict(rows.all()))

    def _cached(self, key: str) -> dict | None:
        hits = getattr(self, "_hits", None)
        if hits is not None:
            return hits.pop(key, None)
        with self.engine.connect() as c:
            row = c.execute(select(models.ResponseCache.response).where(models.ResponseCache.key == key)).first()
        return row[0] if row else None

    async def _call(self, messages: list[dict]) -> dict:
        lm = litellm()
        kwargs = dict(self.params, model=self.config.model, messages=messages, num_retries=0,
                      timeout=self.config.timeout, drop_params=True)
        if self.config.api_base:
            kwargs["api_base"] = self.config.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        elif self.config.api_base:
            kwargs["api_key"] = "no-key"  # local servers take none, but OpenAI's client insists on one
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=_Wait(),
            retry=retry_if_exception(is_transient),
            reraise=True,
        ):
            with attempt:
                await self.rate.wait()
                try:
                    response = await lm.acompletion(**kwargs)
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    raise PermanentError(f"{type(exc).__name__}: {exc}") from exc
        data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
        data["_cost"] = self._cost(response, data)
        return data

    def _cost(self, response, data: dict) -> float:
        usage = data.get("usage") or {}
        if self.config.cost_per_1k_tokens is not None:
            return self.config.cost_per_1k_tokens * (usage.get("total_tokens") or 0) / 1000
        # litellm prices every response as it logs it; computing it again costs ~1 ms a call.
        cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        return float(cost or 0.0)  # None: a model litellm has no price for (local servers)

    async def ask(self, item: ItemRef) -> Answer:
        key = self.cache_key(item)
        data = self._cached(key)
        fresh = data is None
        started = time.perf_counter()
        if fresh:
            data = await self._call(self.task.messages(item.fields))
        choice = (data.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content")
        parsed = self.task.parse(text, top_logprobs_of(choice))
        return Answer(
            label=parsed.label, probs=parsed.probs, abstain_reason=parsed.abstain_reason, raw=text,
            cost=data.get("_cost", 0.0) if fresh else 0.0,
            latency_ms=(time.perf_counter() - started) * 1000 if fresh else 0.0,
            cache=(key, data) if fresh else None,
        )
