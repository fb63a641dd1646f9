"""A causal LM run in-process with transformers, to read hidden states for probe heads.

Texts are tokenized segment by segment (prompt, then each step) and the ids concatenated, so the
token ids of a growing prefix never change when a step is appended, and step ends are known
exactly without offset mapping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True, slots=True)
class ProbeJob:
    """A token sequence and the positions whose hidden states are to be scored."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    scores: list[float]
    tokens: int


RowScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(flattened hidden states, row indices) -> one score per row."""


@dataclass(slots=True)
class Batch:
    """Padded hidden states of a batch, flattened so that row ``b * width + t`` is (b, t)."""

    hidden: torch.Tensor  # [B * width, H]
    width: int
    tokens: int  # real (unpadded) tokens processed

    def row(self, sequence: int, position: int) -> int:
        return sequence * self.width + position


class Backbone:
    """Loads a causal LM once; ``hidden_states`` is thread-safe (one forward at a time)."""

    def __init__(self, model_dir: str | Path, max_batch_tokens: int = 16384) -> None:
        self.model_dir = str(model_dir)
        self.max_batch_tokens = max_batch_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        model.eval()
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

    def encode_segments(self, segments: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of the concatenated segments and the index of each segment's last token."""
        ids: list[int] = []
        ends: list[int] = []
        for segment in segments:
            ids.extend(self.encode(segment))
            ends.append(len(ids) - 1)
        return ids, ends

    @torch.inference_mode()
    def hidden_states(self, sequences: Sequence[Sequence[int]], layer: int = -1) -> Batch:
        """Run one padded forward pass; hidden states of ``layer`` (-1: after the final norm)."""
        self.load()
        if not sequences:
            return Batch(torch.empty(0, self.hidden_size), 0, 0)
        width = max(len(s) for s in sequences)
        pad = self._tokenizer.pad_token_id or 0
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids[i, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
            mask[i, : len(seq)] = 1
        with self._lock:
            out = self._model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states[layer] if layer != -1 else out.last_hidden_state
        return Batch(hidden.reshape(-1, hidden.shape[-1]), width, int(mask.sum()))

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
    """Score the given positions of every job, in as few padded forward passes as fit.

    Sequences are right-padded with an attention mask, so the rows of real tokens are those of
    an unpadded pass; only the requested rows reach ``scorer``.
    """
    results: list[ProbeResult | None] = [None] * len(jobs)
    total = 0
    for group in model.batches([len(j.ids) for j in jobs]):
        batch = model.hidden_states([jobs[i].ids for i in group], layer)
        rows = [batch.row(k, p) for k, i in enumerate(group) for p in jobs[i].positions]
        flat = scorer(batch.hidden, torch.tensor(rows, dtype=torch.long)).reshape(-1).tolist()
        start = 0
        for i in group:
            n = len(jobs[i].positions)
            results[i] = ProbeResult(flat[start : start + n], len(jobs[i].ids))
            start += n
        total += batch.tokens
    return [r for r in results if r is not None], total
