"""``winnow worker --runner pooling``: vLLM's OpenAI server running a reward model of a rewards
config on its pooling runner, for entries with ``"runner": "pooling"`` and ``pooling.urls``.

The engine arguments are the ones the in-process pooling runner would use
(:func:`winnow.rewards.pooling.engine_args`), so a worker and the in-process engine score alike;
the launching itself (environment, secrets redacted, ``execve``) is ``winnow worker``'s
(:mod:`winnow.engine.remote.worker`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from winnow.engine.remote.worker import (
    ALLOWED_DIRS_ENV,
    VLLM_SERVER,
    WorkerOptionError,
    engine_flags,
    exec_environment,
    given_options,
    has_cuda,
    shown,
    worker_environment,
)


def pooling_worker_command(
    rewards_config: str | Path,
    reward: str,
    host: str,
    port: int,
    extra: Sequence[str] = (),
    *,
    python: str = sys.executable,
) -> tuple[list[str], int]:
    """The ``vllm serve`` command of a pooling worker for the reward named ``reward`` in
    ``rewards_config`` (a ``seq_cls`` or ``step_tag_prm`` config): the engine arguments the
    in-process pooling runner would use (:func:`winnow.rewards.pooling.engine_args`: the
    architecture vLLM builds, the head conversion, every position pooled, winnow's CPU
    settings), as flags, then ``extra``. Returns it and the KV cache size (GiB) it asks for."""
    from winnow.rewards.configs import SequenceClassifierConfig, StepTagPRMConfig
    from winnow.rewards.pooling import engine_args, pooling_plan, unpooled
    from winnow.rewards.registry import load_configs

    try:
        configs = {c.name: c for c in load_configs(rewards_config)}
    except Exception as exc:
        raise WorkerOptionError(f"--rewards-config {rewards_config}: {exc}") from None
    config = configs.get(reward)
    if not isinstance(config, SequenceClassifierConfig | StepTagPRMConfig):
        known = [
            n
            for n, c in configs.items()
            if isinstance(c, SequenceClassifierConfig | StepTagPRMConfig)
        ]
        raise WorkerOptionError(
            f"--reward {reward!r} is not a seq_cls or step_tag_prm reward of {rewards_config} "
            f"(those: {', '.join(known) or 'none'})"
        )
    try:
        plan = pooling_plan(unpooled(config))
    except ValueError as exc:
        raise WorkerOptionError(f"reward {reward!r}: {exc}") from None
    args = engine_args(plan, config)
    given = given_options(extra)
    own = {k: v for k, v in args.items() if k != "model" and k not in given}
    command = [
        python, "-m", VLLM_SERVER, "--model", plan.model, "--host", host, "--port", str(port),
        *engine_flags(own), *extra,
    ]  # fmt: skip
    return command, config.pooling.kv_cache_gib


def run_pooling_worker(
    rewards_config: str | Path,
    reward: str,
    host: str,
    port: int,
    extra: Sequence[str],
    *,
    data_dir: Path,
    print_only: bool = False,
) -> int:
    """``winnow worker --runner pooling``: print the command and replace this process with it."""
    command, kv_cache_gib = pooling_worker_command(rewards_config, reward, host, port, extra)
    env = worker_environment(data_dir, kv_cache_gib, not has_cuda())
    env.pop(ALLOWED_DIRS_ENV, None)  # no processors run in a pooling engine
    if print_only:
        print(shown(env, command))
        return 0
    print(f"winnow worker: {shown(env, command)}", file=sys.stderr, flush=True)
    os.execve(command[0], command, exec_environment(env))
