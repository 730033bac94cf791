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

Files and batches as OpenAI serves them (`/v1/files`, `/v1/batches`): a batch is validated, then in
progress for `batch_seconds`, then each line answered as the chat endpoint would. Its lines' model picks
how the batch ends:
  partfail    every third request fails (in the error file), the rest answered
  expire      expires: the first half answered, the rest `batch_expired` in the error file
  invalid     fails as a whole (no output file)
`server.batches` holds every batch created, so a test counts what was paid for.
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
    def __init__(self, latency: float = 0.0, batch_seconds: float = 0.2):
        self.latency = latency
        self.batch_seconds = batch_seconds
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
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
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}", self._file)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches/{id}", self._batch)
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
        return web.json_response(self._completion(body, model, n))

    def _completion(self, body: dict, model: str, n: int) -> dict:
        """The chat completion for a request body: the answer rules of the module's docstring."""
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
        return {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice],
            "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
        }

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        upload = form["file"]
        content = upload.file.read()
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = content
        return web.json_response(_file_object(file_id, len(content), str(form.get("purpose", "batch"))))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": f"no file {file_id}"}}, status=404)
        return web.json_response(_file_object(file_id, len(self.files[file_id]), "batch"))

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": f"no file {file_id}"}}, status=404)
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return web.json_response({"error": {"message": "no such input file"}}, status=400)
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].decode().splitlines() if line.strip()]
        batch_id = f"batch_{len(self.batches) + 1}"
        self.batches[batch_id] = batch = {
            "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
            "metadata": body.get("metadata"), "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "_lines": lines, "_done_at": time.monotonic() + self.batch_seconds}
        return web.json_response(_public(batch))

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        if batch["status"] == "validating":
            batch["status"] = "in_progress"
        elif batch["status"] == "in_progress" and time.monotonic() >= batch["_done_at"]:
            self._finish(batch)
        return web.json_response(_public(batch))

    def _finish(self, batch: dict) -> None:
        lines = batch["_lines"]
        model = str(lines[0]["body"].get("model", "ok")) if lines else "ok"
        if model == "invalid":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "bad model"}]}
            return
        out, err = [], []
        for k, line in enumerate(lines):
            if model == "expire" and k >= len(lines) // 2:
                err.append({"id": f"req_{k}", "custom_id": line["custom_id"], "response": None,
                            "error": {"code": "batch_expired", "message": "not run before the batch expired"}})
            elif model == "partfail" and k % 3 == 2:
                err.append({"id": f"req_{k}", "custom_id": line["custom_id"], "response": {
                    "status_code": 400, "body": {"error": {"message": "bad request line"}}}, "error": None})
            else:
                self.requests += 1
                out.append({"id": f"req_{k}", "custom_id": line["custom_id"], "error": None, "response": {
                    "status_code": 200, "body": self._completion(line["body"], model, next(self._counter))}})
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[name] = file_id
        batch["status"] = "expired" if model == "expire" else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}


def _file_object(file_id: str, size: int, purpose: str) -> dict:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()), "filename": "batch.jsonl",
            "purpose": purpose, "status": "processed"}


def _public(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


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
