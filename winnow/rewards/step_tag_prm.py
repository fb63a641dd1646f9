"""Step-tag process reward models from a local Hugging Face dir, in two styles.

``label_token`` (Math-Shepherd): a causal LM trained to predict ``good_token``/``bad_token`` right
after ``step_tag``. A step's score is P(good) = softmax over the two label logits at the tag
position, computed by :func:`winnow.kernels.prm_label_probs` from the two LM-head rows only
(never the full-vocabulary logits).

``two_way`` (Qwen2.5-Math-PRM style): a decoder with a 2-class token-classification head
(``AutoModelForTokenClassification``; a ``score`` module that is a linear layer or
Linear-ReLU-Linear). A step's score is P(class 1) = softmax of the head at the step's tag,
computed by :func:`winnow.kernels.reward_head`.

What the model reads is the format it was trained on (``format`` in the config; see
:mod:`.formats`), never the policy's rendered text. Every step is stripped of surrounding
whitespace and followed by ``step_tag``:

* ``question`` (Math-Shepherd, the default for ``label_token``): the question (the request's
  last user message) and the tagged steps, ``f"{question} {step_1} {tag}\n{step_2} {tag}"``,
  tokenized with the tokenizer's special tokens (BOS), as Math-Shepherd's model card does;
* ``chat`` (Qwen2.5-Math-PRM, the default for ``two_way``): the request's messages (a configured
  ``system_prompt`` replaces the request's own) and an assistant message
  ``f"{step_1}{tag}{step_2}{tag}"``, rendered with the model's own chat template (or
  ``chat_template`` from the config) and tokenized as it stands.

The whole text is tokenized in one call, as the reference code does, and each step is read at
the token holding its tag (found from the tokenizer's character offsets, so step text that
happens to contain the tag cannot shift the positions read). Nothing after the last tag is
computed (it cannot change the scores). An unfinished last step (``ProcessItem.partial``) gets
its tag like any other: it is scored as if complete.

Inputs longer than the model's position limit lose tokens from the left of the prompt (a leading
BOS stays); if the steps alone do not fit, the call is refused (:class:`RewardInputError`).

``step_tag`` must be exactly one token where the format writes it, and ``good_token`` and
``bad_token`` (``label_token`` only) one token each; this is checked at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from winnow.kernels.dispatch import prm_label_probs, reward_head
from winnow.kernels.heads import LinearHead, MLPHead, RewardHead
from winnow.rewards.backbone import (
    ProbeJob,
    ProbeResult,
    RowScorer,
    cost,
    score_positions,
    special_prefix,
)
from winnow.rewards.base import ProcessItem, RewardInfo, RewardInputError, StepScored
from winnow.rewards.configs import StepTagPRMConfig
from winnow.rewards.formats import ChatTemplate, conversation, covering, question, tokenize
from winnow.rewards.hf_model import HFModel, HFReward


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

    def detached(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach()

    head: RewardHead
    if isinstance(module, torch.nn.Linear):
        head = LinearHead(module.weight.detach().T, detached(module.bias))
    elif (
        isinstance(module, torch.nn.Sequential)
        and len(module) == 3
        and isinstance(module[0], torch.nn.Linear)
        and isinstance(module[1], torch.nn.ReLU)
        and isinstance(module[2], torch.nn.Linear)
    ):
        first, second = module[0], module[2]
        head = MLPHead(
            first.weight.detach().T,
            detached(first.bias),
            second.weight.detach().T,
            detached(second.bias),
        )
    else:
        raise ValueError(
            f"unsupported two_way head {type(module).__name__} "
            "(expected nn.Linear or Linear-ReLU-Linear)"
        )
    if head.out_features != 2:
        raise ValueError(f"a two_way PRM needs a 2-class head, this one has {head.out_features}")
    return head


class StepTagPRM(HFReward[StepTagPRMConfig]):
    """Process reward from a step-tag PRM; see the module docstring."""

    def __init__(self, config: StepTagPRMConfig, **options: Any) -> None:
        super().__init__(config, **options)
        self.format = config.input_format
        self._scorer: RowScorer | None = None
        self._info = RewardInfo(
            name=config.name,
            kind="process",
            backend="step_tag_prm",
            scale="probability in [0, 1] that the step is correct",
            description=f"{config.style} process reward model {Path(config.path).name}",
            extra={
                "path": config.path,
                "style": config.style,
                "step_tag": config.step_tag,
                "format": self.format,
            },
        )

    @staticmethod
    def model_kind(config: StepTagPRMConfig) -> tuple[str, str | None]:
        if config.style == "label_token":
            return "AutoModelForCausalLM", None
        return "AutoModelForTokenClassification", "score"

    def _load(self) -> RowScorer:
        """Load weights, resolve the tag and label tokens once; callable from any thread."""
        if self._scorer is not None:
            return self._scorer
        self.model.load()
        if self.format == "chat":
            template = self.config.chat_template
            self._template = ChatTemplate(self.model.tokenizer, template, self.model.model_dir)
        self._check_tag()
        scorer = self._label_scorer() if self.config.style == "label_token" else self._head_scorer()
        self._prefix = special_prefix(self.model.tokenizer)
        self._scorer = scorer
        return scorer

    def _check_tag(self) -> None:
        """The tag must be one token where the format writes it, the same token every time."""
        sample = ProcessItem("What is 1 + 1?", ("1 + 1 = 2.", "The answer is 2."))
        text, spans, _ = self.text(sample)
        ids, offsets = tokenize(self.model.tokenizer, text, self._special_tokens)
        tokens = [[ids[i] for i in found] for found in covering(offsets, spans)]
        if any(len(t) != 1 for t in tokens) or len({t[0] for t in tokens}) != 1:
            widest = max(tokens, key=len)
            raise ValueError(
                f"step_tag {self.config.step_tag!r} is {len(widest)} tokens {widest} in the "
                f"tokenizer of {self.model.model_dir} where the {self.format!r} format writes "
                "it; it must be exactly one token"
            )

    def _label_scorer(self) -> RowScorer:
        good = single_token(self.model, self.config.good_token, "good_token")
        bad = single_token(self.model, self.config.bad_token, "bad_token")
        if good == bad:
            raise ValueError(f"good_token and bad_token are the same token ({good})")
        lm_head = self.model.model.get_output_embeddings().weight.detach()
        labels = torch.tensor([good, bad], dtype=torch.long)
        return lambda hidden, rows: prm_label_probs(hidden, rows, lm_head, labels)[:, 0]

    def _head_scorer(self) -> RowScorer:
        head = two_way_head(self.model.model.score)
        return lambda hidden, rows: torch.softmax(reward_head(hidden, rows, head), dim=-1)[:, 1]

    @property
    def _special_tokens(self) -> bool:
        """Math-Shepherd's reference tokenizes with BOS; a chat template writes its own."""
        return self.format == "question"

    def text(self, item: ProcessItem) -> tuple[str, list[tuple[int, int]], int]:
        """The text the model reads, the character span of every step's tag in it, and where
        the steps begin."""
        tag = self.config.step_tag
        bodies = [step.strip() for step in item.steps]
        if self.format == "question":
            head = question(item.prompt) + " "
            answer = "\n".join(f"{body} {tag}" for body in bodies)
            ends = _ends(bodies, len(" " + tag), 1)
        else:
            assert self._template is not None
            answer = "".join(body + tag for body in bodies)
            messages = conversation(item.prompt, self.config.system_prompt)
            rendered = self._template.render([*messages, {"role": "assistant", "content": answer}])
            at = rendered.rfind(answer)
            if at < 0:
                raise RewardInputError(
                    f"reward {self.info.name!r}: the chat template changed the tagged answer"
                )
            head, answer = rendered[:at], rendered[at:]
            ends = _ends(bodies, len(tag), 0)
        start = len(head)
        return head + answer, [(start + e - len(tag), start + e) for e in ends], start

    def job(self, item: ProcessItem) -> ProbeJob:
        """Token ids of one item and the positions of its tags."""
        self._load()
        text, spans, steps_start = self.text(item)
        ids, offsets = tokenize(self.model.tokenizer, text, self._special_tokens)
        positions = [found[-1] for found in covering(offsets, spans)]
        prompt_end = next((i for i, (a, b) in enumerate(offsets) if b > steps_start), len(ids))
        ids = ids[: positions[-1] + 1] if positions else ids  # nothing after the last tag counts
        return self._truncate(ids, positions, min(prompt_end, len(ids)))

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


def _ends(bodies: list[str], tagged: int, joint: int) -> list[int]:
    """Where each tag ends in the answer text: every body is followed by ``tagged`` characters
    (its tag, with any space before it) and then ``joint`` characters before the next body."""
    ends, at = [], 0
    for body in bodies:
        at += len(body) + tagged
        ends.append(at)
        at += joint
    return ends
