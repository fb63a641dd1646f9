"""The pooling runner's configuration and plan, without an engine (the scores:
tests/engine/test_pooling_rewards.py): what vLLM is asked to build for each family, what is
refused, the worker's command line, and how raw outputs are read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tests.support import tiny_tokenizers
from tests.unit.test_reward_families import save, tiny
from winnow.engine.remote.worker import WorkerOptionError
from winnow.rewards.configs import RewardConfigError, RewardConfigList
from winnow.rewards.pooling import (
    _outcome_reading,
    _two_way_reading,
    engine_args,
    pooling_plan,
    unpooled,
)
from winnow.rewards.pooling_worker import pooling_worker_command
from winnow.rewards.registry import build_rewards


@pytest.fixture(scope="module")
def shepherd(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import MistralConfig, MistralForCausalLM

    directory = tmp_path_factory.mktemp("shepherd")
    tokenizer = tiny_tokenizers.mistral(directory)
    torch.manual_seed(0)
    return save(MistralForCausalLM(tiny(MistralConfig, tokenizer)), directory)[0]


def config_of(**entry: object) -> object:
    return RewardConfigList.validate_python([{"name": "r", **entry}])[0]


def test_a_label_token_prm_becomes_a_two_token_classifier(shepherd: str):
    config = config_of(backend="step_tag_prm", path=shepherd, runner="pooling")
    plan = pooling_plan(unpooled(config))
    tokenizer = unpooled(config).model.tokenizer
    good = tokenizer.encode("+", add_special_tokens=False)
    bad = tokenizer.encode("-", add_special_tokens=False)
    assert plan.hf_overrides == {
        "architectures": ["MistralForSequenceClassification"],
        "classifier_from_token": tokenizer.convert_ids_to_tokens(bad + good),  # [false, true]
        "method": "from_2_way_softmax",
    }
    # sigmoid(lm[good] - lm[bad]) is the softmax over the pair, P(good)
    raw = torch.tensor([[0.3], [-2.0]])
    pair = torch.softmax(torch.tensor([[0.3, 0.0], [-2.0, 0.0]]), -1)[:, 0]
    assert plan.reading(raw) == pytest.approx(pair.tolist())


def test_engine_arguments_pool_every_position_and_keep_the_prefix_cache(shepherd: str):
    config = config_of(
        backend="step_tag_prm", path=shepherd, runner="pooling", device="cpu",
        pooling={"max_model_len": 256},
    )  # fmt: skip
    args = engine_args(pooling_plan(unpooled(config)), config)
    assert args["runner"] == "pooling" and args["enable_prefix_caching"] is True
    assert args["pooler_config"]["tok_pooling_type"] == "ALL"  # STEP would turn caching off
    assert args["dtype"] == "float32" and args["max_model_len"] == 256
    half = config_of(backend="step_tag_prm", path=shepherd, runner="pooling", dtype="bfloat16")
    assert engine_args(pooling_plan(unpooled(half)), half)["dtype"] == "bfloat16"


def test_readings_match_the_transformers_runner():
    raw2 = torch.tensor([[1.0, 3.0], [0.5, -0.5]])
    assert _outcome_reading(raw2).tolist() == pytest.approx([2.0, -1.0])  # log-odds of label 1
    assert _outcome_reading(torch.tensor([[1.5]])).tolist() == [1.5]  # one label: its logit
    assert _two_way_reading(raw2).tolist() == pytest.approx(torch.softmax(raw2, -1)[:, 1].tolist())


def test_a_value_head_prm_on_the_pooling_runner_is_refused(shepherd: str):
    configs = RewardConfigList.validate_python(
        [{"name": "sky", "backend": "step_tag_prm", "style": "value_head", "path": shepherd,
          "runner": "pooling"}]
    )  # fmt: skip
    with pytest.raises(RewardConfigError, match=r"value_head.*runner.*hf"):
        build_rewards(configs, default_model_dir=None)


def test_pooling_urls_must_be_http():
    with pytest.raises(ValidationError, match="http"):
        config_of(backend="seq_cls", path="x", runner="pooling", pooling={"urls": ["ftp://a"]})


def test_the_worker_command_carries_the_plan(shepherd: str, tmp_path: Path):
    file = tmp_path / "rewards.json"
    entries = [
        {"name": "prm", "backend": "step_tag_prm", "path": shepherd,
         "pooling": {"kv_cache_gib": 3}},
        {"name": "v", "backend": "verifier"},
    ]  # fmt: skip
    file.write_text(json.dumps(entries))
    command, kv = pooling_worker_command(file, "prm", "127.0.0.1", 8011, ["--max-model-len", "128"])
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == shepherd
    overrides = json.loads(command[command.index("--hf-overrides") + 1])
    assert overrides["method"] == "from_2_way_softmax"
    assert json.loads(command[command.index("--pooler-config") + 1])["tok_pooling_type"] == "ALL"
    assert command[-2:] == ["--max-model-len", "128"] and command.count("--max-model-len") == 1
    assert kv == 3
    with pytest.raises(WorkerOptionError, match="not a seq_cls or step_tag_prm"):
        pooling_worker_command(file, "v", "127.0.0.1", 8011)


def test_one_failed_item_stops_the_others_in_flight():
    import asyncio

    from winnow.rewards.backbone import ProbeJob
    from winnow.rewards.base import RewardError
    from winnow.rewards.pooling import PoolingPlan, _PooledMixin

    cancelled: list[ProbeJob] = []

    class Runner:
        async def rows(self, job: ProbeJob) -> object:
            if job.ids == (0,):
                raise RewardError("the worker refused it")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(job)
                raise
            raise AssertionError("not cancelled")

    pooled = _PooledMixin()
    pooled._plan = PoolingPlan("m", None, lambda raw: raw[:, 0], "x")
    pooled._runner = Runner()
    jobs = [ProbeJob((0,), (0,)), ProbeJob((1,), (0,)), ProbeJob((2,), (0,))]

    async def main() -> list[ProbeJob]:
        with pytest.raises(RewardError, match="refused"):
            await pooled._pool(jobs)
        return list(cancelled)  # by the time the call has failed, not at the loop's end

    assert asyncio.run(main()) == jobs[1:]
