"""The Hugging Face reward backends on tiny real models, and the judge on the real engine.

Tiny Llama models (random weights, the default model's tokenizer) are built once per session;
every backend score is checked against plain transformers forward passes over the full logits.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

from winnow.engine.base import Completion, Generation, SamplingSpec, TokenLogprob
from winnow.engine.fake import FakeEngine
from winnow.rewards.base import OutcomeItem, ProcessItem, RewardInputError
from winnow.rewards.judge import DEFAULT_TEMPLATE, JudgeReward, yes_probability
from winnow.rewards.registry import (
    JudgeConfig,
    RewardConfigError,
    SequenceClassifierConfig,
    StepTagPRMConfig,
    build_rewards,
)
from winnow.rewards.seq_cls import SequenceClassifierReward
from winnow.rewards.step_tag_prm import StepTagPRM

T = TypeVar("T")

TAG = " к"  # one token in this tokenizer (Math-Shepherd's " ки" is two)
SEP = "<file_sep>"  # a special token, like Qwen2.5-Math-PRM's <extra_0>
GOOD, BAD = "+", "-"
END_OF_TURN = "<|im_end|>\n"  # what the ChatML template writes after an assistant message
PRM_POSITIONS = 256
ATOL = 1e-4

QUESTION = "What is 2 + 2?"
STEPS = ("First, 2 + 2 = 4.\n\n", "Check: 4 - 2 = 2, so it holds.\n\n", "So the answer is 4.")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ---- tiny models --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer(default_model_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


def _tiny_config(tokenizer: Any, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    values: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": 0.2,  # spread scores out, so padding or offset bugs show
    }
    values.update(overrides)
    return LlamaConfig(**values)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> dict[str, str]:
    from transformers import (
        LlamaForCausalLM,
        LlamaForSequenceClassification,
        LlamaForTokenClassification,
    )

    specs: dict[str, tuple[Any, dict[str, Any]]] = {
        "rm": (LlamaForSequenceClassification, {"num_labels": 1}),
        "rm2": (LlamaForSequenceClassification, {"num_labels": 2}),
        "prm_lm": (LlamaForCausalLM, {"max_position_embeddings": PRM_POSITIONS}),
        "prm_tc": (LlamaForTokenClassification, {"num_labels": 2}),
    }
    root = tmp_path_factory.mktemp("tiny_rewards")
    dirs = {}
    for seed, (name, (cls, overrides)) in enumerate(specs.items()):
        torch.manual_seed(seed)
        directory = root / name
        cls(_tiny_config(tokenizer, **overrides)).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        dirs[name] = str(directory)
    return dirs


@pytest.fixture(scope="session")
def prompt(tokenizer: Any) -> str:
    messages = [{"role": "user", "content": QUESTION}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _loaded(reward: Any) -> Any:
    run(reward.start())
    return reward


@pytest.fixture(scope="session")
def rm(model_dirs: dict[str, str]) -> SequenceClassifierReward:
    return _loaded(
        SequenceClassifierReward(SequenceClassifierConfig(name="rm", path=model_dirs["rm"]))
    )


@pytest.fixture(scope="session")
def prm_lm(model_dirs: dict[str, str]) -> StepTagPRM:
    config = StepTagPRMConfig(
        name="prm", path=model_dirs["prm_lm"], step_tag=TAG, good_token=GOOD, bad_token=BAD
    )
    return _loaded(StepTagPRM(config))


@pytest.fixture(scope="session")
def prm_tc(model_dirs: dict[str, str]) -> StepTagPRM:
    config = StepTagPRMConfig(name="prm2", path=model_dirs["prm_tc"], style="two_way", step_tag=SEP)
    return _loaded(StepTagPRM(config))


# ---- independent references: plain transformers forwards ----------------------------------------


def _model(path: str, auto_class: str) -> Any:
    import transformers

    model = getattr(transformers, auto_class).from_pretrained(path, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def reference_models(model_dirs: dict[str, str]) -> dict[str, Any]:
    return {
        "rm": _model(model_dirs["rm"], "AutoModelForSequenceClassification"),
        "rm2": _model(model_dirs["rm2"], "AutoModelForSequenceClassification"),
        "prm_lm": _model(model_dirs["prm_lm"], "AutoModelForCausalLM"),
        "prm_tc": _model(model_dirs["prm_tc"], "AutoModelForTokenClassification"),
    }


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


@torch.inference_mode()
def reference_outcome(model: Any, tokenizer: Any, text: str, max_length: int = 0) -> float:
    """The model's own pooled logits on the whole conversation text, unpadded."""
    ids = _encode(tokenizer, text)[-max_length:] if max_length else _encode(tokenizer, text)
    logits = model(input_ids=torch.tensor([ids])).logits[0]
    return float(logits[0] if logits.numel() == 1 else logits[1] - logits[0])


