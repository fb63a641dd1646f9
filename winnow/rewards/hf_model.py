"""Reward models read from a local Hugging Face dir with transformers: the shared base of
:mod:`.seq_cls` and :mod:`.step_tag_prm`.

:class:`HFModel` loads the weights through the auto class the checkpoint is (and refuses a
checkpoint without the head it must hold); :class:`HFReward` is what both backends share around
it: the configuration, the model, the tokenizer's leading special tokens, the chat template, and
the micro-batcher that runs their forward passes. A backend says which auto class loads it
(:meth:`HFReward.model_kind`), loads its scorer (``_load``) and scores a batch (``_run``).
"""

from __future__ import annotations

import abc
import asyncio
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from winnow.rewards.backbone import (
    DEFAULT_PREFIX_CACHE_BYTES,
    Backbone,
    ProbeJob,
    ProbeResult,
)
from winnow.rewards.base import Reward, RewardInfo
from winnow.rewards.batcher import BatchObserver, MicroBatcher
from winnow.rewards.configs import SequenceClassifierConfig, StepTagPRMConfig
from winnow.rewards.formats import ChatTemplate

Config = TypeVar("Config", SequenceClassifierConfig, StepTagPRMConfig)


class HFModel(Backbone):
    """A :class:`Backbone` loaded through any transformers auto class.

    ``head`` names a module the checkpoint must hold: transformers silently initialises a
    missing head at random (a causal LM dir loaded as a classifier), which would give confident
    nonsense scores, so a missing head fails the load instead.
    """

    def __init__(
        self,
        model_dir: str | Path,
        auto_class: str = "AutoModelForCausalLM",
        *,
        head: str | None = None,
        max_batch_tokens: int = 16384,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> None:
        super().__init__(model_dir, max_batch_tokens, prefix_cache_bytes)
        self.auto_class = auto_class
        self.head = head

    def load(self) -> None:
        if self._model is not None:
            return
        import transformers

        loader = getattr(transformers, self.auto_class)
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir)
        model, loading = loader.from_pretrained(
            self.model_dir, dtype=torch.float32, output_loading_info=True
        )
        self._check_loaded(model, loading)
        model.eval()
        self._tokenizer = tokenizer
        self._model = model

    def _check_loaded(self, model: Any, loading: dict[str, Any]) -> None:
        kind = self.auto_class.removeprefix("AutoModelFor")
        if not isinstance(getattr(model, "model", None), torch.nn.Module):
            raise ValueError(
                f"{self.model_dir}: unsupported architecture {type(model).__name__} "
                "(expected a decoder with its trunk at .model)"
            )
        if self.head is None:
            return
        missing = sorted(k for k in loading.get("missing_keys", ()) if k.split(".")[0] == self.head)
        if missing or not hasattr(model, self.head):
            raise ValueError(
                f"{self.model_dir} holds no trained {self.head!r} head "
                f"(missing {', '.join(missing) or self.head}): not a {kind} checkpoint"
            )

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    @property
    def max_positions(self) -> int | None:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None


class HFReward(Reward, Generic[Config]):
    """A reward model from a Hugging Face dir, scored in micro-batches; see the module docstring.

    Weights load in :meth:`start` (in a thread), or at the first item that needs the tokenizer.
    """

    _info: RewardInfo  # set by the backend, updated by its _load

    def __init__(
        self,
        config: Config,
        *,
        observer: BatchObserver | None = None,
        max_batch: int = 64,
        max_wait: float = 0.005,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> None:
        self.config = config
        auto_class, head = self.model_kind(config)
        self.model = HFModel(
            config.path, auto_class, head=head, prefix_cache_bytes=prefix_cache_bytes
        )
        self._prefix: list[int] = []  # the special tokens the tokenizer puts first
        self._template: ChatTemplate | None = None
        self.batcher: MicroBatcher[ProbeJob, ProbeResult] = MicroBatcher(
            config.name, self._run, max_jobs=max_batch, max_wait=max_wait, observer=observer
        )

    @staticmethod
    @abc.abstractmethod
    def model_kind(config: Config) -> tuple[str, str | None]:
        """The transformers auto class that loads the model, and the head module it must hold."""

    @abc.abstractmethod
    def _load(self) -> Any:
        """Load weights and tokenizer details once; callable from any thread."""

    @abc.abstractmethod
    def _run(self, jobs: list[ProbeJob]) -> tuple[list[ProbeResult], int]:
        """Score a batch of jobs: the results and the tokens the model computed."""

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    async def shutdown(self) -> None:
        await self.batcher.close()
