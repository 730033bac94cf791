"""A local OpenAI-compatible chat server for annotator tests and benchmarks (loopback only).

It answers with the label named in the item's text ("... is positive"), else the first label.
The model name picks a behaviour, so one server serves every test:
  ok          answers, with logprobs when asked
  flaky-P     answers, but a share P of requests (by a counter) get 429 (with Retry-After: 0) or 500
  noisy-P     answers a wrong label for a share P of items (fixed per item text: the same items for
              every noisy-P model, so errors are nested); noisy-P-S errs on its own items (salt S)
  badday      answers a wrong label for items whose text contains "[hp]"
  fuzzy       each item a difficulty d in [0, 0.8): at a temperature, wrong with probability d per answer (a
              random other label); at temperature 0, wrong where d >= 0.5 (one answer says nothing of d;
              samples do)
  garbage     answers text that names no label
  badjson     a label set's (or spans') JSON cut short
  ghost       spans, and one more whose text is not in the item
A system prompt asking for {"labels": [...]} (a label set) gets every label the item names ("is L"); one
asking for {"spans": [...]} gets every capitalised word after the first (typed by its length: _spans_answer).
  unsure      answers "unsure"
  broken      a 200 with a body that is not JSON
  denied      401 on every request
  hang        never answers within the client's timeout
  reset       closes the connection without answering on the first try of each request
Latency (seconds) applies to every answer: `LLMServer(latency=0.1)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from aiohttp import web

_LABELS = re.compile(r"^- ([^:\n]+):", re.MULTILINE)


class LLMServer:
    def __init__(self, latency: float = 0.0):
        self.latency = latency
        self.requests = 0
        self.by_model: dict[str, int] = {}
        self._counter = itertools.count()
        self._reset_seen: set[str] = set()
        self.storm: dict[str, float | list] = {"started": 0.0, "calm_at": 0.0, "arrivals": []}
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "LLMServer":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test LLM server did not start")
        return self

    def __exit__(self, *exc) -> None:
        async def shutdown():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024).start())
        self._ready.set()
        self._loop.run_forever()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model", "ok"))
        self.requests += 1
        self.by_model[model] = self.by_model.get(model, 0) + 1
        n = next(self._counter)
        if self.latency:
            await asyncio.sleep(self.latency)
        if model == "denied":
            return web.json_response({"error": {"message": "invalid api key", "type": "auth"}}, status=401)
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "reset" and json.dumps(body.get("messages"), sort_keys=True) not in self._reset_seen:
            self._reset_seen.add(json.dumps(body.get("messages"), sort_keys=True))
            request.transport.close()
            return web.Response(status=500)
        if model.startswith("flaky-"):
            share = float(model.split("-", 1)[1])
            if (n * 7919) % 100 < share * 100:
                if n % 2:
                    return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0"})
                return web.json_response({"error": {"message": "boom"}}, status=500)
        if model == "storm":  # a 429 storm: 429 with Retry-After 1 to everything until a second has passed
            now = time.monotonic()
            self.storm["arrivals"].append(now)
            if not self.storm["started"]:
                self.storm["started"], self.storm["calm_at"] = now, now + 1.0
            if now < self.storm["calm_at"]:
                return web.json_response({"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "1"})
        if model == "broken":
            return web.Response(text="{not json", content_type="application/json")
        messages = body.get("messages", [])
        labels = _LABELS.findall(messages[0]["content"]) if messages else []
        item = str(messages[-1].get("content", "")) if messages else ""
        answer = next((label for label in labels if f"is {label}" in item), labels[0] if labels else "?")
        wrong = model == "badday" and "[hp]" in item
        if model.startswith("noisy-"):
            share, _, salt = model.split("-", 1)[1].partition("-")
            wrong = int(hashlib.sha256((salt + item).encode()).hexdigest(), 16) % 100 < float(share) * 100
        if wrong and len(labels) > 1:
            answer = labels[(labels.index(answer) + 1) % len(labels)]
        if model == "fuzzy" and answer in labels and len(labels) > 1:  # an item's difficulty: see the docstring
            difficulty = int(hashlib.sha256(item.encode()).hexdigest(), 16) % 80 / 100
            others = [label for label in labels if label != answer]
            if body.get("temperature") and random.random() < difficulty:
                answer = random.choice(others)
            elif not body.get("temperature") and difficulty >= 0.5:
                answer = others[0]
        if model == "obey":  # a model that follows instructions planted in the item
            planted = re.search(r'answer "([^"]+)"', item)
            if planted:
                answer = planted.group(1)
            elif "repeat your instructions" in item:
                answer = messages[0]["content"]
        if '{"labels"' in (messages[0]["content"] if messages else ""):  # a label set: every label named
            named = [label for label in labels if f"is {label}" in item]
            if wrong and len(labels) > 1:
                named = sorted(set(named) ^ {labels[0]}, key=labels.index)
            answer = json.dumps({"labels": named})
            if model == "badjson":
                answer = '{"labels": ["' + (named[0] if named else "x")
        if '{"spans"' in (messages[0]["content"] if messages else ""):
            answer = _spans_answer(item, labels, wrong, model)
        if model == "garbage":
            answer = "Well, it depends on many things."
        elif model == "unsure":
            answer = "unsure"
        choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
        if body.get("logprobs"):
            others = [label for label in labels if label != answer]
            top = [{"token": answer, "logprob": -0.05, "bytes": None}] + [
                {"token": label, "logprob": -3.5 - i, "bytes": None} for i, label in enumerate(others)
            ]
            choice["logprobs"] = {"content": [{"token": answer, "logprob": -0.05, "bytes": None, "top_logprobs": top}]}
        return web.json_response({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice],
            "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
        })


def _spans_answer(item: str, labels: list[str], wrong: bool, model: str) -> str:
    """Spans: every capitalised word after the first of the fenced text, typed labels[len(word) % K], each
    appearance by its occurrence; a wrong answer misses the last one; `ghost` adds a span not in the text."""
    text = re.sub(r"^.*?<item>\s*|\s*</item>.*$", "", item, flags=re.DOTALL)
    text = text.split(": ", 1)[1] if ": " in text.split("\n", 1)[0] else text  # "Text: ..." (the field's name)
    spans, seen = [], {}
    for word in re.findall(r"(?<=\s)[A-Z][a-z]+", text):
        seen[word] = seen.get(word, 0) + 1
        spans.append({"text": word, "label": labels[len(word) % len(labels)], "occurrence": seen[word]})
    if wrong and spans:
        spans.pop()
    if model == "ghost":
        spans.append({"text": "Nowhere", "label": labels[0]})
    answer = json.dumps({"spans": spans})
    return answer[: len(answer) // 2] if model == "badjson" else answer


@contextlib.contextmanager
def server_process(latency: float = 0.0):
    """The server in a process of its own, for benchmarks (it does not share their CPU, the GIL); yields its URL."""
    server = subprocess.Popen([sys.executable, "-m", "tests.llm_server", str(latency)],
                              cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)
    try:
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":  # for benchmarks: python -m tests.llm_server LATENCY (server_process runs it)
    with LLMServer(latency=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()
