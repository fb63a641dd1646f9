"""The pooling runner (vLLM's ``runner="pooling"``) on each family's layout, against the
transformers runner on the same checkpoint, and end to end beside the real policy engine.

Checkpoints are the families' real layouts (tests/unit/test_reward_families.py builds them the
same way: the authors' class names, weight names, tokenizers, chat templates), with a head size
of 64 (vLLM's CPU attention refuses smaller). The transformers runner is checked there against
each model card's own computation; here the pooling runner must give the same scores as it on
the same inputs, so both read the card's way. Each pooling engine starts in ~20-35 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support import tiny_tokenizers
from tests.unit.test_reward_families import (
    MESSAGES,
    PROMPT,
    QUESTION,
    QWEN_PRM_SYSTEM,
    STEPS,
    qwen2_classes,
    qwen_auto_map,
    save,
    tiny,
)
from winnow.rewards.base import OutcomeItem, ProcessItem
from winnow.rewards.configs import RewardConfigList
from winnow.rewards.registry import build_rewards

pytestmark = pytest.mark.engine
ATOL = 2e-3  # vLLM's CPU kernels and transformers' differ in the last float32 bits
WIDE = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2}
WIDE |= {"num_key_value_heads": 1}  # head_dim 64
RESPONSES = ["The answer is 4.", "It is 5, since 2 + 2 = 5 - 1 + 1 and so on.", "4"]


def outcome_items() -> list[OutcomeItem]:
    return [OutcomeItem(PROMPT, r) for r in RESPONSES]


def process_items() -> list[ProcessItem]:
    """Three prefixes of one solution (a question long enough to fill cache blocks), one item
    without steps."""
    long = type(PROMPT)("rendered", [MESSAGES[0], {"role": "user", "content": QUESTION * 12}])
    return [
        ProcessItem(long, STEPS),
        ProcessItem(long, STEPS[:2]),
        ProcessItem(QUESTION, STEPS[:1], partial=True),
        ProcessItem(PROMPT, ()),
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pooling_families")


def _qwen_prm(root: Path) -> str:
    from transformers import Qwen2Config

    directory = root / "qwen25_math_prm"
    tokenizer = tiny_tokenizers.qwen25(directory, extra=["<extra_0>"])
    torch.manual_seed(1)
    model = qwen2_classes()["Qwen2ForProcessRewardModel"](tiny(Qwen2Config, tokenizer, **WIDE))
    return save(model, directory, auto_map=qwen_auto_map("Qwen2ForProcessRewardModel"))[0]


def _shepherd(root: Path) -> str:
    from transformers import MistralConfig, MistralForCausalLM

    directory = root / "math_shepherd"
    tokenizer = tiny_tokenizers.mistral(directory)
    torch.manual_seed(2)
    return save(MistralForCausalLM(tiny(MistralConfig, tokenizer, **WIDE)), directory)[0]


def _rlhflow(root: Path) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = root / "rlhflow_prm"
    tokenizer = tiny_tokenizers.llama3(directory)
    torch.manual_seed(3)
    return save(LlamaForCausalLM(tiny(LlamaConfig, tokenizer, **WIDE)), directory)[0]


def _skywork_reward(root: Path) -> str:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    directory = root / "skywork_reward_llama"
    tokenizer = tiny_tokenizers.llama3(directory)
    torch.manual_seed(5)
    model = LlamaForSequenceClassification(tiny(LlamaConfig, tokenizer, num_labels=1, **WIDE))
    return save(model, directory)[0]


def _qwen_rm(root: Path) -> str:
    from transformers import Qwen2Config

    directory = root / "qwen25_math_rm"
    tokenizer = tiny_tokenizers.qwen25(directory)
    torch.manual_seed(7)
    model = qwen2_classes()["Qwen2ForRewardModel"](tiny(Qwen2Config, tokenizer, **WIDE))
    return save(model, directory, auto_map=qwen_auto_map("Qwen2ForRewardModel"))[0]


def _skywork_v2(root: Path) -> str:
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    directory = root / "skywork_reward_v2_qwen3"
    tokenizer = tiny_tokenizers.qwen25(directory)
    torch.manual_seed(6)
    config = tiny(Qwen3Config, tokenizer, num_labels=1, **WIDE, head_dim=64)
    return save(Qwen3ForSequenceClassification(config), directory)[0]


def _nemotron(root: Path) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = root / "nemotron_reward"
    tokenizer = tiny_tokenizers.llama3(directory)
    torch.manual_seed(8)
    return save(LlamaForCausalLM(tiny(LlamaConfig, tokenizer, **WIDE)), directory)[0]


FAMILIES: dict[str, tuple[Any, dict[str, Any]]] = {
    "qwen25_math_prm": (
        _qwen_prm,
        {"backend": "step_tag_prm", "style": "two_way", "system_prompt": QWEN_PRM_SYSTEM},
    ),
    "math_shepherd": (_shepherd, {"backend": "step_tag_prm", "style": "label_token"}),
    "rlhflow_prm": (_rlhflow, {"backend": "step_tag_prm", "format": "multi_turn"}),
    "skywork_reward": (_skywork_reward, {"backend": "seq_cls"}),
    "skywork_reward_v2": (_skywork_v2, {"backend": "seq_cls"}),
    "qwen25_math_rm": (_qwen_rm, {"backend": "seq_cls", "system_prompt": QWEN_PRM_SYSTEM}),
    "nemotron_reward": (_nemotron, {"backend": "seq_cls", "logit_token_id": 0}),
}


def _both(path: str, config: dict[str, Any]) -> Any:
    configs = [
        {"name": "hf", "path": path, **config},
        {"name": "pooled", "path": path, "runner": "pooling", **config},
    ]
    return build_rewards(RewardConfigList.validate_python(configs), default_model_dir=None)


async def _compare(path: str, config: dict[str, Any]) -> tuple[Any, Any, Any]:
    rewards = _both(path, config)
    await rewards.start()
    try:
        hf, pooled = rewards.get("hf"), rewards.get("pooled")
        if config["backend"] == "seq_cls":
            items = outcome_items()
            return (await hf.score(items)), (await pooled.score(items)), pooled.info
        items = process_items()
        want = await hf.score_steps(items)
        got = await pooled.score_steps(items)
        again = await pooled.score_steps(items)  # the same prefixes: now from vLLM's cache
        for first, second in zip(got.scores, again.scores, strict=True):
            assert second == pytest.approx(first, abs=1e-5)
        assert again.cached_tokens > 0
        return want, got, pooled.info
    finally:
        await rewards.shutdown()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_pooling_runner_scores_like_transformers(root: Path, family: str):
    build, config = FAMILIES[family]
    want, got, info = asyncio.run(_compare(build(root), config))
    assert info.extra["runner"] == "pooling"
    assert len(got.scores) == len(want.scores)
    for mine, theirs in zip(got.scores, want.scores, strict=True):
        assert mine == pytest.approx(theirs, abs=ATOL)
    assert got.tokens > 0


def test_a_shared_prompt_is_computed_once(root: Path):
    """64 candidates of one prompt: after the first, vLLM reads the prompt from its cache."""
    path = _skywork_reward(root)
    config = RewardConfigList.validate_python(
        [{"name": "rm", "backend": "seq_cls", "path": path, "runner": "pooling"}]
    )
    long_question = {"role": "user", "content": QUESTION + " Explain every step. " * 30}
    prompt = type(PROMPT)("rendered", [MESSAGES[0], long_question])
    items = [OutcomeItem(prompt, f"Answer {i}: {RESPONSES[i % 3]}") for i in range(64)]

    async def main() -> Any:
        rewards = build_rewards(config, default_model_dir=None)
        await rewards.start()
        try:
            reward = rewards.get("rm")
            await reward.score(items[:1])  # the prompt enters the cache
            return await reward.score(items[1:])
        finally:
            await rewards.shutdown()

    scored = asyncio.run(main())
    assert scored.cached_tokens > 63 * 200  # the prompt (> 200 tokens) is read, not computed
    assert scored.tokens < scored.cached_tokens


# ---- end to end, beside the policy engine --------------------------------------------------


@pytest.fixture(scope="module")
def sdk(live_server: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def pooled_rewards(live_server: Any, root: Path) -> Iterator[list[str]]:
    """A pooled outcome reward and a pooled PRM added to the running server."""
    configs = RewardConfigList.validate_python(
        [
            {"name": "pooled_rm", "backend": "seq_cls", "path": _skywork_reward(root),
             "runner": "pooling"},
            {"name": "pooled_prm", "backend": "step_tag_prm", "style": "two_way",
             "path": _qwen_prm(root), "runner": "pooling", "system_prompt": QWEN_PRM_SYSTEM},
        ]
    )  # fmt: skip
    built = build_rewards(configs, default_model_dir=None)
    live_server.run(built.start())
    for name in built.names():
        live_server.rewards.add(built.get(name))
    try:
        yield built.names()
    finally:
        for name in built.names():
            live_server.rewards._rewards.pop(name, None)
        live_server.run(built.shutdown())


def test_best_of_n_with_a_pooled_outcome_reward(sdk: Any, live_server: Any, pooled_rewards: Any):
    completion = sdk.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "What is 3 + 4? Answer with a number."}],
        max_tokens=48,
        temperature=0.8,
        seed=5,
        extra_body={"strategy": {"name": "best_of_n", "n": 4, "reward": "pooled_rm",
                                 "selection": "best", "return_candidates": True}},
    )  # fmt: skip
    candidates = completion.model_extra["winnow"]["candidates"]
    chosen = [c for c in candidates if c["chosen"]]
    assert chosen[0]["text"] == completion.choices[0].message.content
    assert chosen[0]["score"] == max(c["score"] for c in candidates)
    assert len({round(c["score"], 6) for c in candidates}) > 1  # scored, not a constant
    assert completion.usage.model_extra["winnow"]["reward_tokens"] > 0
    assert live_server.wait_idle() == 0


def test_tree_search_with_a_pooled_prm(sdk: Any, live_server: Any, pooled_rewards: Any):
    completion = sdk.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Add 12 and 30, step by step."}],
        max_tokens=96,
        seed=7,
        extra_body={"strategy": {"name": "tree_search", "n": 4, "beam_width": 2,
                                 "max_depth": 3, "step_tokens": 24,
                                 "reward": "pooled_prm"}},
    )  # fmt: skip
    assert completion.choices[0].message.content
    usage = completion.usage.model_extra["winnow"]
    assert usage["reward_calls"] > 0 and usage["reward_tokens"] > 0
    assert live_server.wait_idle() == 0


# ---- on a worker: `winnow worker --runner pooling` ------------------------------------------


def test_a_pooling_worker_scores_like_transformers(root: Path, tmp_path: Path):
    """The same PRM on a worker started by the CLI, read over vLLM's /pooling API."""
    import json
    import sys

    from winnow.clients.launch import free_port, server_process

    path = _shepherd(root)
    entry = {"name": "shep", "backend": "step_tag_prm", "style": "label_token", "path": path}
    config_file = tmp_path / "rewards.json"
    config_file.write_text(json.dumps([entry]))
    port = free_port()
    command = [sys.executable, "-m", "winnow.cli", "worker", "--runner", "pooling",
               "--rewards-config", str(config_file), "--reward", "shep",
               "--port", str(port)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with server_process(command, url, tmp_path / "worker.log", timeout=900):
        remote = {**entry, "name": "remote", "runner": "pooling", "pooling": {"urls": [url]}}

        async def main() -> tuple[Any, Any]:
            rewards = build_rewards(
                RewardConfigList.validate_python([entry, remote]), default_model_dir=None
            )
            await rewards.start()
            try:
                items = process_items()
                hf = await rewards.get("shep").score_steps(items)
                return hf, await rewards.get("remote").score_steps(items)
            finally:
                await rewards.shutdown()

        want, got = asyncio.run(main())
    for mine, theirs in zip(got.scores, want.scores, strict=True):
        assert mine == pytest.approx(theirs, abs=ATOL)
    assert got.tokens > 0 and got.cached_tokens == 0  # the HTTP API reads no cached rows
