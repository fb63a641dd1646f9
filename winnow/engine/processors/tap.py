"""The reward tap: probe heads scored on the policy's final hidden states while vLLM decodes.

A probe head that reads the policy's last layer (the shipped ``default`` reward) needs no
forward pass of its own: at every decoding step the logits row of a request is ``E h`` of the
state ``h`` of the token the engine just fed, and ``h`` comes back from the row exactly enough
(:class:`winnow.heads.value.EmbeddingInverse`, ~1e-6 relative from float32 logits). A request opts
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

What it may touch: only tap files in the private directory of winnow's own server
(:func:`winnow.engine.tap_files.open_tap_file`: named there by uuid, no symbolic link, a regular
file of this user), and probe heads in allowed directories (:mod:`.allowed`). A process with no
private tap directory, as a ``winnow worker`` is, refuses every tap request (a 400): a client of
a worker never makes it write anywhere.

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

from winnow.engine.processors.allowed import MAX_DIRS_PER_REQUEST, Loaded, allowed_dir
from winnow.engine.processors.args import answer_probe, request_args
from winnow.engine.processors.inverse import ready_inverse, warm
from winnow.engine.processors.rows import RowRules
from winnow.engine.processors.specs import TAP, TAP_KEY, TAP_RECORD_FLAG, tap_record_size
from winnow.engine.tap_files import open_tap_file, private_tap_dir, tap_file_name
from winnow.heads.probe import PROBE_META, RowScorer, has_sigmoid, head_scorer, load_head
from winnow.heads.value import EmbeddingInverse

log = logging.getLogger("winnow.engine.tap")


class TapRule:
    """One tapped row: its heads (real paths, in the request's order), their scorers, the live
    list of its output tokens and its open tap file."""

    __slots__ = ("fd", "heads", "output", "scorers")

    def __init__(
        self,
        heads: tuple[str, ...],
        output: list[int],
        fd: int,
        scorers: tuple[RowScorer | None, ...] = (),
    ) -> None:
        self.heads = heads
        self.output = output
        self.fd = fd
        self.scorers = scorers


def parse_args(params: SamplingParams | None) -> tuple[tuple[str, ...], str] | None:
    """The row's (heads as real paths, file), or None; ``ValueError`` (a 400) if they are
    malformed or name a head outside the allowed directories (:mod:`.allowed`). Where the file
    is, :func:`check_file` says."""
    args = request_args(params, TAP_KEY)  # an object, or the same as a JSON string
    if args is None:
        return None
    heads, file = args.get("heads"), args.get("file")
    if not isinstance(heads, list) or not heads or not all(isinstance(h, str) for h in heads):
        raise ValueError(f"extra_args.{TAP_KEY}.heads must be a list of probe directories")
    if not isinstance(file, str) or not file:
        raise ValueError(f"extra_args.{TAP_KEY}.file must be a path")
    if len(heads) > MAX_DIRS_PER_REQUEST:
        raise ValueError(f"extra_args.{TAP_KEY}.heads: at most {MAX_DIRS_PER_REQUEST}")
    real = tuple(allowed_dir(head, PROBE_META, refusal(head)) for head in heads)
    return real, file


def refusal(head: object) -> str:
    """What a head that is not an allowed probe directory gets, whether it exists or not."""
    return f"extra_args.{TAP_KEY}.heads: {head!r} is not a probe directory this engine may read"


def check_file(file: str) -> None:
    """``ValueError`` (a 400) unless ``file`` is a tap file of this process's private directory:
    none on a worker, so every tap request is refused there."""
    if private_tap_dir() is None:
        raise ValueError(
            f"extra_args.{TAP_KEY}: the reward tap runs only inside winnow's own engine"
        )
    if tap_file_name(file) is None:
        raise ValueError(f"extra_args.{TAP_KEY}.file: not a tap file of this engine")


class RewardTap(LogitsProcessor):
    """Batch-level vLLM logits processor; inert for rows without ``extra_args.winnow_tap``."""

    # by (real path of the probe directory, device); None: it failed to load
    _scorers: Loaded[RowScorer | None] = Loaded()

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        answer_probe(sampling_params, TAP)
        parsed = parse_args(sampling_params)
        if parsed is not None:
            check_file(parsed[1])

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
        """The scorer of probe directory ``head`` (allowed: the request was checked) on this
        processor's device, loaded once per real path and device. It casts the head to the
        states' device and dtype the first time it sees them and keeps that copy
        (:class:`~winnow.heads.probe.PlacedHead`): a head never stays on the CPU beside GPU
        states, and is never copied on every step."""
        real = os.path.realpath(head)

        def load() -> RowScorer | None:
            try:
                loaded, meta = load_head(Path(real))
                return head_scorer(loaded.to(self.device), has_sigmoid(meta))
            except Exception as exc:
                log.error("probe head %s not usable, rows left untapped: %s", real, exc)
                return None

        return self._scorers.get((real, str(self.device)), load)

    def _rule(self, params: SamplingParams, output: list[int]) -> TapRule | None:
        try:
            parsed = parse_args(params)
            if parsed is None:
                return None
            heads, file = parsed
            # only a file the seam created in its private directory; never created here
            fd = open_tap_file(file)
        except (ValueError, OSError):  # validated on arrival; a missing file: call is over
            return None
        scorers = tuple(self._scorer(head) for head in heads)
        return TapRule(heads, output, fd, scorers)

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
        scorers = {h: f for _, r in rows for h, f in zip(r.heads, r.scorers, strict=False)}
        scores: dict[str, list[float]] = {}
        for head in sorted({h for _, r in rows for h in r.heads}):
            scorer = scorers.get(head) or self._scorer(head)
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
