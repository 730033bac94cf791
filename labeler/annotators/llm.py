"""LLM annotators: one call per item through litellm, with retries, a response cache and cost.

The prompt is a PromptTask (built by the `prompts` layer): messages for an item, and the
parse of an answer. Retries are for transient errors only (429, 5xx, timeouts, resets),
with jittered backoff that honours Retry-After; anything else fails that one vote.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import time
from typing import Any, Protocol

from sqlalchemy import select
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from labeler.annotators.ratelimit import rate_limit
from labeler.annotators.runner import Answer, ItemRef, PermanentError
from labeler.config import LLMAnnotator
from labeler.errors import LabelerError
from labeler.store import models

TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
MAX_RETRY_AFTER = 120.0
TOP_LOGPROBS = 5


class PromptTask(Protocol):
    version: str
    steps: int  # calls per item (a base model asked a label set label by label)
    request_params: dict[str, Any]

    def messages(self, fields: dict[str, Any], previous: list[str] = ()) -> list[dict[str, str]]: ...

    def step_answer(self, text: str | None, top_logprobs: list[dict] | None) -> str: ...

    def read(self, answers: list[tuple], leaning: dict | None = None): ...

    def read_samples(self, parsed: list) -> Any: ...

    def context_items(self) -> list[dict[str, Any]]: ...

    def leaning(self, answers: list[dict | None]) -> dict[str, float] | None: ...

    def parse(self, text: str | None, top_logprobs: list[dict] | None = None, leaning: dict | None = None): ...


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


def top_logprobs_of(choice: dict) -> list[dict] | None:
    """The first answer token's top logprobs, skipping leading whitespace tokens."""
    content = ((choice or {}).get("logprobs") or {}).get("content") or []
    for token in content:
        if str(token.get("token", "")).strip():
            return token.get("top_logprobs") or [token]
    return None


def _key(annotator: str, variable: str | None) -> str | None:
    if not variable:
        return None
    key = os.environ.get(variable)
    if not key:
        raise LabelerError(f"annotator {annotator}: environment variable {variable} is not set")
    return key


def _endpoint(model: str, api_base: str | None, api_key: str | None) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"model": model}
    if api_base:
        endpoint["api_base"] = api_base
    if api_key or api_base:
        endpoint["api_key"] = api_key or "no-key"  # local servers take none, but OpenAI's client insists on one
    return endpoint


def _router(config: LLMAnnotator):
    """litellm's Router over the deployments: load spread within their rpm/tpm, a failing one cooled down.

    Retries stay ours (tenacity, Retry-After); with LABELER_REDIS_URL the router counts usage in Redis,
    so rpm/tpm hold across workers."""
    from litellm import Router

    from labeler.annotators.ratelimit import REDIS_ENV

    model_list = [{"model_name": config.name,
                   "litellm_params": _endpoint(d.model, d.api_base, _key(config.name, d.api_key_env))
                   | {k: v for k, v in (("rpm", d.rpm), ("tpm", d.tpm)) if v}}
                  for d in config.deployments]
    redis = {"redis_url": os.environ[REDIS_ENV]} if os.environ.get(REDIS_ENV) else {}
    return Router(model_list=model_list, num_retries=0, allowed_fails=1, cooldown_time=30,
                  routing_strategy="simple-shuffle", **redis)


