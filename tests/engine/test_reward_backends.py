"""The Hugging Face reward backends on tiny real models (engine), and the judge on the real engine.

Tiny Llama models (random weights, the default model's tokenizer) are built once per session;
every backend score is checked against plain transformers forward passes over the full logits,
on the exact text each backend must feed its model: its own input format rendered from the
request's messages, never the policy's rendered prompt. The judge with a scripted engine:
tests/unit/test_reward_backends.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

from winnow.rewards.base import ChatPrompt, OutcomeItem, ProcessItem, RewardInputError
from winnow.rewards.configs import (
    JudgeConfig,
    RewardConfigError,
    SequenceClassifierConfig,
    StepTagPRMConfig,
)
from winnow.rewards.judge import JudgeReward
from winnow.rewards.registry import build_rewards
from winnow.rewards.seq_cls import SequenceClassifierReward
from winnow.rewards.step_tag_prm import StepTagPRM

T = TypeVar("T")

TAG = "к"  # " к" is one token in this tokenizer (Math-Shepherd's " ки" is two)
SEP = "<file_sep>"  # a special token, like Qwen2.5-Math-PRM's <extra_0>
GOOD, BAD = "+", "-"
PRM_POSITIONS = 256
ATOL = 1e-4

QUESTION = "What is 2 + 2?"
MESSAGES = [
    {"role": "system", "content": "You are a careful tutor."},
    {"role": "user", "content": QUESTION},
]
STEPS = ("First, 2 + 2 = 4.\n\n", "Check: 4 - 2 = 2, so it holds.\n\n", "So the answer is 4.")
BODIES = ("First, 2 + 2 = 4.", "Check: 4 - 2 = 2, so it holds.", "So the answer is 4.")
# The reward model's own chat template (Llama-3 style), unlike the policy's ChatML: the outcome
# reward model must render the messages with this one.
RM_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
    "'<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
)
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


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
        if name.startswith("rm"):  # the reward models' own template, not the policy's
            _set_template(directory, RM_TEMPLATE)
        dirs[name] = str(directory)
    return dirs


def _set_template(directory: Path, template: str | None) -> None:
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(directory)
    own.chat_template = template
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    own.save_pretrained(directory)


@pytest.fixture(scope="session")
def prompt(tokenizer: Any) -> ChatPrompt:
    """What strategies hand to rewards: the policy's rendered text, carrying its messages."""
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    return ChatPrompt(str(text), MESSAGES)


def rm_text(response: str, messages: Sequence[dict[str, str]] = MESSAGES) -> str:
    """The outcome reward model's input, written out by hand from RM_TEMPLATE."""
    turns = [*messages, {"role": "assistant", "content": response}]
    return "<|begin_of_text|>" + "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        for m in turns
    )


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
    config = StepTagPRMConfig(
        name="prm2",
        path=model_dirs["prm_tc"],
        style="two_way",
        step_tag=SEP,
        system_prompt=QWEN_PRM_SYSTEM,
    )
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


def question_text(steps: Sequence[str]) -> str:
    """Math-Shepherd's input, as its model card builds it: f"{question} {output}", the output's
    steps each ending in " <tag>", joined by newlines."""
    return f"{QUESTION} " + "\n".join(f"{step.strip()} {TAG}" for step in steps)


def qwen_prm_text(steps: Sequence[str]) -> str:
    """Qwen2.5-Math-PRM's input, as its model card builds it (here in this tokenizer's ChatML):
    its own system prompt, the question, and the steps joined and ended by the separator."""
    answer = "".join(step.strip() + SEP for step in steps)
    return (
        f"<|im_start|>system\n{QWEN_PRM_SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n"
        f"<|im_start|>assistant\n{answer}<|im_end|>\n"
    )


