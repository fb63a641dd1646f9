"""The reward model families, each on a tiny random checkpoint of its real layout, offline.

Every checkpoint is saved here from a class written as its authors' code writes it (the same
``config.json`` architecture, weight names, special tokens and chat template), with 2 layers and
a hidden size of 32. winnow's scores are checked against a direct computation on the same
checkpoint, written here from each model card's recipe and independent of winnow's code: its
input, one forward pass of the authors' class, the logits or head output at the positions the
card reads. The README's "Reward models" table is read here too: each config it shows is started
on its family's checkpoint and checked against the same computation.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from tests.support import tiny_tokenizers
from winnow.rewards.base import ChatPrompt, OutcomeItem, ProcessItem
from winnow.rewards.configs import RewardConfigError, RewardConfigList
from winnow.rewards.registry import build_rewards

T = TypeVar("T")
ATOL = 1e-4
ROOT = Path(__file__).resolve().parents[2]

QUESTION = "What is 2 + 2?"
MESSAGES = [
    {"role": "system", "content": "You are a careful tutor."},
    {"role": "user", "content": QUESTION},
]
PROMPT = ChatPrompt("<rendered by the policy's own template>", MESSAGES)
STEPS = ("First, 2 + 2 = 4.\n\n", "Check: 4 - 2 = 2, so it holds.\n\n", "So the answer is 4.")
BODIES = [s.strip() for s in STEPS]
RESPONSES = ["The answer is 4.", "It is 5, since 2 + 2 = 5 - 1 + 1 and so on.", "4"]
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def tiny(config_class: Any, tokenizer: Any, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 512,
        "initializer_range": 0.2,  # spread scores out, so position or padding bugs show
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
    }
    values.update(overrides)
    return config_class(**values)


def save(model: Any, directory: Path, **config_extra: Any) -> tuple[str, Any]:
    """The checkpoint's directory, and its tokenizer as a user loads it (after config.json is
    there: transformers picks the tokenizer class by the model type)."""
    from transformers import AutoTokenizer

    model.save_pretrained(directory)
    if config_extra:  # what the published config.json says besides the architecture
        path = directory / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config_extra}, indent=2))
    return str(directory), AutoTokenizer.from_pretrained(directory)


def started(config: dict[str, Any]) -> Any:
    rewards = build_rewards(RewardConfigList.validate_python([config]), default_model_dir=None)
    run(rewards.start())
    return rewards.get(config["name"])


def refused(config: dict[str, Any]) -> str:
    with pytest.raises(RewardConfigError) as caught:
        started(config)
    return str(caught.value.__cause__ or caught.value)


def docs_config(name: str) -> dict[str, Any]:
    """An entry of the rewards config the docs show, as written there."""
    text = (ROOT / "docs" / "rewards.md").read_text()
    block = re.search(r"```json\n(\[.*?\])\n```", text, re.S)
    assert block is not None
    return next(c for c in json.loads(block.group(1)) if c["name"] == name)


# ---- the authors' classes (their remote code, as it names its modules) --------------------------


def qwen2_classes() -> dict[str, type[Any]]:
    from transformers import Qwen2Model, Qwen2PreTrainedModel

    class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):  # modeling_qwen2_rm.py, PRM
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model = Qwen2Model(config)
            size = config.hidden_size
            self.score = nn.Sequential(nn.Linear(size, size), nn.ReLU(), nn.Linear(size, 2))
            self.post_init()

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.score(self.model(input_ids=input_ids).last_hidden_state)

    class Qwen2ForRewardModel(Qwen2PreTrainedModel):  # modeling_qwen2_rm.py, Qwen2.5-Math-RM
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model = Qwen2Model(config)
            size = config.hidden_size
            self.score = nn.Sequential(nn.Linear(size, size), nn.ReLU(), nn.Linear(size, 1))
            self.post_init()

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.score(self.model(input_ids=input_ids).last_hidden_state)

    class SkyworkValueHead(nn.Module):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.dropout = nn.Dropout(0.1)
            self.summary = nn.Linear(size, 1)

    class Qwen2ForPrmModel(Qwen2PreTrainedModel):  # Skywork-o1-Open-PRM: LM + v_head
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model = Qwen2Model(config)
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.v_head = SkyworkValueHead(config.hidden_size)
            self.post_init()

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids).last_hidden_state
            return torch.sigmoid(self.v_head.summary(self.v_head.dropout(hidden)))[..., 0]

    return {
        c.__name__: c for c in (Qwen2ForProcessRewardModel, Qwen2ForRewardModel, Qwen2ForPrmModel)
    }


def qwen_auto_map(architecture: str) -> dict[str, str]:
    """Where the Qwen2.5-Math reward checkpoints point transformers for their remote code (never
    run by winnow, which builds the class ``architectures`` names)."""
    return {
        "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
        "AutoModel": f"modeling_qwen2_rm.{architecture}",
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


# ---- Qwen2.5-Math-PRM ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_prm(root: Path) -> tuple[str, Any]:
    from transformers import Qwen2Config

    directory = root / "qwen25_math_prm"
    tokenizer = tiny_tokenizers.qwen25(directory, extra=["<extra_0>"])
    torch.manual_seed(1)
    model = qwen2_classes()["Qwen2ForProcessRewardModel"](tiny(Qwen2Config, tokenizer))
    return save(model, directory, auto_map=qwen_auto_map("Qwen2ForProcessRewardModel"))


def qwen_prm_reference(path: str, tokenizer: Any, steps: list[str]) -> list[float]:
    """The Qwen2.5-Math-PRM model card: system, query, steps joined and ended by <extra_0>; P(1)
    of the 2-way head at every <extra_0>."""
    cls = qwen2_classes()["Qwen2ForProcessRewardModel"]
    model = cls.from_pretrained(path, dtype=torch.float32).eval()
    messages = [
        {"role": "system", "content": QWEN_PRM_SYSTEM},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        logits = model(ids)[0]
    sep = tokenizer.encode("<extra_0>")[0]
    return torch.softmax(logits[ids[0] == sep], dim=-1)[:, 1].tolist()


def test_qwen25_math_prm_with_the_docs_config_starts_and_scores(qwen_prm: tuple[str, Any]):
    path, tokenizer = qwen_prm
    config = {**docs_config("qprm"), "path": path}
    reward = started(config)
    items = [ProcessItem(PROMPT, STEPS), ProcessItem(PROMPT, STEPS[:1])]
    scored = run(reward.score_steps(items))
    assert scored.scores[0] == pytest.approx(qwen_prm_reference(path, tokenizer, BODIES), abs=ATOL)
    assert scored.scores[1] == pytest.approx(
        qwen_prm_reference(path, tokenizer, BODIES[:1]), abs=ATOL
    )
    assert type(reward.model.model).__name__ == "Qwen2ForProcessRewardModel"
    assert len(set(scored.scores[0])) == 3  # distinct: read at three different positions


def test_a_prm_read_as_a_one_linear_classifier_is_refused_naming_the_keys(
    qwen_prm: tuple[str, Any], root: Path
):
    """What the README's config did before: built as Qwen2ForTokenClassification, one Linear
    ``score``: the MLP head's weights would be dropped and a random ``score`` used."""
    path, _ = qwen_prm
    relabelled = root / "qwen_prm_as_token_classifier"
    relabelled.mkdir()
    for file in Path(path).iterdir():
        (relabelled / file.name).write_bytes(file.read_bytes())
    config_file = relabelled / "config.json"
    config = json.loads(config_file.read_text())
    config["architectures"] = ["Qwen2ForTokenClassification"]
    config_file.write_text(json.dumps(config))
    message = refused({**docs_config("qprm"), "path": str(relabelled)})
    for key in ("score.0.weight", "score.2.bias", "score.weight"):
        assert key in message