class LLMAsker:
    def __init__(self, config: LLMAnnotator, annotator_id: int, task: PromptTask, engine, *, max_tokens: int = 16):
        self.config = config
        self.name = config.name
        self.annotator_id = annotator_id
        self.task = task
        self.version = task.version
        self.max_concurrency = config.max_concurrency
        self.engine = engine
        self.rate = rate_limit(f"{config.model}@{config.api_base or ''}", config.rpm)
        self.params: dict[str, Any] = {"temperature": config.temperature, "max_tokens": max_tokens}
        self.params |= getattr(task, "request_params", {})
        if config.logprobs:
            self.params |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        self.api_key = _key(config.name, config.api_key_env)
        self.router = _router(config) if config.deployments else None
        self._leaning: asyncio.Task | None = None
        if config.batch:
            if task.steps > 1:
                raise LabelerError(f"annotator {config.name}: batch: true needs a chat prompt that asks once per item")
            from labeler.annotators.batches import ProviderBatches

            self.batches = ProviderBatches(self)

    def cache_key(self, item: ItemRef) -> str:
        # The key, like everything stored, never includes the API key.
        samples = [self.config.samples] if self.config.samples > 1 else []  # one answer: keys as before
        blob = json.dumps([self.config.model, self.version, item.content_hash, self.params, *samples], sort_keys=True)
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
        kwargs = dict(self.params, messages=messages, num_retries=0, timeout=self.config.timeout, drop_params=True)
        if self.router is not None:
            complete = self.router.acompletion
            kwargs["model"] = self.config.name  # the router picks the deployment
        else:
            complete = litellm().acompletion
            kwargs |= _endpoint(self.config.model, self.config.api_base, self.api_key)
        response = await self.retrying(complete, **kwargs)
        data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
        data["_cost"] = self._cost(response, data)
        return data

    async def retrying(self, call, **kwargs):
        """`call(**kwargs)` under the model's rate limit, retried on transient errors (honouring Retry-After);
        any other error is a PermanentError."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=_Wait(),
            retry=retry_if_exception(is_transient),
            reraise=True,
        ):
            with attempt:
                await self.rate.wait()
                try:
                    return await call(**kwargs)
                except Exception as exc:
                    if is_transient(exc):
                        if asked := retry_after(exc):  # every call to this model waits, not only this one
                            await self.rate.pause(asked)
                        raise
                    raise PermanentError(f"{type(exc).__name__}: {exc}") from exc

    def _cost(self, response, data: dict) -> float:
        usage = data.get("usage") or {}
        if self.config.cost_per_1k_tokens is not None:
            return self.config.cost_per_1k_tokens * (usage.get("total_tokens") or 0) / 1000
        # litellm prices every response as it logs it; computing it again costs ~1 ms a call.
        cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        return float(cost or 0.0)  # None: a model litellm has no price for (local servers)

    def estimate(self, items: list[ItemRef], sample: int = 200) -> dict[str, Any]:
        """Calls this annotator would make for these items (cached answers are free), the tokens of their
        real prompts (counted on up to `sample` of them), and the cost at the model's price (None: unknown;
        a `batch` annotator's at the batch price)."""
        self.prefetch(items)
        fresh = [item for item in items if self.cache_key(item) not in self._hits]
        tokens, cost = self.priced(fresh, sample)
        return {"annotator": self.name, "calls": len(fresh) * self.config.samples, "cached": len(items) - len(fresh),
                "tokens": tokens, "cost": round(cost, 6) if cost is not None else None, "batch": self.config.batch}

    def priced(self, items: list[ItemRef], sample: int = 200) -> tuple[int, float | None]:
        """Tokens and cost of asking these items afresh (prompt tokens counted on up to `sample` of them)."""
        lm = litellm()
        calls = self.task.steps * self.config.samples  # per item
        counted = [lm.token_counter(model=self.config.model, messages=self.task.messages(item.fields)) * calls
                   for item in items[:sample]]
        prompt = round(sum(counted) / len(counted) * len(items)) if counted else 0
        completion = self.params["max_tokens"] * len(items) * calls  # at most
        return prompt + completion, self.price(prompt, completion)

    def price(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What these tokens cost (None: a model litellm has no price for)."""
        if self.config.cost_per_1k_tokens is not None:
            return self.config.cost_per_1k_tokens * (prompt_tokens + completion_tokens) / 1000
        lm = litellm()
        try:
            if self.config.batch:
                from litellm.cost_calculator import batch_cost_calculator

                usage = lm.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
                return sum(batch_cost_calculator(usage, model=self.config.model)) if self._listed else None
            return sum(lm.cost_per_token(model=self.config.model, prompt_tokens=prompt_tokens,
                                         completion_tokens=completion_tokens))
        except Exception:  # a model litellm has no price for
            return None

    @functools.cached_property
    def _listed(self) -> bool:
        """Whether litellm lists the model's price (batch_cost_calculator says 0 for one it does not list)."""
        try:
            litellm().get_model_info(self.config.model)
            return True
        except Exception:
            return False

    async def leaning(self) -> dict[str, float] | None:
        """The model's probabilities on content-free items (asked once; see prompts' context_items)."""
        if not (self.config.debias and self.config.logprobs):
            return None
        if self._leaning is None:
            self._leaning = asyncio.ensure_future(self._measure_leaning())
        return await self._leaning

    async def _measure_leaning(self) -> dict[str, float] | None:
        answers = []
        for fields in self.task.context_items():
            choice = ((await self._call(self.task.messages(fields))).get("choices") or [{}])[0]
            answers.append(self.task.parse((choice.get("message") or {}).get("content"), top_logprobs_of(choice)).probs)
        return self.task.leaning(answers)

    async def _sampled(self, fields: dict[str, Any]) -> dict:
        """`samples` answers to the same messages (at a temperature): one response holding every sample's choice."""
        messages = self.task.messages(fields)
        answers = await asyncio.gather(*(self._call(messages) for _ in range(self.config.samples)))
        return {"choices": [(a.get("choices") or [{}])[0] for a in answers], "_cost": sum(a.get("_cost", 0.0) for a in answers),
                "_samples": True}

    async def _steps(self, fields: dict[str, Any]) -> dict:
        """An item asked in several calls, each continuing the last: one response holding every step's choice."""
        choices, cost, previous = [], 0.0, []
        for _ in range(self.task.steps):
            data = await self._call(self.task.messages(fields, previous))
            choice = (data.get("choices") or [{}])[0]
            choices.append(choice)
            cost += data.get("_cost", 0.0)
            previous.append(self.task.step_answer((choice.get("message") or {}).get("content"), top_logprobs_of(choice)))
        return {"choices": choices, "_cost": cost}

    async def ask(self, item: ItemRef) -> Answer:
        key = self.cache_key(item)
        data = self._cached(key)
        fresh = data is None
        started = time.perf_counter()
        if fresh:
            data = await (self._steps(item.fields) if self.task.steps > 1 else
                          self._sampled(item.fields) if self.config.samples > 1 else self._call(self.task.messages(item.fields)))
        answer = await self.read(item, data)
        if fresh:
            answer.cost, answer.latency_ms = data.get("_cost", 0.0), (time.perf_counter() - started) * 1000
            answer.cache = (key, data)
        return answer

    async def read(self, item: ItemRef, data: dict) -> Answer:
        """The vote in a response (costless: the caller says what it cost and whether to cache it)."""
        if data.get("_samples"):
            texts = [(c.get("message") or {}).get("content") for c in data["choices"]]
            parsed = self.task.read_samples([self.task.read([(t, None)], None, item.fields) for t in texts])
            text = "\n".join(f"sample {k + 1}: {t}" for k, t in enumerate(texts))
        else:
            choices = (data.get("choices") or [{}])[: self.task.steps]
            texts = [(c.get("message") or {}).get("content") for c in choices]
            parsed = self.task.read([(t, top_logprobs_of(c)) for t, c in zip(texts, choices)], await self.leaning(),
                                    item.fields)
            text = texts[0] if len(texts) == 1 else "\n".join(f"{label}: {t}" for label, t in zip(self.task.spec.labels, texts))
        return Answer(label=parsed.label, probs=parsed.probs, abstain_reason=parsed.abstain_reason, raw=text,
                      latency_ms=0.0)