def tagged_ids(tokenizer: Any, text: str, tag_token: str, bos: bool) -> tuple[list[int], list[int]]:
    """The reference tokenization (the whole text in one call) and the positions whose id is the
    tag's, cut after the last tag (later tokens cannot change the scores)."""
    ids = list(tokenizer.encode(text, add_special_tokens=bos))
    (tag_id,) = _encode(tokenizer, tag_token)
    positions = [i for i, t in enumerate(ids) if t == tag_id]
    return ids[: positions[-1] + 1], positions


def label_token_ids(tokenizer: Any, steps: Sequence[str]) -> tuple[list[int], list[int]]:
    return tagged_ids(tokenizer, question_text(steps), " " + TAG, bos=True)


def two_way_ids(tokenizer: Any, steps: Sequence[str]) -> tuple[list[int], list[int]]:
    return tagged_ids(tokenizer, qwen_prm_text(steps), SEP, bos=False)


@torch.inference_mode()
def reference_label_token(model: Any, tokenizer: Any, steps: Sequence[str]):
    ids, positions = label_token_ids(tokenizer, steps)
    logits = model(input_ids=torch.tensor([ids])).logits[0]  # [T, V], the full vocabulary
    labels = [_encode(tokenizer, GOOD)[0], _encode(tokenizer, BAD)[0]]
    return torch.softmax(logits[positions][:, labels], dim=-1)[:, 0].tolist()


@torch.inference_mode()
def reference_two_way(model: Any, tokenizer: Any, steps: Sequence[str]):
    ids, positions = two_way_ids(tokenizer, steps)
    logits = model(input_ids=torch.tensor([ids])).logits[0]  # [T, 2]
    return torch.softmax(logits[positions], dim=-1)[:, 1].tolist()


def assert_close(actual: Sequence[float], expected: Sequence[float]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a == pytest.approx(e, abs=ATOL)


# ---- sequence classifier ------------------------------------------------------------------------

RESPONSES = ("4", "2 + 2 = 4. The answer is 4.", "The answer is 5, because " + "2 + 3 = 5. " * 12)


def test_seq_cls_reads_the_messages_in_its_own_chat_template(rm, tokenizer, prompt):
    item = OutcomeItem(prompt, " 2 + 2 = 4.")
    text = rm.text(item)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a careful "
        "tutor.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n2 + 2 = 4.<|eot_id|>"
    )
    assert text == rm_text(" 2 + 2 = 4.") and str(prompt) not in text  # not the policy's text
    # the ids are apply_chat_template(tokenize=True)'s, as Skywork-Reward's model card feeds it
    conversation = [*MESSAGES, {"role": "assistant", "content": " 2 + 2 = 4."}]
    expected = tokenizer.apply_chat_template(
        conversation, tokenize=True, chat_template=RM_TEMPLATE, return_dict=True
    )["input_ids"]
    assert list(rm.job(item).ids) == list(expected) == _encode(tokenizer, text)
    assert rm.job(item).positions == (len(expected) - 1,)


def test_seq_cls_system_prompt_and_template_from_config(model_dirs, tokenizer, prompt):
    config = SequenceClassifierConfig(
        name="rm_cfg",
        path=model_dirs["rm"],
        system_prompt="Judge the answer.",
        chat_template="{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}",
    )
    reward = _loaded(SequenceClassifierReward(config))
    assert reward.text(OutcomeItem(prompt, "4")) == (
        "[system] Judge the answer.\n[user] What is 2 + 2?\n[assistant] 4\n"
    )


def test_seq_cls_plain_prompt_is_one_user_message(rm):
    """A completion request's prompt (or /v1/rewards with "prompt") has no messages."""
    plain = OutcomeItem("Add 2 and 2.", "4")
    assert rm.text(plain) == rm_text("4", [{"role": "user", "content": "Add 2 and 2."}])


