"""Reward models read from a local Hugging Face dir with transformers: the shared base of
:mod:`.seq_cls` and :mod:`.step_tag_prm`.

:class:`HFModel` loads the weights through the auto class the checkpoint is (and refuses a
checkpoint without the head it must hold); :class:`HFReward` is what both backends share around
it: the configuration, the model, the tokenizer's leading special tokens, the chat template, and
the micro-batcher that runs their forward passes. A backend says which auto class loads a
checkpoint whose config names no architecture (:meth:`HFReward.model_kind`), which of the model's
heads it reads, loads its scorer (``_load``) and scores a batch (``_run``).

The class built is the one the checkpoint's config names (:mod:`.layouts`), on the configured
``device`` in the configured ``dtype`` (:mod:`.placement`: cuda and bfloat16 when CUDA is
available, else cpu and float32); a load that would drop weights is refused.
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
from winnow.rewards.layouts import check_reads, load_checked
from winnow.rewards.placement import Placement, resolve

Config = TypeVar("Config", SequenceClassifierConfig, StepTagPRMConfig)


class HFModel(Backbone):
    """A :class:`Backbone` built as the class its checkpoint names (:mod:`.layouts`).

    ``reads`` names the heads (top-level modules besides the trunk) the backend reads: a model
    holding another head is refused, and so is a load that drops or lacks weights, so a
    checkpoint can never give confident nonsense scores through a head initialised at random or
    a head ignored.
    """

    def __init__(
        self,
        model_dir: str | Path,
        auto_class: str = "AutoModelForCausalLM",
        *,
        reads: tuple[str, ...] = (),
        what: str = "this reward",
        placement: Placement | None = None,
        max_batch_tokens: int = 16384,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> None:
        super().__init__(model_dir, max_batch_tokens, prefix_cache_bytes, placement=placement)
        self.auto_class = auto_class
        self.reads = reads
        self.what = what
        self.weights = True  # False: the tokenizer and config only (another runner computes)
        self._config: Any = None

    def load(self) -> None:
        if self._model is not None or (not self.weights and self._tokenizer is not None):
            return
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir)
        if not self.weights:
            self._config = transformers.AutoConfig.from_pretrained(self.model_dir)
            self._tokenizer = tokenizer
            return
        model = load_checked(self.model_dir, self.auto_class, self.placement)
        if not isinstance(getattr(model, "model", None), torch.nn.Module):
            raise ValueError(
                f"{self.model_dir}: unsupported architecture {type(model).__name__} "
                "(expected a decoder with its trunk at .model)"
            )
        check_reads(model, self.reads, self.what, self.model_dir)  # first: name what it holds
        for head in self.reads:
            if not isinstance(getattr(model, head, None), torch.nn.Module):
                raise ValueError(
                    f"{self.model_dir} ({type(model).__name__}) has no {head!r} head, which "
                    f"{self.what} reads"
                )
        self._tokenizer = tokenizer
        self._model = model

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    @property
    def model(self) -> Any:
        if not self.weights:
            raise RuntimeError(f"{self.model_dir}: weights are not loaded here (pooling runner)")
        return super().model

    @property
    def max_positions(self) -> int | None:
        self.load()
        config = self._config if self._model is None else self._model.config
        value = getattr(config, "max_position_embeddings", None)
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
        auto_class, reads = self.model_kind(config)
        self.model = HFModel(
            config.path,
            auto_class,
            reads=reads,
            what=f"a {config.backend} reward ({self.reading(config)})",
            placement=resolve(config.device, config.dtype),
            prefix_cache_bytes=prefix_cache_bytes,
        )
        self._prefix: list[int] = []  # the special tokens the tokenizer puts first
        self._template: ChatTemplate | None = None
        self.batcher: MicroBatcher[ProbeJob, ProbeResult] = MicroBatcher(
            config.name, self._run, max_jobs=max_batch, max_wait=max_wait, observer=observer
        )

    @staticmethod
    @abc.abstractmethod
    def model_kind(config: Config) -> tuple[str, tuple[str, ...]]:
        """The transformers auto class that loads a checkpoint naming no architecture, and the
        head modules the backend reads (it must hold them, and no other)."""

    @staticmethod
    def reading(config: Config) -> str:
        """How the backend reads the model, for messages."""
        return getattr(config, "style", "score head")

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