def tagged_ids(tokenizer: Any, prompt: str, steps: Sequence[str], tag: str, keep_space: bool):
    """The documented input format, built with plain tokenizer calls: ids and tag positions."""
    (tag_id,) = _encode(tokenizer, tag)
    ids, positions = _encode(tokenizer, prompt), []
    for step in steps:
        body = step.rstrip()
        ids += [*_encode(tokenizer, body), tag_id]
        positions.append(len(ids) - 1)
        if keep_space and step[len(body) :]:
            ids += _encode(tokenizer, step[len(body) :])
    return ids, positions


@torch.inference_mode()
def reference_label_token(model: Any, tokenizer: Any, prompt: str, steps: Sequence[str]):
    ids, positions = tagged_ids(tokenizer, prompt, steps, TAG, keep_space=True)
    logits = model(input_ids=torch.tensor([ids])).logits[0]  # [T, V], the full vocabulary
    labels = [_encode(tokenizer, GOOD)[0], _encode(tokenizer, BAD)[0]]
    return torch.softmax(logits[positions][:, labels], dim=-1)[:, 0].tolist()


@torch.inference_mode()
def reference_two_way(model: Any, tokenizer: Any, prompt: str, steps: Sequence[str]):
    ids, positions = tagged_ids(tokenizer, prompt, steps, SEP, keep_space=False)
    logits = model(input_ids=torch.tensor([ids])).logits[0]  # [T, 2]
    return torch.softmax(logits[positions], dim=-1)[:, 1].tolist()