def test_seq_cls_matches_the_models_own_forward(rm, reference_models, tokenizer, prompt):
    model = reference_models["rm"]
    items = [OutcomeItem(prompt, r) for r in RESPONSES]
    expected = [reference_outcome(model, tokenizer, rm_text(r)) for r in RESPONSES]
    one = [run(rm.score([item])).scores[0] for item in items]
    batch = run(rm.score(items))  # different lengths, one padded pass
    assert_close(one, expected)
    assert_close(batch.scores, expected)
    assert len(set(batch.scores)) == 3
    lengths = [len(_encode(tokenizer, rm_text(r))) for r in RESPONSES]
    assert batch.tokens + batch.cached_tokens == sum(lengths)
    assert rm.info.kind == "outcome" and rm.info.scale == "raw logit (higher is better)"
    assert rm.info.extra["head"] == "logit"


def test_seq_cls_truncates_the_prompt_from_the_left(
    model_dirs, reference_models, tokenizer, prompt
):
    reward = _loaded(
        SequenceClassifierReward(
            SequenceClassifierConfig(name="short", path=model_dirs["rm"], max_length=24)
        )
    )
    text = rm_text(RESPONSES[1])
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
    expected = [reference_outcome(model, tokenizer, rm_text(r)) for r in RESPONSES]
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


def test_label_token_prm_reads_the_bare_question_with_tagged_steps(prm_lm, tokenizer, prompt):
    """Math-Shepherd's format: the question (the last user message), never the chat text."""
    item = ProcessItem(prompt, STEPS)
    text, spans, _ = prm_lm.text(item)
    assert text == (
        "What is 2 + 2? First, 2 + 2 = 4. к\nCheck: 4 - 2 = 2, so it holds. к\n"
        "So the answer is 4. к"
    )
    assert text == question_text(STEPS) and [text[a:b] for a, b in spans] == [TAG] * 3
    job = prm_lm.job(item)
    ids, positions = label_token_ids(tokenizer, STEPS)
    assert list(job.ids) == ids and list(job.positions) == positions and len(positions) == 3
    # a plain prompt is the question itself
    assert prm_lm.text(ProcessItem(QUESTION, STEPS))[0] == text


def test_two_way_prm_reads_its_own_system_prompt_and_separators(prm_tc, tokenizer, prompt):
    """Qwen2.5-Math-PRM's format: its system prompt (replacing the request's), the question in
    the model's chat template, the steps joined and ended by the separator."""
    item = ProcessItem(prompt, STEPS)
    text, spans, _ = prm_tc.text(item)
    assert text == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant"
        "\nFirst, 2 + 2 = 4.<file_sep>Check: 4 - 2 = 2, so it holds.<file_sep>So the answer is "
        "4.<file_sep><|im_end|>\n"
    )
    assert text == qwen_prm_text(STEPS) and [text[a:b] for a, b in spans] == [SEP] * 3
    job = prm_tc.job(item)
    ids, positions = two_way_ids(tokenizer, STEPS)
    assert list(job.ids) == ids and list(job.positions) == positions and len(positions) == 3


def test_a_tag_inside_a_step_does_not_move_the_positions_read(prm_tc, tokenizer, prompt):
    steps = ("Write <file_sep> here.\n\n", "Done.")
    job = prm_tc.job(ProcessItem(prompt, steps))
    (sep,) = _encode(tokenizer, SEP)
    assert [i for i, t in enumerate(job.ids) if t == sep][1:] == list(job.positions)


def test_label_token_prm_matches_full_logits(prm_lm, reference_models, tokenizer, prompt):
    model = reference_models["prm_lm"]
    items = _process_items(prompt)
    scored = run(prm_lm.score_steps(items))  # one padded pass over different lengths
    for item, scores in zip(items, scored.scores, strict=True):
        assert_close(scores, reference_label_token(model, tokenizer, item.steps))
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
        assert_close(scores, reference_two_way(model, tokenizer, item.steps))
    assert scored.tokens + scored.cached_tokens == sum(
        len(two_way_ids(tokenizer, i.steps)[0]) for i in items
    )


