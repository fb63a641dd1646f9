"""End a generation where the model becomes uncertain (CARDS segmentation), inside the engine.

A request opts in with :class:`~winnow.engine.processors.specs.SegmentSpec` (``extra_args``
``{"winnow_segment": {"entropy": 3.0, "min_tokens": 4, "sentinel": <token id>}}``, or that object
as a JSON string from a remote worker's ``vllm_xargs``) and puts the sentinel in its
``stop_token_ids``. On every decoding step this processor computes the full-vocabulary
next-token entropy (nats, raw logits, before temperature) of each opted-in row; once the row has
written at least ``min_tokens`` tokens and the entropy reaches the threshold, the row is masked
to the sentinel, so the engine samples it and stops. The uncertain token is never written: the
segment ends *before* it, exactly where the published algorithm cuts, and no token is generated
and thrown away past the cut (the one sentinel step replaces what would have been the first token
of the next segment, which the next call recomputes from the prefix cache).

The sentinel must be a token the model never emits on its own (SmolLM2: ``<empty_output>``,
id 16); :func:`pick_sentinel` chooses one per tokenizer.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from winnow.engine.processors.args import answer_probe, request_args
from winnow.engine.processors.rows import RowRules
from winnow.engine.processors.specs import SEGMENT, SEGMENT_KEY, SENTINEL_CANDIDATES
from winnow.kernels.dispatch import next_token_entropy


class SegmentRule:
    """One opted-in row: its threshold, minimum length, sentinel and live output tokens."""

    __slots__ = ("entropy", "min_tokens", "output", "sentinel")

    def __init__(self, args: dict[str, Any], output: list[int]) -> None:
        self.entropy = float(args.get("entropy", 3.0))
        self.min_tokens = int(args.get("min_tokens", 4))
        self.sentinel = int(args["sentinel"])
        self.output = output  # vLLM's own list: always the tokens written so far


def parse_rule(params: SamplingParams | None) -> dict[str, Any] | None:
    """The row's arguments (an object, or the same as a JSON string), or None; ``ValueError``
    (a 400) if they are malformed."""
    args = request_args(params, SEGMENT_KEY)
    if args is None:
        return None
    if not isinstance(args.get("sentinel"), int):
        raise ValueError(f"extra_args.{SEGMENT_KEY} needs an integer 'sentinel' token id")
    if args["sentinel"] not in (params.stop_token_ids or []):  # type: ignore[union-attr]
        raise ValueError(
            f"extra_args.{SEGMENT_KEY}.sentinel must be one of the request's stop_token_ids"
        )
    return args


def cut_rows(logits: torch.Tensor, rows: dict[int, SegmentRule]) -> list[int]:
    """Mask each row whose segment must end to its sentinel; return the rows that were cut."""
    ready = [(i, r) for i, r in rows.items() if len(r.output) >= r.min_tokens]
    if not ready:
        return []
    index = torch.tensor([i for i, _ in ready], device=logits.device)
    entropy = next_token_entropy(logits.index_select(0, index)).tolist()
    cut = []
    for (i, rule), h in zip(ready, entropy, strict=True):
        if h >= rule.entropy:  # NaN (a fully masked row) never cuts
            logits[i].fill_(float("-inf"))
            logits[i, rule.sentinel] = 0.0
            cut.append(i)
    return cut


class UncertaintySegmenter(LogitsProcessor):
    """Batch-level vLLM logits processor; inert for rows without ``extra_args.winnow_segment``."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        answer_probe(sampling_params, SEGMENT)
        parse_rule(sampling_params)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.state = RowRules(self._rule)
        self.rows = self.state.rows

    @staticmethod
    def _rule(params: SamplingParams, output: list[int]) -> SegmentRule | None:
        args = parse_rule(params)
        return None if args is None else SegmentRule(args, output)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes greedy choices too, and must see logits before temperature

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        self.state.update(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.rows:
            cut_rows(logits, self.rows)
        return logits


def pick_sentinel(tokenizer: Any) -> int | None:
    """A special token the model does not write on its own, to end segments with."""
    vocab = tokenizer.get_vocab()
    for token in SENTINEL_CANDIDATES:
        if token in vocab:
            return int(vocab[token])
    return None