def assert_close(actual: Sequence[float], expected: Sequence[float]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a == pytest.approx(e, abs=ATOL)


# ---- sequence classifier ------------------------------------------------------------------------

RESPONSES = ("4", "2 + 2 = 4. The answer is 4.", "The answer is 5, because " + "2 + 3 = 5. " * 12)


def test_seq_cls_matches_the_models_own_forward(rm, reference_models, tokenizer, prompt):
    model = reference_models["rm"]
    items = [OutcomeItem(prompt, r) for r in RESPONSES]
    expected = [reference_outcome(model, tokenizer, prompt + r + END_OF_TURN) for r in RESPONSES]
    one = [run(rm.score([item])).scores[0] for item in items]
    batch = run(rm.score(items))  # different lengths, one padded pass
    assert_close(one, expected)
    assert_close(batch.scores, expected)
    assert len(set(batch.scores)) == 3
    lengths = [len(_encode(tokenizer, prompt + r + END_OF_TURN)) for r in RESPONSES]
    assert batch.tokens + batch.cached_tokens == sum(lengths)
    assert rm.info.kind == "outcome" and rm.info.scale == "raw logit (higher is better)"
    assert rm.info.extra["head"] == "logit"


def test_seq_cls_does_not_repeat_an_end_of_turn_already_there(rm, prompt):
    plain = run(rm.score([OutcomeItem(prompt, "4")]))
    closed = run(rm.score([OutcomeItem(prompt, "4" + END_OF_TURN)]))
    assert closed.scores == pytest.approx(plain.scores, abs=ATOL)
    assert closed.tokens + closed.cached_tokens == plain.tokens + plain.cached_tokens


def test_seq_cls_truncates_the_prompt_from_the_left(
    model_dirs, reference_models, tokenizer, prompt
):
    reward = _loaded(
        SequenceClassifierReward(
            SequenceClassifierConfig(name="short", path=model_dirs["rm"], max_length=24)
        )
    )
    text = prompt + RESPONSES[1] + END_OF_TURN
    assert len(_encode(tokenizer, text)) > 24
    scored = run(reward.score([OutcomeItem(prompt, RESPONSES[1])]))
    expected = reference_outcome(reference_models["rm"], tokenizer, text, max_length=24)
    assert scored.scores[0] == pytest.approx(expected, abs=ATOL)
    assert scored.tokens + scored.cached_tokens == 24


def test_seq_cls_two_label_head_reads_log_odds(model_dirs, reference_models, tokenizer, prompt):
    reward = _loaded(
        SequenceClassifierReward(SequenceClassifierConfig(name="rm2", path=model_dirs["rm2"]))
    )
    scored = run(reward.score([OutcomeItem(prompt, r) for r in RESPONSES]))
    model = reference_models["rm2"]
    expected = [reference_outcome(model, tokenizer, prompt + r + END_OF_TURN) for r in RESPONSES]
    assert_close(scored.scores, expected)
    assert reward.info.extra["head"] == "log-odds of label 1 over label 0"


def test_concurrent_calls_share_forward_passes(rm, prompt):
    calls = [[OutcomeItem(prompt, r)] for r in RESPONSES * 2]
    alone = [run(rm.score(c)).scores for c in calls]

    async def together() -> tuple[list[list[float]], int]:
        before = rm.batcher.passes
        results = await asyncio.gather(*(rm.score(c) for c in calls))
        passes = rm.batcher.passes - before
        await rm.shutdown()
        return [r.scores for r in results], passes

    merged, passes = run(together())
    assert passes < len(calls)
    for a, b in zip(merged, alone, strict=True):
        assert_close(a, b)


def test_seq_cls_empty_call(rm):
    assert run(rm.score([])).scores == []


# ---- step-tag PRMs ------------------------------------------------------------------------------


def _process_items(prompt: str) -> list[ProcessItem]:
    return [ProcessItem(prompt, STEPS[:n]) for n in (3, 1, 2)]


def test_label_token_prm_matches_full_logits(prm_lm, reference_models, tokenizer, prompt):
    model = reference_models["prm_lm"]
    items = _process_items(prompt)
    scored = run(prm_lm.score_steps(items))  # one padded pass over different lengths
    for item, scores in zip(items, scored.scores, strict=True):
        assert_close(scores, reference_label_token(model, tokenizer, prompt, item.steps))
    single = run(prm_lm.score_steps(items[:1])).scores[0]
    assert_close(scored.scores[0], single)
    assert len(set(single)) == len(STEPS)
    assert all(0.0 <= s <= 1.0 for s in single)
    assert prm_lm.info.kind == "process"


def test_two_way_prm_matches_token_classifier(prm_tc, reference_models, tokenizer, prompt):
    model = reference_models["prm_tc"]
    items = _process_items(prompt)
    scored = run(prm_tc.score_steps(items))
    for item, scores in zip(items, scored.scores, strict=True):
        assert_close(scores, reference_two_way(model, tokenizer, prompt, item.steps))
    assert scored.tokens + scored.cached_tokens == sum(
        len(tagged_ids(tokenizer, prompt, i.steps, SEP, keep_space=False)[0]) for i in items
    )


@pytest.mark.parametrize("which", ["prm_lm", "prm_tc"])
def test_partial_step_is_scored_as_if_complete(which, request, reference_models, tokenizer, prompt):
    reward = request.getfixturevalue(which)
    reference = reference_label_token if which == "prm_lm" else reference_two_way
    steps = (STEPS[0], "So the ans")
    partial = run(reward.score_steps([ProcessItem(prompt, steps, partial=True)])).scores[0]
    assert_close(partial, reference(reference_models[which], tokenizer, prompt, steps))
    first = run(reward.score_steps([ProcessItem(prompt, steps[:1])])).scores[0]
    assert partial[0] == pytest.approx(first[0], abs=ATOL)  # later steps never change earlier


def test_prm_outcome_is_the_last_step(prm_lm, prompt):
    response = "".join(STEPS)
    outcome = run(prm_lm.score([OutcomeItem(prompt, response)]))
    steps = run(prm_lm.score_steps([ProcessItem(prompt, STEPS)]))
    assert outcome.scores[0] == pytest.approx(steps.scores[0][-1], abs=ATOL)


def test_prm_items_without_steps(prm_lm, prompt):
    scored = run(prm_lm.score_steps([ProcessItem(prompt, ()), ProcessItem(prompt, STEPS[:1])]))
    assert scored.scores[0] == [] and len(scored.scores[1]) == 1


def test_prm_truncates_the_prompt_and_refuses_overlong_steps(prm_lm, reference_models, tokenizer):
    long_prompt = "Consider the numbers. " * 60
    ids, _ = tagged_ids(tokenizer, long_prompt, STEPS, TAG, keep_space=True)
    assert len(ids) > PRM_POSITIONS
    scored = run(prm_lm.score_steps([ProcessItem(long_prompt, STEPS)]))
    assert scored.tokens + scored.cached_tokens == PRM_POSITIONS
    # the reference: the same ids with the prompt's first tokens cut away
    cut = len(ids) - PRM_POSITIONS
    kept = ids[cut:]
    with torch.inference_mode():
        logits = reference_models["prm_lm"](input_ids=torch.tensor([kept])).logits[0]
    (tag_id,) = _encode(tokenizer, TAG)
    positions = [p for p, t in enumerate(kept) if t == tag_id][-len(STEPS) :]
    labels = [_encode(tokenizer, GOOD)[0], _encode(tokenizer, BAD)[0]]
    assert_close(scored.scores[0], torch.softmax(logits[positions][:, labels], -1)[:, 0].tolist())
    with pytest.raises(RewardInputError, match="steps take"):
        run(prm_lm.score_steps([ProcessItem("Q", ("Many words here. " * 80,))]))


# ---- configuration errors -----------------------------------------------------------------------


def _start(configs: list[Any]) -> None:
    rewards = build_rewards(configs, default_model_dir=None)
    run(rewards.start())


def test_multi_token_tags_fail_at_start(model_dirs):
    path = model_dirs["prm_lm"]
    with pytest.raises(RewardConfigError, match="step_tag 'ки' is 2 tokens"):
        _start([StepTagPRMConfig(name="p", path=path)])  # Math-Shepherd's default tag
    with pytest.raises(RewardConfigError, match="good_token ' YES' is 2 tokens"):
        _start([StepTagPRMConfig(name="p", path=path, step_tag=TAG, good_token=" YES")])
    with pytest.raises(RewardConfigError, match="same token"):
        _start([StepTagPRMConfig(name="p", path=path, step_tag=TAG, bad_token=GOOD)])


def test_missing_dirs_and_missing_heads_fail(model_dirs, tmp_path: Path):
    missing = str(tmp_path / "nope")
    with pytest.raises(RewardConfigError, match="not a model directory"):
        build_rewards([SequenceClassifierConfig(name="rm", path=missing)], default_model_dir=None)
    with pytest.raises(RewardConfigError, match="not a model directory"):
        build_rewards([StepTagPRMConfig(name="p", path=missing)], default_model_dir=None)
    causal_lm = model_dirs["prm_lm"]
    with pytest.raises(RewardConfigError, match="no trained 'score' head"):
        _start([SequenceClassifierConfig(name="rm", path=causal_lm)])
    with pytest.raises(RewardConfigError, match="no trained 'score' head"):
        _start([StepTagPRMConfig(name="p", path=causal_lm, style="two_way", step_tag=SEP)])


def test_judge_config_errors():
    with pytest.raises(RewardConfigError, match="needs the policy engine"):
        build_rewards([JudgeConfig(name="j")], default_model_dir=None)
    for template in ("Is {answer} right?", "{question} {answer} {extra}", "{question} {answer"):
        with pytest.raises(RewardConfigError, match="'j'"):
            JudgeReward(JudgeConfig(name="j", template=template), FakeEngine())


# ---- judge --------------------------------------------------------------------------------------


def test_yes_probability():
    assert yes_probability([(1, " Yes", -0.1), (2, "Maybe", -1.0)]) == 1.0
    assert yes_probability([(2, "Maybe", -1.0)]) == 0.5
    assert yes_probability([(1, " Yes", -1.0), (3, "No", -1.0), (1, " Yes", -1.0)]) == 0.5
    expected = (math.exp(-1) + math.exp(-2)) / (math.exp(-1) + math.exp(-2) + math.exp(-1.5))
    got = yes_probability([(1, " Yes", -1.0), (4, "yes", -2.0), (5, " no", -1.5)])
    assert got == pytest.approx(expected)
    assert yes_probability([(1, "Yes", float("-inf")), (3, "No", -3.0)]) == 0.0


class ScriptedJudgeEngine(FakeEngine):
    """Answers every verdict prompt with fixed first-token logprobs."""

    def __init__(self, top: tuple[tuple[int, str, float], ...]) -> None:
        super().__init__(delay=0.01)
        self.top = top
        self.concurrent = 0
        self.peak = 0

    async def generate(self, spec: SamplingSpec) -> Generation:
        self.calls.append(spec)
        self.concurrent += 1
        self.peak = max(self.peak, self.concurrent)
        await asyncio.sleep(self.delay)
        self.concurrent -= 1
        tid, text, logprob = self.top[0]
        logprobs = [TokenLogprob(tid, text, logprob, self.top)]
        prompt_ids = await self.tokenize(str(spec.prompt))
        return Generation(prompt_ids, [Completion(0, text, [tid], "length", None, logprobs)])


def test_judge_prompts_and_scores_with_a_scripted_engine():
    engine = ScriptedJudgeEngine(((1, " Yes", math.log(0.6)), (2, " No", math.log(0.2))))
    judge = JudgeReward(JudgeConfig(name="j"), engine)
    items = [OutcomeItem(f"<user>question {i}", f"answer {i}") for i in range(3)]
    scored = run(judge.score(items))
    assert scored.scores == pytest.approx([0.75] * 3)
    assert engine.peak == 3  # all items in flight at once
    for i, spec in enumerate(engine.calls):
        assert (spec.max_tokens, spec.temperature, spec.logprobs) == (1, 0.0, 20)
        content = DEFAULT_TEMPLATE.format(question=items[i].prompt, answer=items[i].response)
        assert spec.prompt == f"<user>{content}<assistant>"
    assert scored.tokens == sum(len(str(s.prompt)) for s in engine.calls)
    assert judge.info.kind == "outcome"


@pytest.mark.engine
def test_judge_on_the_real_engine(live_server):
    engine = live_server.engine
    judge = JudgeReward(JudgeConfig(name="judge"), engine)

    async def judged() -> tuple[list[float], list[float], int, int]:
        prompt = await engine.apply_chat_template([{"role": "user", "content": QUESTION}])
        items = [
            OutcomeItem(prompt, "2 + 2 = 4. The answer is 4."),
            OutcomeItem(prompt, "2 + 2 = 5. The answer is 5."),
        ]
        first = await judge.score(items)
        second = await judge.score(items)
        verdicts = [await judge.verdict_prompt(i) for i in items]
        expected = sum([len(await engine.tokenize(v, add_special_tokens=True)) for v in verdicts])
        return first.scores, second.scores, first.tokens, expected

    first, second, tokens, expected_tokens = live_server.run(judged())
    print(f"\njudge P(Yes): right answer {first[0]:.4f}, wrong answer {first[1]:.4f}")
    assert all(0.0 <= p <= 1.0 for p in first + second)
    assert second == pytest.approx(first, abs=1e-3)
    assert tokens == expected_tokens
