"""Entry points of `winnow train ...` (offline jobs that use the engine in-process)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from winnow.rewards.registry import ASSETS  # where the shipped reward heads live
from winnow.settings import default_data_dir


def train_reward(out_dir: Path | None, quick: bool, seed: int) -> dict:
    from winnow.engine.vllm_local import VllmEngine
    from winnow.models.default_model import build_default_model
    from winnow.rewards.backbone import Backbone
    from winnow.train.reward import TrainConfig, train_default_reward, write_model_card

    data_dir = default_data_dir()
    model = str(build_default_model(data_dir))
    config = TrainConfig(seed=seed)
    if quick:
        config = TrainConfig(
            train_questions=12, eval_questions=8, process_problems=16, process_eval_problems=8,
            seed=seed,
        )  # fmt: skip
    target = out_dir or ASSETS

    async def run() -> dict:
        engine = VllmEngine(
            model, engine_args={"max_model_len": 2048}, cache_dir=data_dir / "cache"
        )
        await engine.start()
        try:
            return await train_default_reward(engine, Backbone(model), target, config)
        finally:
            await engine.shutdown()

    summary = asyncio.run(run())
    write_model_card(target)
    print(json.dumps(summary, indent=2))
    return summary
