"""Per-row state of a batch-level vLLM logits processor, kept in step with the persistent batch.

vLLM reports batch changes as removed, added and moved rows, to be applied in that order. A new
request can take a freed slot without that slot being reported removed, so every add replaces
(or clears) the slot's state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

Rule = TypeVar("Rule")


class RowRules(Generic[Rule]):
    """``rows[index]`` = the rule of the request in batch row ``index`` (opted-in rows only)."""

    def __init__(
        self,
        make: Callable[[SamplingParams, list[int]], Rule | None],
        drop: Callable[[Rule], None] | None = None,
    ) -> None:
        self.make = make  # (params, live output token ids) -> the row's rule, or None
        self.drop = drop  # called with a rule whose request left the batch (release it)
        self.rows: dict[int, Rule] = {}

    def _pop(self, index: int) -> None:
        rule = self.rows.pop(index, None)
        if rule is not None and self.drop is not None:
            self.drop(rule)

    def update(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._pop(index)
        for index, params, _prompt, output in batch_update.added:
            self._pop(index)
            rule = self.make(params, output)
            if rule is not None:
                self.rows[index] = rule
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if direction == MoveDirectionality.SWAP and rb is not None:
                self.rows[a] = rb
