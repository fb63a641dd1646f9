"""Outcome reward models (Skywork-Reward style) from a local Hugging Face dir.

The model is built as the class its config names (:mod:`.layouts`: transformers'
``*ForSequenceClassification`` for Llama, Qwen2/3, Mistral, Gemma...; ``Qwen2ForRewardModel``,
Qwen2.5-Math-RM's Linear-ReLU-Linear ``score``, rebuilt without its remote code), on the
configured device and dtype. With ``logit_token_id`` the model is a causal LM and the score is
its logit of that token at the last position (Llama-3.1-Nemotron-70B-Reward-HF reads token 0).
Remote-code models with other heads (ArmoRM's gated multi-objective head, InternLM2's reward
model) are not loaded: winnow never passes ``trust_remote_code``.

What the model reads is what its authors feed it: the request's chat messages (see
:mod:`.formats`; a configured ``system_prompt`` replaces the request's own) followed by the
response as the assistant's message, rendered with the reward model's own chat template (or
``chat_template`` from its config) and tokenized in one call without added special tokens, as
``tokenizer.apply_chat_template(conversation, tokenize=True)`` does (Skywork-Reward's model
card). The template closes the assistant turn (``<|eot_id|>``, ``<|im_end|>``...): reward models
are trained on whole conversations and score that last token. Never the policy's rendered text.

Longer inputs than ``max_length`` (or the model's position limit) lose tokens from the left (a
leading BOS stays): the response and the question's end matter most.

The score is not taken from the model's own forward (which pools "the last non-pad token" and
errs when the pad id is also the end-of-turn id): one padded pass over the trunk gives the final
hidden states, and the head runs on each sequence's real last row through
:func:`winnow.kernels.reward_head`, on the model's device. Heads: one label, its logit; two
labels, the log-odds of label 1 over label 0 (a binary classifier's "good" class); more, the
logit of label 0. Scores are raw logits (higher is better), not probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from winnow.kernels.dispatch import reward_head
from winnow.kernels.heads import LinearHead, MLPHead, RewardHead
from winnow.models.tokens import special_prefix
from winnow.rewards.backbone import (
    ProbeJob,
    ProbeResult,
    cost,
    score_positions,
)
from winnow.rewards.base import OutcomeItem, RewardInfo, Scored
from winnow.rewards.configs import SequenceClassifierConfig
from winnow.rewards.formats import ChatTemplate, conversation
from winnow.rewards.hf_model import HFReward
from winnow.rewards.layouts import module_head


def outcome_head(score: Any) -> tuple[RewardHead, str]:
    """A scalar kernel head from a ``score`` module, and how to read it: a Linear layer
    (``*ForSequenceClassification``) or Linear-ReLU-Linear (Qwen2.5-Math-RM's
    ``Qwen2ForRewardModel``, one label)."""
    if isinstance(score, torch.nn.Sequential) and len(score) == 3:
        head = module_head(score)
        if head.out_features != 1:
            raise ValueError(f"an MLP score head needs 1 label, this one has {head.out_features}")
        assert isinstance(head, MLPHead)
        return replace(head, w2=head.w2.reshape(-1), b2=_flat(head.b2)), "logit"
    if not isinstance(score, torch.nn.Linear):
        raise ValueError(
            f"unsupported score head {type(score).__name__} (expected nn.Linear or "
            "Linear-ReLU-Linear)"
        )
    weight = score.weight.detach()
    bias = None if score.bias is None else score.bias.detach()
    labels = weight.shape[0]
    if labels == 2:
        diff_bias = None if bias is None else (bias[1] - bias[0]).reshape(1)
        return LinearHead(weight[1] - weight[0], diff_bias), "log-odds of label 1 over label 0"
    reading = "logit" if labels == 1 else f"logit of label 0 (of {labels})"
    return LinearHead(weight[0], None if bias is None else bias[:1]), reading


def token_head(model: Any, token_id: int) -> tuple[RewardHead, str]:
    """The LM head's row of ``token_id`` as a scalar head: the logit of that token (Nemotron's
    reward is the logit of token 0 after the whole conversation)."""
    lm_head = model.get_output_embeddings()
    if lm_head is None:
        raise ValueError(f"{type(model).__name__} has no LM head to read token {token_id} from")
    weight = lm_head.weight.detach()
    if token_id >= weight.shape[0]:
        raise ValueError(f"logit_token_id {token_id} is outside the vocabulary ({weight.shape[0]})")
    bias = getattr(lm_head, "bias", None)
    row_bias = None if bias is None else bias.detach()[token_id : token_id + 1]
    return LinearHead(weight[token_id], row_bias), f"logit of token {token_id}"


def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.reshape(-1)


class SequenceClassifierReward(HFReward[SequenceClassifierConfig]):
    """Outcome reward from a sequence-classification reward model; see the module docstring."""

    def __init__(self, config: SequenceClassifierConfig, **options: Any) -> None:
        super().__init__(config, **options)
        self._head: RewardHead | None = None
        self._max_length = config.max_length
        self._info = self._make_info(reading=None)

    @staticmethod
    def model_kind(config: SequenceClassifierConfig) -> tuple[str, tuple[str, ...]]:
        if config.logit_token_id is not None:
            return "AutoModelForCausalLM", ("lm_head",)
        return "AutoModelForSequenceClassification", ("score",)

    @staticmethod
    def reading(config: SequenceClassifierConfig) -> str:
        if config.logit_token_id is not None:
            return f"the logit of token {config.logit_token_id}"
        return "its score head"

    def _make_info(self, reading: str | None) -> RewardInfo:
        extra: dict[str, object] = {
            "path": self.config.path,
            "max_length": self.config.max_length,
            "placement": str(self.model.placement),
        }
        if reading is not None:
            extra["head"] = reading
        return RewardInfo(
            name=self.config.name,
            kind="outcome",
            backend="seq_cls",
            scale="raw logit (higher is better)",
            description=f"sequence-classification reward model {Path(self.config.path).name}",
            extra=extra,
        )

    def _load(self) -> RewardHead:
        """Load weights and tokenizer details once; callable from any thread."""
        if self._head is not None:
            return self._head
        self.model.load()
        model = self.model.model
        token = self.config.logit_token_id
        head, reading = outcome_head(model.score) if token is None else token_head(model, token)
        self._prepare(reading)
        self._head = head
        return head

    def _prepare(self, reading: str) -> None:
        """The tokenizer's details: special prefix, chat template, length limit."""
        tokenizer = self.model.tokenizer
        self._prefix = special_prefix(tokenizer)
        self._template = ChatTemplate(tokenizer, self.config.chat_template, self.model.model_dir)
        limit = self.model.max_positions
        self._max_length = min(self.config.max_length, limit) if limit else self.config.max_length
        self._info = self._make_info(reading)

    def text(self, item: OutcomeItem) -> str:
        """The conversation as the model reads it: messages and response in its own template."""
        self._load()
        assert self._template is not None
        messages = conversation(item.prompt, self.config.system_prompt)
        return self._template.render([*messages, {"role": "assistant", "content": item.response}])

    def job(self, item: OutcomeItem) -> ProbeJob:
        """Token ids of one item, cut from the left; the score reads the last one."""
        ids = self.model.encode(self.text(item))  # no special tokens added: the text has them
        if len(ids) > self._max_length:
            head = self._prefix if ids[: len(self._prefix)] == self._prefix else []
            keep = max(self._max_length - len(head), 1)
            ids = [*head, *ids[-keep:]]
        return ProbeJob(tuple(ids), (len(ids) - 1,))

    def _run(self, jobs: list[ProbeJob]) -> tuple[list[ProbeResult], int]:
        head = self._load()
        return score_positions(self.model, jobs, lambda h, rows: reward_head(h, rows, head))

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        if not items:
            return Scored([], 0)
        results = await self.batcher.submit([self.job(i) for i in items])
        return Scored([r.scores[0] for r in results], *cost(results))