@pytest.mark.parametrize("which", ["prm_lm", "prm_tc"])
def test_partial_step_is_scored_as_if_complete(which, request, reference_models, tokenizer, prompt):
    reward = request.getfixturevalue(which)
    reference = reference_label_token if which == "prm_lm" else reference_two_way
    steps = (STEPS[0], "So the ans")
    partial = run(reward.score_steps([ProcessItem(prompt, steps, partial=True)])).scores[0]
    assert_close(partial, reference(reference_models[which], tokenizer, steps))
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
    long_question = "Consider the numbers. " * 60
    text = f"{long_question.strip()} " + "\n".join(f"{s.strip()} {TAG}" for s in STEPS)
    ids, _ = tagged_ids(tokenizer, text, " " + TAG, bos=True)
    assert len(ids) > PRM_POSITIONS
    scored = run(prm_lm.score_steps([ProcessItem(long_question.strip(), STEPS)]))
    assert scored.tokens + scored.cached_tokens == PRM_POSITIONS
    # the reference: the same ids with the prompt's first tokens cut away
    kept = ids[len(ids) - PRM_POSITIONS :]
    with torch.inference_mode():
        logits = reference_models["prm_lm"](input_ids=torch.tensor([kept])).logits[0]
    (tag_id,) = _encode(tokenizer, " " + TAG)
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


def test_a_model_without_a_chat_template_fails_at_start(model_dirs, tmp_path: Path):
    import shutil

    bare = tmp_path / "bare_rm"
    shutil.copytree(model_dirs["rm"], bare)
    _set_template(bare, None)
    with pytest.raises(RewardConfigError, match=r"'rm'.* no chat template; give the template"):
        _start([SequenceClassifierConfig(name="rm", path=str(bare))])
    _start([SequenceClassifierConfig(name="rm", path=str(bare), chat_template=RM_TEMPLATE)])


def test_missing_dirs_and_missing_heads_fail(model_dirs, tmp_path: Path):
    missing = str(tmp_path / "nope")
    with pytest.raises(RewardConfigError, match="not a model directory"):
        build_rewards([SequenceClassifierConfig(name="rm", path=missing)], default_model_dir=None)
    with pytest.raises(RewardConfigError, match="not a model directory"):
        build_rewards([StepTagPRMConfig(name="p", path=missing)], default_model_dir=None)
    causal_lm = model_dirs["prm_lm"]
    unread = r"does not read: lm_head\.weight|has no 'score' head"  # its LM head, named
    with pytest.raises(RewardConfigError, match=unread):
        _start([SequenceClassifierConfig(name="rm", path=causal_lm)])
    with pytest.raises(RewardConfigError, match=unread):
        _start([StepTagPRMConfig(name="p", path=causal_lm, style="two_way", step_tag=SEP)])


# ---- judge --------------------------------------------------------------------------------------


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


# ---- the probes read the policy's own text ------------------------------------------------------


def test_probes_read_the_policys_rendered_text(default_model_dir: str, prompt):
    """The in-process probes read the policy's hidden states on the text the policy saw: a
    ChatPrompt reaches them as exactly that text."""
    from winnow.rewards.backbone import Backbone
    from winnow.rewards.probe import ProbeReward
    from winnow.rewards.registry import ASSETS

    backbone = Backbone(default_model_dir)
    outcome = ProbeReward("default", ASSETS / "default", backbone)
    process = ProbeReward("default_prm", ASSETS / "default_prm", backbone)
    text = str(prompt)
    assert type(text) is str and text != rm_text("4")
    assert outcome.outcome_job(OutcomeItem(prompt, "4")) == outcome.outcome_job(
        OutcomeItem(text, "4")
    )
    ids, _ = backbone.encode_segments([text, "4"])
    assert list(outcome.outcome_job(OutcomeItem(prompt, "4")).ids) == ids
    assert process.process_job(ProcessItem(prompt, STEPS)) == process.process_job(
        ProcessItem(text, STEPS)
    )
