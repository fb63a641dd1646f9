"""A causal LM run in-process with transformers, to read hidden states for probe heads.

Texts are tokenized segment by segment (prompt, then each step) and the ids concatenated, so the
token ids of a growing prefix never change when a step is appended, and step ends are known
exactly without offset mapping. The prompt gets the special tokens the tokenizer puts before a
text once (:mod:`winnow.models.tokens`: BOS for Gemma, none for SmolLM; not again after a chat
template that writes it).

The model runs on its :class:`~.placement.Placement` (cuda and bfloat16 when CUDA is available,
else cpu and float32, unless configured): hidden states stay there, and the scorers run there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from winnow.models.tokens import special_prefix, with_prefix
from winnow.rewards.placement import Placement, resolve
from winnow.rewards.prefix_cache import Encoded, PrefixCache, encode


@dataclass(frozen=True, slots=True)
class ProbeJob:
    """A token sequence and the positions whose hidden states are to be scored."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    scores: list[float]
    tokens: int  # tokens the model computed for this job
    cached: int = 0  # tokens whose hidden states came from the prefix cache


def cost(results: Sequence[ProbeResult]) -> tuple[int, int]:
    """(tokens computed, tokens reused from the prefix cache) of some results."""
    return sum(r.tokens for r in results), sum(r.cached for r in results)


RowScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(hidden states, row indices) -> one score per row."""

DEFAULT_PREFIX_CACHE_BYTES = 512 * 2**20


class Backbone:
    """Loads a causal LM once, on ``placement`` (default: :func:`~.placement.resolve`'s);
    ``encode_sequences`` is thread-safe (one forward at a time) and reuses the KV cache of
    recently scored prefixes (:mod:`winnow.rewards.prefix_cache`)."""

    def __init__(
        self,
        model_dir: str | Path,
        max_batch_tokens: int = 16384,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
        *,
        placement: Placement | None = None,
    ) -> None:
        self.model_dir = str(model_dir)
        self.placement = placement or resolve()
        self.max_batch_tokens = max_batch_tokens
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self._model: Any = None
        self._tokenizer: Any = None
        self._prefix: list[int] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self._prefix = special_prefix(self._tokenizer)
        kwargs: dict[str, Any] = {"dtype": self.placement.dtype}
        if self.placement.device.type == "cuda":
            kwargs["device_map"] = {"": self.placement.device}
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, **kwargs)
        model.to(self.placement.device).eval()
        self._model = model

    @property
    def hidden_size(self) -> int:
        self.load()
        return int(self._model.config.hidden_size)

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    def encode(self, text: str) -> list[int]:
        self.load()
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def encode_prompt(self, text: str) -> list[int]:
        """A sequence's first segment: ``text``'s ids led by the tokenizer's special prefix once
        (:func:`winnow.models.tokens.with_prefix`)."""
        self.load()
        return with_prefix(self._prefix, self.encode(text))

    def encode_segments(self, segments: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of the concatenated segments (the first one as a prompt,
        :meth:`encode_prompt`) and the index of each segment's last token."""
        ids: list[int] = []
        ends: list[int] = []
        for k, segment in enumerate(segments):
            ids.extend(self.encode_prompt(segment) if k == 0 else self.encode(segment))
            ends.append(len(ids) - 1)
        return ids, ends

    def encode_sequences(
        self, sequences: Sequence[Sequence[int]], layer: int = -1
    ) -> list[Encoded]:
        """Hidden states of ``layer`` (-1: after the final norm) at every position of every
        sequence, in one padded forward pass over what the prefix cache does not hold."""
        self.load()
        if not sequences:
            return []
        pad = self._tokenizer.pad_token_id or 0
        with self._lock:
            return encode(self._model.model, self.prefix_cache, sequences, layer, pad)

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Group item indices into forward passes of at most ``max_batch_tokens`` padded tokens.

        Sorting by length keeps padding small.
        """
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        groups: list[list[int]] = []
        current: list[int] = []
        for i in order:
            width = max([lengths[j] for j in current] + [lengths[i]])
            if current and width * (len(current) + 1) > self.max_batch_tokens:
                groups.append(current)
                current = []
            current.append(i)
        if current:
            groups.append(current)
        return groups


@torch.inference_mode()
def score_positions(
    model: Backbone, jobs: Sequence[ProbeJob], scorer: RowScorer, layer: int = -1
) -> tuple[list[ProbeResult], int]:
    """Score the given positions of every job, in as few forward passes as fit; returns the
    results and the tokens the model computed (prefix-cache hits excluded)."""
    results: list[ProbeResult | None] = [None] * len(jobs)
    total = 0
    for group in model.batches([len(j.ids) for j in jobs]):
        encoded = model.encode_sequences([jobs[i].ids for i in group], layer)
        rows = torch.cat(
            [e.hidden[list(jobs[i].positions)] for i, e in zip(group, encoded, strict=True)]
        )  # on the model's device, in its dtype: the scorer runs there
        at = torch.arange(rows.shape[0], device=rows.device)
        flat = scorer(rows, at).reshape(-1).float().tolist()  # one copy to the host
        start = 0
        for i, e in zip(group, encoded, strict=True):
            n = len(jobs[i].positions)
            results[i] = ProbeResult(flat[start : start + n], e.computed, e.cached)
            start += n
            total += e.computed
    return [r for r in results if r is not None], total