# ---- math-shepherd ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shepherd(root: Path) -> tuple[str, Any]:
    from transformers import MistralConfig, MistralForCausalLM

    directory = root / "math_shepherd"
    tokenizer = tiny_tokenizers.mistral(directory)
    torch.manual_seed(2)
    return save(MistralForCausalLM(tiny(MistralConfig, tokenizer)), directory)


def shepherd_reference(path: str, tokenizer: Any, steps: list[str]) -> list[float]:
    """The math-shepherd model card, word for word: ids of "ки" and of "+ -" (after BOS), the
    question, a space and the steps each followed by " ки", joined by newlines; softmax over the
    two label logits, P("+"), at every tag."""
    from transformers import MistralForCausalLM

    step_tag_id = tokenizer.encode("ки")[-1]
    candidate_tokens = tokenizer.encode("+ -")[1:]
    output = "".join(f"{body} ки\n" for body in steps).rstrip("\n")
    ids = torch.tensor([tokenizer.encode(f"{QUESTION} {output}")])
    model = MistralForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ids).logits[:, :, candidate_tokens]
    return logits.softmax(dim=-1)[:, :, 0][ids == step_tag_id].tolist()


def test_math_shepherd_with_its_real_tag_token(shepherd: tuple[str, Any]):
    path, tokenizer = shepherd
    assert tokenizer.convert_ids_to_tokens([tokenizer.encode("ки")[-1]]) == ["▁ки"]
    want = shepherd_reference(path, tokenizer, BODIES)
    assert len(want) == 3

    reward = started({**docs_config("prm"), "path": path})
    scored = run(reward.score_steps([ProcessItem(PROMPT, STEPS)]))
    assert scored.scores[0] == pytest.approx(want, abs=ATOL)


