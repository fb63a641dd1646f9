"""Step-tag process reward models from a local Hugging Face dir, in three styles.

``label_token`` (Math-Shepherd, RLHFlow): a causal LM trained to predict ``good_token`` or
``bad_token`` next. A step's score is P(good) = softmax over the two label logits at the position
read, computed by :func:`winnow.kernels.prm_label_probs` from the two LM-head rows only (never
the full-vocabulary logits).

``two_way`` (Qwen2.5-Math-PRM): a decoder with a 2-class head, ``score``: a linear layer
(``*ForTokenClassification``) or Linear-ReLU-Linear (``Qwen2ForProcessRewardModel``, rebuilt by
:mod:`.layouts`). A step's score is P(label 1) = softmax of the head at the step's tag, computed
by :func:`winnow.kernels.reward_head`.

``value_head`` (Skywork-o1-Open-PRM, ``Qwen2ForPrmModel``): a decoder with ``v_head.summary``, one
linear output; a step's score is its sigmoid at the step's tag.

What the model reads is its authors' format (:mod:`.formats`), rendered from the request's chat
messages:

* ``question`` (Math-Shepherd, the default for ``label_token``): the question (the request's
  last user message) and the tagged steps, ``f"{question} {step_1} {tag}\\n{step_2} {tag}"``,
  tokenized with the tokenizer's special tokens (BOS), read at each tag;
* ``chat`` (Qwen2.5-Math-PRM, the default for ``two_way``): the request's messages (a configured
  ``system_prompt`` replaces the request's own) and an assistant message
  ``f"{step_1}{tag}{step_2}{tag}"``, rendered with the model's own chat template (or
  ``chat_template`` from the config) and tokenized as it stands, read at each tag;
* ``multi_turn`` (RLHFlow): one user turn per step, each answered by the assistant with the tag
  (``+``), in the chat template; read one token before each answer, where the model predicts it;
* ``lines`` (Skywork-o1-PRM, the default for ``value_head``): BOS, the question and a newline,
  then each step tokenized on its own followed by the tag token (a newline), read at each tag.

Text formats are tokenized in one call, as the reference code does, and each step is read at the
token holding its tag (found from the tokenizer's character offsets, so step text that happens
to contain the tag cannot shift the positions read). Nothing after the last position read is
computed (it cannot change the scores). An unfinished last step (``ProcessItem.partial``) gets
its tag like any other: it is scored as if complete.

Inputs longer than the model's position limit lose tokens from the left of the prompt (a leading
BOS stays); if the steps alone do not fit, the call is refused (:class:`RewardInputError`).

``step_tag`` must be exactly one token where the format writes it, and ``good_token`` and
``bad_token`` (``label_token`` only) one token each; this is checked at start-up, and so is the
head: a model holding weights the style does not read (Skywork-o1's ``v_head`` read as
``label_token``) is refused (:mod:`.layouts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from winnow.kernels.dispatch import prm_label_probs, reward_head
from winnow.kernels.heads import LinearHead, RewardHead
from winnow.models.tokens import special_prefix
from winnow.rewards.backbone import (
    ProbeJob,
    ProbeResult,
    RowScorer,
    cost,
    score_positions,
)
from winnow.rewards.base import ProcessItem, RewardInfo, RewardInputError, StepScored
from winnow.rewards.configs import StepTagPRMConfig
from winnow.rewards.formats import (
    ChatTemplate,
    FormatError,
    TaggedText,
    chat_format,
    conversation,
    covering,
    lines_format,
    multi_turn_format,
    question_format,
    tokenize,
)
from winnow.rewards.hf_model import HFModel, HFReward
from winnow.rewards.layouts import module_head

HEADS = {"label_token": "lm_head", "two_way": "score", "value_head": "v_head"}
"""The head module each style reads."""


def single_token(model: HFModel, text: str, what: str) -> int:
    """The one token id of ``text``; a clear error if it is not exactly one token."""
    ids = model.encode(text)
    if len(ids) != 1:
        raise ValueError(
            f"{what} {text!r} is {len(ids)} tokens {ids} in the tokenizer of {model.model_dir}; "
            "it must be exactly one token"
        )
    return ids[0]


def two_way_head(module: Any) -> RewardHead:
    """The 2-class head of a token-classification PRM as a kernel head (``[in, out]`` weights)."""
    head = module_head(module)
    if head.out_features != 2:
        raise ValueError(f"a two_way PRM needs a 2-class head, this one has {head.out_features}")
    return head


def value_head(module: Any) -> RewardHead:
    """Skywork-o1-PRM's ``v_head``: its ``summary`` linear layer, one output, as a scalar head."""
    summary = getattr(module, "summary", None)
    if not isinstance(summary, torch.nn.Linear) or summary.out_features != 1:
        raise ValueError("a value_head PRM needs v_head.summary, a linear layer with one output")
    bias = None if summary.bias is None else summary.bias.detach()
    return LinearHead(summary.weight.detach()[0], bias)


