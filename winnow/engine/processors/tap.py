"""The reward tap: probe heads scored on the policy's final hidden states while vLLM decodes.

A probe head that reads the policy's last layer (the shipped ``default`` reward) needs no
forward pass of its own: at every decoding step the logits row of a request is ``E h`` of the
state ``h`` of the token the engine just fed, and ``h`` comes back from the row exactly enough
(:class:`winnow.values.EmbeddingInverse`, ~1e-6 relative from float32 logits). A request opts
in with :class:`~.specs.TapSpec` (``SamplingSpec.tap`` in the seam). On every step this
processor recovers ``h`` of each tapped row, scores it with the row's heads and writes the
scores at the row's position into the request's tap file, which the engine seam created and
reads back when the call ends (:mod:`winnow.engine.tap_files`). Record ``k`` is the state of
the k-th token from the prompt's last one on, so every generated token but the last (whose
state the engine never computes) is scored when the candidate finishes.

Why a file: the processor runs in vLLM's engine-core process, and its outputs carry no room for
it. Records are written at fixed offsets (output index x record size), so a preempted request that
is recomputed writes the same records again; the processor only opens files the seam created, so
an aborted call whose file is already gone leaves nothing behind.

It must run before any processor that edits logits (the segmenter, VAS): it is first in
:data:`winnow.engine.processors.PROCESSORS`, and is not argmax-invariant so vLLM calls it on the
raw logits of greedy rows too. It never changes a logit. Nothing here may raise inside the engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from pathlib import Path
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from winnow.engine.processors.args import answer_probe, request_args
from winnow.engine.processors.inverse import ready_inverse, warm
from winnow.engine.processors.rows import RowRules
from winnow.engine.processors.specs import TAP, TAP_KEY, TAP_RECORD_FLAG, tap_record_size
from winnow.probe_heads import PROBE_META, RowScorer, has_sigmoid, head_scorer, load_head
from winnow.values import EmbeddingInverse

log = logging.getLogger("winnow.engine.tap")


class TapRule:
    """One tapped row: its heads, the live list of its output tokens and its open tap file."""

    __slots__ = ("fd", "heads", "output")

    def __init__(self, heads: tuple[str, ...], output: list[int], fd: int) -> None:
        self.heads = heads
        self.output = output
        self.fd = fd


def parse_args(params: SamplingParams | None) -> tuple[tuple[str, ...], str] | None:
    """The row's (heads, file), or None; ``ValueError`` (a 400) if they are malformed."""
    args = request_args(params, TAP_KEY)  # an object, or the same as a JSON string
    if args is None:
        return None
    heads, file = args.get("heads"), args.get("file")
    if not isinstance(heads, list) or not heads or not all(isinstance(h, str) for h in heads):
        raise ValueError(f"extra_args.{TAP_KEY}.heads must be a list of probe directories")
    if not isinstance(file, str) or not file:
        raise ValueError(f"extra_args.{TAP_KEY}.file must be a path")
    for head in heads:
        if not (Path(head) / PROBE_META).is_file():
            raise ValueError(f"extra_args.{TAP_KEY}.heads: {head!r} is not a probe directory")
    return tuple(heads), file


class RewardTap(LogitsProcessor):
    """Batch-level vLLM logits processor; inert for rows without ``extra_args.winnow_tap``."""

    _scorers: dict[tuple[str, str], RowScorer | None] = {}  # by (probe directory, device)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        answer_probe(sampling_params, TAP)
        parse_args(sampling_params)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.state: RowRules[TapRule] = RowRules(self._rule, self._release)
        self.rows = self.state.rows
        model = getattr(getattr(vllm_config, "model_config", None), "model", None)
        self.model = str(model) if model else None
        if self.model:
            warm(self.model)
        self._logged: set[str] = set()
        self.device = device  # the logits' device: the heads are placed there once, at load
        self._inverse: EmbeddingInverse | None = None  # on the logits' device

    def is_argmax_invariant(self) -> bool:
        return False  # so vLLM calls it before temperature, penalties and other processors

    def _scorer(self, head: str) -> RowScorer | None:
        key = (head, str(self.device))
        if key not in self._scorers:
            try:
                loaded, meta = load_head(Path(head))
                self._scorers[key] = head_scorer(loaded.to(self.device), has_sigmoid(meta))
            except Exception as exc:
                log.error("probe head %s not usable, rows left untapped: %s", head, exc)
                self._scorers[key] = None
        return self._scorers[key]

    def _rule(self, params: SamplingParams, output: list[int]) -> TapRule | None:
        try:
            parsed = parse_args(params)
            if parsed is None:
                return None
            heads, file = parsed
            fd = os.open(file, os.O_WRONLY)  # never created here: the seam owns its lifetime
        except (ValueError, OSError):  # validated on arrival; a missing file: call is over
            return None
        for head in heads:
            self._scorer(head)
        return TapRule(heads, output, fd)

    @staticmethod
    def _release(rule: TapRule) -> None:
        with contextlib.suppress(OSError):
            os.close(rule.fd)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        self.state.update(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.rows and self.model:
            try:
                self._tap(logits)
            except Exception as exc:  # never fail inside the engine: rows stay unscored
                key = type(exc).__name__
                if key not in self._logged:
                    self._logged.add(key)
                    log.exception("reward tap failed; rows left unscored")
        return logits

    def _tap(self, logits: torch.Tensor) -> None:
        if self._inverse is None or self._inverse.device != logits.device:
            built = ready_inverse(str(self.model))
            if built is None:
                return  # still building: these steps go unscored, the seam re-encodes
            self._inverse = built.to(logits.device)  # moved once, not every step
        inverse = self._inverse
        rows = list(self.rows.items())
        index = torch.tensor([i for i, _ in rows], dtype=torch.long, device=logits.device)
        hidden = inverse.hidden(logits, index)  # [B, H] float32
        finite = torch.isfinite(hidden).all(dim=1).tolist()
        scores: dict[str, list[float]] = {}
        for head in sorted({h for _, r in rows for h in r.heads}):
            scorer = self._scorer(head)
            if scorer is not None:
                at = torch.arange(hidden.shape[0], device=hidden.device)
                scores[head] = scorer(hidden, at).reshape(-1).float().cpu().tolist()
        for b, (_, rule) in enumerate(rows):
            if not finite[b] or any(h not in scores for h in rule.heads):
                continue
            values = [TAP_RECORD_FLAG, *(scores[h][b] for h in rule.heads)]
            # these logits came from the state of the last token fed: the prompt's last one at
            # output length 0, else the last output token
            where = len(rule.output) * tap_record_size(len(rule.heads))
            with contextlib.suppress(OSError):
                os.pwrite(rule.fd, struct.pack(f"<{len(values)}f", *values), where)