# ---- RLHFlow Llama3.1-8B-PRM --------------------------------------------------------------------


@pytest.fixture(scope="module")
def rlhflow(root: Path) -> tuple[str, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = root / "rlhflow_prm"
    tokenizer = tiny_tokenizers.llama3(directory)
    torch.manual_seed(3)
    return save(LlamaForCausalLM(tiny(LlamaConfig, tokenizer)), directory)


def rlhflow_reference(path: str, tokenizer: Any, steps: list[str]) -> list[float]:
    """RLHFlow's card: user turns (question + first step, then one step each), each answered '+';
    P('+') against '-' at position -3 (the token before the last '+'); once per prefix."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    plus, minus = tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]
    scores = []
    for k in range(1, len(steps) + 1):
        conversation = []
        for j, step in enumerate(steps[:k]):
            text = QUESTION + " " + step if j == 0 else step
            conversation += [
                {"content": text, "role": "user"},
                {"content": "+", "role": "assistant"},
            ]
        encoded = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            logits = model(encoded["input_ids"]).logits[:, -3, [plus, minus]]
        scores.append(float(logits.softmax(dim=-1)[0, 0]))
    return scores


def test_rlhflow_multi_turn_prm(rlhflow: tuple[str, Any]):
    path, tokenizer = rlhflow
    reward = started(
        {"name": "rlhflow", "backend": "step_tag_prm", "path": path, "format": "multi_turn"}
    )
    scored = run(reward.score_steps([ProcessItem(PROMPT, STEPS), ProcessItem(QUESTION, STEPS[:2])]))
    want = rlhflow_reference(path, tokenizer, BODIES)
    assert scored.scores[0] == pytest.approx(want, abs=ATOL)
    assert scored.scores[1] == pytest.approx(want[:2], abs=ATOL)


# ---- Skywork-o1-Open-PRM ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skywork_prm(root: Path) -> tuple[str, Any]:
    from transformers import Qwen2Config

    directory = root / "skywork_o1_prm"
    tokenizer = tiny_tokenizers.qwen25(directory, bos="<|endoftext|>")
    torch.manual_seed(4)
    model = qwen2_classes()["Qwen2ForPrmModel"](tiny(Qwen2Config, tokenizer))
    return save(model, directory)


def skywork_prm_reference(path: str, tokenizer: Any, steps: list[str]) -> list[float]:
    """Skywork's prepare_input: BOS + problem + newline, then each step's ids and the newline
    token; the sigmoid of the value head where the flags are set."""
    prompt_ids = tokenizer.encode(tokenizer.bos_token + QUESTION + "\n")
    step_token_id = tokenizer.encode("\n")[-1]
    ids, flags = list(prompt_ids), [0] * len(prompt_ids)
    for step in steps:
        step_ids = [*tokenizer.encode(step), step_token_id]
        ids += step_ids
        flags += [0] * (len(step_ids) - 1) + [1]
    model = qwen2_classes()["Qwen2ForPrmModel"].from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        values = model(torch.tensor([ids]))[0]
    return values[torch.tensor(flags) == 1].tolist()


def test_skywork_o1_prm_reads_its_value_head(skywork_prm: tuple[str, Any]):
    path, tokenizer = skywork_prm
    reward = started(
        {"name": "sky", "backend": "step_tag_prm", "path": path, "style": "value_head"}
    )
    assert type(reward.model.model).__name__ == "Qwen2ForPrmModel"
    scored = run(reward.score_steps([ProcessItem(PROMPT, STEPS)]))
    assert scored.scores[0] == pytest.approx(
        skywork_prm_reference(path, tokenizer, BODIES), abs=ATOL
    )


def test_skywork_o1_prm_read_as_label_token_is_refused_naming_its_value_head(
    skywork_prm: tuple[str, Any],
):
    """Before, it loaded as a causal LM and its value head was dropped without a word."""
    message = refused({"name": "sky", "backend": "step_tag_prm", "path": skywork_prm[0]})
    assert "v_head.summary.weight" in message and "v_head.summary.bias" in message


def test_a_value_head_checkpoint_named_as_a_causal_lm_is_refused(
    skywork_prm: tuple[str, Any], root: Path
):
    directory = root / "skywork_as_causal_lm"
    directory.mkdir()
    for file in Path(skywork_prm[0]).iterdir():
        (directory / file.name).write_bytes(file.read_bytes())
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(
        json.dumps({**config, "architectures": ["Qwen2ForCausalLM"]})
    )
    message = refused({"name": "sky", "backend": "step_tag_prm", "path": str(directory)})
    assert "would drop" in message and "v_head.summary.weight" in message


# ---- outcome reward models ----------------------------------------------------------------------


def outcome_items(messages: list[dict[str, str]] = MESSAGES) -> list[OutcomeItem]:
    prompt = ChatPrompt("<policy text>", messages)
    return [OutcomeItem(prompt, response) for response in RESPONSES]


def conversations(messages: list[dict[str, str]] = MESSAGES) -> list[list[dict[str, str]]]:
    return [[*messages, {"role": "assistant", "content": r}] for r in RESPONSES]


@pytest.fixture(scope="module")
def skywork_reward(root: Path) -> tuple[str, Any]:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    directory = root / "skywork_reward_llama"
    tokenizer = tiny_tokenizers.llama3(directory)
    torch.manual_seed(5)
    model = LlamaForSequenceClassification(tiny(LlamaConfig, tokenizer, num_labels=1))
    return save(model, directory)


def skywork_reward_reference(path: str, tokenizer: Any) -> list[float]:
    """The Skywork-Reward card: ``apply_chat_template(conv, tokenize=True)``, then
    ``rm(ids).logits[0][0]``, one conversation at a time."""
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    want = []
    for conv in conversations():
        ids = tokenizer.apply_chat_template(conv, tokenize=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.no_grad():
            want.append(float(rm(ids).logits[0][0]))
    return want


def test_skywork_reward_llama(skywork_reward: tuple[str, Any]):
    path, tokenizer = skywork_reward
    want = skywork_reward_reference(path, tokenizer)
    reward = started({"name": "rm", "backend": "seq_cls", "path": path})
    assert run(reward.score(outcome_items())).scores == pytest.approx(want, abs=ATOL)


@pytest.fixture(scope="module")
def skywork_v2(root: Path) -> tuple[str, Any]:
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    directory = root / "skywork_reward_v2_qwen3"
    tokenizer = tiny_tokenizers.qwen3(directory)
    torch.manual_seed(6)
    config = tiny(Qwen3Config, tokenizer, num_labels=1, head_dim=8)
    return save(Qwen3ForSequenceClassification(config), directory)


def skywork_v2_rows(tokenizer: Any) -> list[list[int]]:
    """The Skywork-Reward-V2 card: the chat template as text, a leading BOS removed (the
    tokenizer adds its own), then tokenized."""
    rows = []
    for conv in conversations():
        text = tokenizer.apply_chat_template(conv, tokenize=False)
        if tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token):
            text = text[len(tokenizer.bos_token) :]
        rows.append(list(tokenizer(text)["input_ids"]))
    return rows


def skywork_v2_reference(path: str, tokenizer: Any, keep: int | None = None) -> list[float]:
    """``rm(**tokenized).logits[0][0]`` on each row (on its last ``keep`` ids if given)."""
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    want = []
    for ids in skywork_v2_rows(tokenizer):
        with torch.no_grad():
            want.append(float(rm(torch.tensor([ids[-keep:] if keep else ids])).logits[0][0]))
    return want


def test_skywork_reward_v2_qwen3_and_its_max_length(skywork_v2: tuple[str, Any]):
    path, tokenizer = skywork_v2
    # Qwen3's template writes an empty think block before the scored answer
    assert "<think>\n\n</think>\n\n4<|im_end|>" in tokenizer.decode(skywork_v2_rows(tokenizer)[2])
    reward = started({"name": "v2", "backend": "seq_cls", "path": path, "max_length": 4096})
    want = skywork_v2_reference(path, tokenizer)
    assert run(reward.score(outcome_items())).scores == pytest.approx(want, abs=ATOL)
    short = started({"name": "v2", "backend": "seq_cls", "path": path, "max_length": 20})
    assert all(len(r) > 20 for r in skywork_v2_rows(tokenizer))  # cut from the left (no BOS)
    assert run(short.score(outcome_items())).scores == pytest.approx(
        skywork_v2_reference(path, tokenizer, keep=20), abs=ATOL
    )


@pytest.fixture(scope="module")
def qwen_rm(root: Path) -> tuple[str, Any]:
    from transformers import Qwen2Config

    directory = root / "qwen25_math_rm"
    tokenizer = tiny_tokenizers.qwen25(directory)
    torch.manual_seed(7)
    model = qwen2_classes()["Qwen2ForRewardModel"](tiny(Qwen2Config, tokenizer))
    return save(model, directory, auto_map=qwen_auto_map("Qwen2ForRewardModel"))


def qwen_rm_reference(path: str, tokenizer: Any) -> list[float]:
    """The Qwen2.5-Math-RM card: its system prompt, the whole chat as text,
    ``encode(add_special_tokens=False)``, the head's output at the last token."""
    model = qwen2_classes()["Qwen2ForRewardModel"].from_pretrained(path).eval()
    messages = [{"role": "system", "content": QWEN_PRM_SYSTEM}, MESSAGES[1]]
    want = []
    for conv in conversations(messages):
        text = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=False)
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            want.append(float(model(ids)[0, -1, 0]))
    return want