class StepTagPRM(HFReward[StepTagPRMConfig]):
    """Process reward from a step-tag PRM; see the module docstring."""

    def __init__(self, config: StepTagPRMConfig, **options: Any) -> None:
        super().__init__(config, **options)
        self.format = config.input_format
        self.tag = config.tag
        self._scorer: RowScorer | None = None
        self._tag_id: int | None = None  # the lines format writes the tag as a token id
        self._info = RewardInfo(
            name=config.name,
            kind="process",
            backend="step_tag_prm",
            scale="probability in [0, 1] that the step is correct",
            description=f"{config.style} process reward model {Path(config.path).name}",
            extra={
                "path": config.path,
                "style": config.style,
                "step_tag": self.tag,
                "format": self.format,
                "placement": str(self.model.placement),
            },
        )

    @staticmethod
    def model_kind(config: StepTagPRMConfig) -> tuple[str, tuple[str, ...]]:
        if config.style == "two_way":
            return "AutoModelForTokenClassification", ("score",)
        return "AutoModelForCausalLM", (HEADS[config.style],)

    def _load(self) -> RowScorer:
        """Load weights, resolve the tag and label tokens once; callable from any thread."""
        if self._scorer is not None:
            return self._scorer
        self.model.load()
        self._prepare()
        style = self.config.style
        if style == "label_token":
            scorer = self._label_scorer()
        elif style == "two_way":
            scorer = self._head_scorer(two_way_head(self.model.model.score), softmax=True)
        else:
            scorer = self._head_scorer(value_head(self.model.model.v_head), softmax=False)
        self._scorer = scorer
        return scorer

    def _prepare(self) -> None:
        """The tokenizer's details: chat template, tag token (checked), special prefix."""
        if self.format in ("chat", "multi_turn"):
            template = self.config.chat_template
            self._template = ChatTemplate(self.model.tokenizer, template, self.model.model_dir)
        if self.format == "lines":
            self._tag_id = single_token(self.model, self.tag, "step_tag")
        else:
            self._check_tag()
        self._prefix = special_prefix(self.model.tokenizer)

    def label_ids(self) -> tuple[int, int]:
        """(good, bad): the label tokens' ids (``label_token``), each checked to be one token."""
        good = single_token(self.model, self.config.good_token, "good_token")
        bad = single_token(self.model, self.config.bad_token, "bad_token")
        if good == bad:
            raise ValueError(f"good_token and bad_token are the same token ({good})")
        return good, bad

    def _check_tag(self) -> None:
        """The tag must be one token where the format writes it, the same token every time."""
        sample = ProcessItem("What is 1 + 1?", ("1 + 1 = 2.", "The answer is 2."))
        tagged = self.text(sample)
        ids, offsets = tokenize(self.model.tokenizer, tagged.text, self._special_tokens)
        tokens = [[ids[i] for i in found] for found in covering(offsets, tagged.tags)]
        if any(len(t) != 1 for t in tokens) or len({t[0] for t in tokens}) != 1:
            widest = max(tokens, key=len)
            raise ValueError(
                f"step_tag {self.tag!r} is {len(widest)} tokens {widest} in the "
                f"tokenizer of {self.model.model_dir} where the {self.format!r} format writes "
                "it; it must be exactly one token"
            )

    def _label_scorer(self) -> RowScorer:
        good, bad = self.label_ids()
        lm_head = self.model.model.get_output_embeddings().weight.detach()
        labels = torch.tensor([good, bad], dtype=torch.long, device=lm_head.device)
        return lambda hidden, rows: prm_label_probs(hidden, rows, lm_head, labels)[:, 0]

    @staticmethod
    def _head_scorer(head: RewardHead, softmax: bool) -> RowScorer:
        if softmax:
            return lambda hidden, rows: torch.softmax(reward_head(hidden, rows, head), -1)[:, 1]
        return lambda hidden, rows: torch.sigmoid(reward_head(hidden, rows, head))

    @property
    def _special_tokens(self) -> bool:
        """Math-Shepherd's reference tokenizes with BOS; a chat template writes its own."""
        return self.format == "question"

    def text(self, item: ProcessItem) -> TaggedText:
        """The text the model reads (text formats), the character span of every step's tag in
        it, and where the steps begin."""
        bodies = [step.strip() for step in item.steps]
        try:
            if self.format == "question":
                return question_format(item.prompt, bodies, self.tag)
            assert self._template is not None
            if self.format == "chat":
                messages = conversation(item.prompt, self.config.system_prompt)
                return chat_format(self._template, messages, bodies, self.tag)
            if self.format == "multi_turn":
                system = self.config.system_prompt
                return multi_turn_format(self._template, item.prompt, bodies, self.tag, system)
        except FormatError as exc:
            raise RewardInputError(f"reward {self.info.name!r}: {exc}") from None
        raise ValueError(f"the {self.format!r} format is not text")

    def job(self, item: ProcessItem) -> ProbeJob:
        """Token ids of one item and the positions read."""
        self._load()
        if self.format == "lines":
            return self._lines_job(item)
        tagged = self.text(item)
        ids, offsets = tokenize(self.model.tokenizer, tagged.text, self._special_tokens)
        positions = [found[-1] for found in covering(offsets, tagged.tags)]
        if self.format == "multi_turn":  # the position that predicts the answer
            positions = [p - 1 for p in positions]
        start = tagged.steps_start
        prompt_end = next((i for i, (a, b) in enumerate(offsets) if b > start), len(ids))
        ids = ids[: positions[-1] + 1] if positions else ids  # nothing after the last read
        return self._truncate(ids, positions, min(prompt_end, len(ids)))

    def _lines_job(self, item: ProcessItem) -> ProbeJob:
        """Skywork-o1-PRM: the prompt segment with the tokenizer's special tokens, then each
        step's own tokens and the tag token (its reference tokenizes step by step)."""
        assert self._tag_id is not None
        tokenizer = self.model.tokenizer
        ids = list(tokenizer.encode(lines_format(tokenizer, item.prompt)))
        prompt_end = len(ids)
        positions = []
        for step in item.steps:
            ids.extend(self.model.encode(step.strip()))
            ids.append(self._tag_id)
            positions.append(len(ids) - 1)
        return self._truncate(ids, positions, prompt_end)

    def _truncate(self, ids: list[int], positions: list[int], prompt_end: int) -> ProbeJob:
        limit = self.model.max_positions
        cut = len(ids) - limit if limit else 0
        if cut <= 0:
            return ProbeJob(tuple(ids), tuple(positions))
        start = len(self._prefix) if ids[: len(self._prefix)] == self._prefix else 0
        if start + cut > prompt_end:
            raise RewardInputError(
                f"reward {self.info.name!r}: the steps take {len(ids) - prompt_end} tokens, "
                f"more than the model's limit of {limit} with the prompt cut away"
            )
        kept = [*ids[:start], *ids[start + cut :]]
        return ProbeJob(tuple(kept), tuple(p - cut for p in positions))

    def _run(self, jobs: list[ProbeJob]) -> tuple[list[ProbeResult], int]:
        return score_positions(self.model, jobs, self._load())

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        """One score per step; items without steps get none (and cost no forward pass)."""
        todo = [i for i, item in enumerate(items) if item.steps]
        results = await self.batcher.submit([self.job(items[i]) for i in todo])
        scores: list[list[float]] = [[] for _ in items]
        for i, result in zip(todo, results, strict=True):
            scores[i] = result.scores
        return StepScored(scores, *cost(results))