def test_qwen25_math_rm_mlp_outcome_head(qwen_rm: tuple[str, Any]):
    path, tokenizer = qwen_rm
    want = qwen_rm_reference(path, tokenizer)
    config = {"name": "qrm", "backend": "seq_cls", "path": path, "system_prompt": QWEN_PRM_SYSTEM}
    reward = started(config)
    assert run(reward.score(outcome_items())).scores == pytest.approx(want, abs=ATOL)


@pytest.fixture(scope="module")
def nemotron(root: Path) -> tuple[str, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = root / "nemotron_reward"
    tokenizer = tiny_tokenizers.llama3(directory)
    torch.manual_seed(8)
    return save(LlamaForCausalLM(tiny(LlamaConfig, tokenizer)), directory)


def nemotron_reference(path: str, tokenizer: Any) -> list[float]:
    """The Nemotron-Reward card: generate one token after the chat, ``scores[0][0][0]``."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    want = []
    for conv in conversations():
        encoded = tokenizer.apply_chat_template(
            conv, tokenize=True, add_generation_prompt=False, return_tensors="pt", return_dict=True
        )
        out = model.generate(
            encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            max_new_tokens=1,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            pad_token_id=tokenizer.pad_token_id,
        )
        want.append(float(out["scores"][0][0][0]))
    return want


def test_nemotron_reward_reads_the_logit_of_token_zero(nemotron: tuple[str, Any]):
    path, tokenizer = nemotron
    want = nemotron_reference(path, tokenizer)
    reward = started({"name": "nemo", "backend": "seq_cls", "path": path, "logit_token_id": 0})
    assert run(reward.score(outcome_items())).scores == pytest.approx(want, abs=ATOL)
    # without logit_token_id it is a causal LM with no score head: refused, its lm_head named
    assert "lm_head.weight" in refused({"name": "nemo", "backend": "seq_cls", "path": path})


# ---- the README's table ------------------------------------------------------------------------

README_FAMILIES: dict[str, tuple[str, Callable[[str, Any], list[float]]] | None] = {
    "Qwen2.5-Math-PRM": ("qwen_prm", lambda p, t: qwen_prm_reference(p, t, BODIES)),
    "math-shepherd": ("shepherd", lambda p, t: shepherd_reference(p, t, BODIES)),
    "RLHFlow": ("rlhflow", lambda p, t: rlhflow_reference(p, t, BODIES)),
    "Skywork-o1-Open-PRM": ("skywork_prm", lambda p, t: skywork_prm_reference(p, t, BODIES)),
    "Skywork-Reward-Llama-3.1-8B-v0.2": ("skywork_reward", skywork_reward_reference),
    "Skywork-Reward-V2": ("skywork_v2", skywork_v2_reference),
    "internlm2": None,  # not served: its row says what it needs
    "Qwen2.5-Math-RM-72B": ("qwen_rm", qwen_rm_reference),
    "Llama-3.1-Nemotron-70B-Reward-HF": ("nemotron", nemotron_reference),
}
"""The README's families in its order (a name its row's first cell contains), each with its
checkpoint here and the model card's computation; None for a family the table says is not
served."""


def readme_table() -> dict[str, dict[str, Any] | None]:
    """The README's "Reward models" table: each row's family key (of :data:`README_FAMILIES`)
    and the config it shows, as written there (None when the cell holds no JSON)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Reward models\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[str, Any] | None] = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| family "):
            continue
        family, config = [cell.strip() for cell in line.strip().strip("|").split(" | ")][:2]
        (key,) = [k for k in README_FAMILIES if k in family]  # exactly one family per row
        assert key not in rows, f"two rows for {key}"
        found = re.fullmatch(r"`(\{.*\})`", config)
        rows[key] = json.loads(found.group(1)) if found else None
    return rows


def test_the_readme_table_has_a_row_for_every_family_and_nothing_else():
    rows = readme_table()
    assert list(rows) == list(README_FAMILIES)
    assert [k for k, config in rows.items() if config is None] == ["internlm2"]


@pytest.mark.parametrize("family", [k for k, v in README_FAMILIES.items() if v is not None])
def test_the_readme_config_of_each_family_starts_and_scores(
    family: str, request: pytest.FixtureRequest
):
    """The config the README shows, as written (a name and the path added), on the family's
    checkpoint: its scores are the model card's."""
    known = README_FAMILIES[family]
    config = readme_table()[family]
    assert known is not None and config is not None
    fixture, reference = known
    path, tokenizer = request.getfixturevalue(fixture)
    reward = started({"name": "from_readme", **config, "path": path})
    if reward.info.kind == "process":
        (got,) = run(reward.score_steps([ProcessItem(PROMPT, STEPS)])).scores
    else:
        got = run(reward.score(outcome_items())).scores
    assert got == pytest.approx(reference(path, tokenizer), abs=ATOL)


# ---- formats the tokenizer cannot write ---------------------------------------------------------


def test_a_step_tag_of_several_tokens_is_refused(qwen_prm: tuple[str, Any], skywork_prm: Any):
    path, tokenizer = qwen_prm
    assert len(tokenizer.encode("ки", add_special_tokens=False)) > 1
    base = {"name": "p", "backend": "step_tag_prm", "path": path, "style": "two_way"}
    assert "exactly one token" in refused({**base, "step_tag": "ки"})
    sky = {"name": "s", "backend": "step_tag_prm", "path": skywork_prm[0], "style": "value_head"}
    assert "exactly one token" in refused({**sky, "step_tag": "ки"})


# ---- device and dtype ---------------------------------------------------------------------------


def test_placement_defaults_to_cuda_bf16_when_cuda_is_there(monkeypatch: pytest.MonkeyPatch):
    from winnow.rewards.placement import resolve

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (resolve().device, resolve().dtype) == (torch.device("cpu"), torch.float32)
    assert resolve("cpu", "bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve("cuda")
    config = {"name": "gpu_rm", "backend": "seq_cls", "path": "/nowhere", "device": "cuda"}
    with pytest.raises(RewardConfigError, match=r"'gpu_rm'.*CUDA"):
        build_rewards(RewardConfigList.validate_python([config]), default_model_dir=None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (resolve().device, resolve().dtype) == (torch.device("cuda"), torch.bfloat16)
    assert resolve("cuda:1", "float16").dtype == torch.float16
    assert resolve("cpu").dtype == torch.float32


@pytest.mark.parametrize(
    ("family", "config", "dtype"),
    [
        ("qwen_prm", {"style": "two_way", "format": "chat", "step_tag": "<extra_0>"}, "bfloat16"),
        ("skywork_prm", {"style": "value_head"}, "bfloat16"),
        ("shepherd", {}, "float16"),
    ],
)
def test_half_precision_prms_score_like_float32(
    family: str, config: dict[str, Any], dtype: str, request: pytest.FixtureRequest
):
    """What a GPU runs (bf16 weights and states; fp16 for older cards), here on the CPU: the
    weights are in that dtype, the heads read the states in it, and the scores are float32's
    up to half precision's rounding."""
    path, _ = request.getfixturevalue(family)
    base = {"name": "p", "backend": "step_tag_prm", "path": path, **config}
    full, half = started({**base, "dtype": "float32"}), started({**base, "dtype": dtype})
    assert {p.dtype for p in half.model.model.parameters()} == {getattr(torch, dtype)}
    items = [ProcessItem(PROMPT, STEPS)]
    want, got = run(full.score_steps(items)).scores[0], run(half.score_steps(items)).scores[0]
    assert got == pytest.approx(want, abs=3e-2)
    assert got != pytest.approx(want, abs=1e-7)  # really computed in half precision


def test_bf16_outcome_reward_scores_like_float32(skywork_reward: tuple[str, Any]):
    base = {"name": "rm", "backend": "seq_cls", "path": skywork_reward[0]}
    full, half = started({**base, "dtype": "float32"}), started({**base, "dtype": "bfloat16"})
    want = run(full.score(outcome_items())).scores
    got = run(half.score(outcome_items())).scores
    assert got == pytest.approx(want, abs=5e-2, rel=2e-2)


def test_a_reward_on_another_device_computes_there_only(
    qwen_prm: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
):
    """``meta`` stands in for CUDA: the model moves there, and every tensor a forward pass and
    the head use is there (none left on the CPU), in the model's dtype."""
    from tests.support.device_audit import OnlyOn
    from winnow.rewards import hf_model
    from winnow.rewards.placement import Placement

    meta = Placement(torch.device("meta"), torch.bfloat16)
    monkeypatch.setattr(hf_model, "resolve", lambda device, dtype: meta)
    reward = started({**docs_config("qprm"), "path": qwen_prm[0]})
    assert {p.device.type for p in reward.model.model.parameters()} == {"meta"}
    job = reward.job(ProcessItem(PROMPT, STEPS))
    reads = {"tolist": lambda t: [0.5] * t.numel(), "bool": lambda t: True}
    with OnlyOn("meta", reads=reads) as audit:
        results, tokens = reward._run([job])
    # the token ids, mask and positions are built on the host and moved once, in one copy
    # each; no weight, state or score is ever on the CPU
    assert all("torch.int64 on cpu" in s for s in audit.strays), audit.strays
    assert len(audit.moves) == 3 and audit.calls > 50
    assert results[0].scores == [0.5, 0.5, 0.5] and tokens == len(job.ids)


def test_probe_heads_go_to_the_states_device_and_dtype_once(tmp_path: Path):
    from tests.support.device_audit import OnlyOn
    from winnow.engine.processors.tap import RewardTap
    from winnow.heads.probe import head_scorer, load_head, save_head

    g = torch.Generator().manual_seed(0)
    tensors = {"w1": torch.randn(16, 8, generator=g), "b1": torch.randn(8, generator=g),
               "w2": torch.randn(8, generator=g), "b2": torch.randn(1, generator=g)}  # fmt: skip
    save_head(tmp_path / "probe", tensors, {"kind": "outcome", "output": "sigmoid"})
    head, _ = load_head(tmp_path / "probe")
    scorer = head_scorer(head, True)
    hidden = torch.randn(5, 16, generator=g)
    rows = torch.arange(5)
    want = scorer(hidden, rows)
    got = scorer(hidden.bfloat16(), rows)
    placed = scorer.placed.placed  # type: ignore[attr-defined]
    assert {k[1] for k in placed} == {torch.float32, torch.bfloat16}
    assert placed[(torch.device("cpu"), torch.bfloat16)].w1.dtype == torch.bfloat16
    assert torch.allclose(got, want, atol=3e-2)
    scorer(hidden.bfloat16(), rows)
    assert len(placed) == 2  # cast once per (device, dtype), not per call

    # the engine's tap: logits (and the states recovered from them) on the GPU: meta here
    tap = RewardTap(None, torch.device("meta"), False)
    tap_scorer = tap._scorer(str(tmp_path / "probe"))
    assert tap_scorer is not None
    for _ in range(2):
        states = torch.empty(3, 16, device="meta", dtype=torch.bfloat16)
        with OnlyOn("meta") as audit:
            out = tap_scorer(states, torch.arange(3, device="meta"))
        assert audit.strays == [] and audit.moves == [] and out.device.type == "meta"
    copies = tap_scorer.placed.placed  # type: ignore[attr-defined]
    assert list(copies) == [(torch.device("meta"), torch.bfloat16)]  # one bf16 copy, kept
    assert copies[(torch.device("meta"), torch.bfloat16)].w1.dtype == torch.bfloat16
