"""DeepConf inside the engine: token confidence recorded at every position, and a row ended where
its group confidence drops below the request's threshold (Fu et al., "Deep Think with
Confidence").

A request opts in with :class:`~winnow.engine.processors.specs.ConfidenceSpec` (``extra_args``
``{"winnow_confidence": {"window": 16, "top_k": 20, "threshold": 12.5, "min_tokens": 0,
"sentinel": <token id>, "file": <confidence file>}}``). On every decoding step this processor
computes, for each opted-in row, the token confidence ``C = -(1/top_k) * sum`` of the top-k
log-probabilities of the row's raw logits (before temperature and penalties; see
:func:`winnow.kernels.token_confidence`), and writes it at the position's record of the row's
file (:mod:`winnow.engine.confidence`: record ``len(output)``, flag, C, cut). With a threshold,
the row keeps a window of its last ``window`` finite values; once the window is full and the row
has written at least ``min_tokens`` tokens, a mean below the threshold ends the row there: its
logits are masked to the sentinel (a stop token of the request), the engine samples it and
stops, and the record says so (cut 1.0). As with the CARDS segmenter, nothing is generated past
the cut; the seam drops the sentinel and reports a confidence stop. Without a threshold the
processor only records (and never changes a logit).

Ending before position ``k`` rather than after it: ``C_k`` describes the distribution token ``k``
is drawn from, so it is known before that token is sampled, and DeepConf's online mode drops a
trace it stops anyway (one token saved per stopped trace; its stop position is one token earlier
than the reference implementation's, which keeps the token it checked).

The channel is the reward tap's (:mod:`winnow.engine.tap_files`): only a file of the server's
private directory, created by the seam, is opened (:func:`~winnow.engine.tap_files.open_tap_file`:
named there by uuid, no symbolic link, a regular file of this user); a process without that
directory (a ``winnow worker``) refuses every request (a 400). Records sit at fixed offsets, so a
preempted request that is recomputed writes the same records again; when a row comes back with
tokens already written (or fewer than its window saw), its window is rebuilt from the records it
wrote, so the cut is the same as without the preemption.

Order: after the tap (which reads the logits and never edits them) and before the segmenter and
VAS (which edit them): the confidence is computed on the logits as vLLM hands them to the
processors, after its own ``allowed_token_ids``, ``bad_words`` and ``logit_bias`` (a masked
token among the top k makes that position's C infinite, and it is skipped). vLLM's
``min_tokens`` is refused with a threshold (it would keep the sentinel from stopping the row);
the spec's own ``min_tokens`` serves instead. A row this processor ends reads as masked to the
segmenter (entropy 0: no second cut) and to VAS (non-finite state: left alone).
Nothing here may raise inside the engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from dataclasses import dataclass
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from winnow.engine.confidence import RECORD_SIZE, ConfidenceWindow, parse_confidence
from winnow.engine.processors.args import answer_probe, finite, request_args
from winnow.engine.processors.rows import RowRules
from winnow.engine.processors.specs import (
    CONFIDENCE,
    CONFIDENCE_KEY,
    CONFIDENCE_MAX_TOP_K,
    CONFIDENCE_MAX_WINDOW,
    TAP_RECORD_FLAG,
)
from winnow.engine.tap_files import open_tap_file, private_tap_dir, tap_file_name
from winnow.kernels.dispatch import token_confidence

log = logging.getLogger("winnow.engine.confidence")

KEY = CONFIDENCE_KEY


@dataclass(frozen=True, slots=True)
class ConfidenceArgs:
    """A request's arguments, checked."""

    window: int
    top_k: int
    threshold: float | None
    min_tokens: int
    sentinel: int | None
    file: str


def _integer(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"extra_args.{KEY}.{name} must be an integer in [{low}, {high}]")
    return value


def parse_args(params: SamplingParams | None) -> ConfidenceArgs | None:
    """The row's arguments, or None; ``ValueError`` (a 400) if they are malformed. Where the
    file is, :func:`check_file` says."""
    args = request_args(params, KEY)  # an object, or the same as a JSON string
    if args is None:
        return None
    window = _integer(args, "window", 16, 1, CONFIDENCE_MAX_WINDOW)
    top_k = _integer(args, "top_k", 20, 1, CONFIDENCE_MAX_TOP_K)
    min_tokens = _integer(args, "min_tokens", 0, 0, 1 << 30)
    threshold = args.get("threshold")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not finite(threshold)
    ):
        raise ValueError(f"extra_args.{KEY}.threshold must be a finite number or null")
    sentinel = args.get("sentinel")
    if sentinel is not None and (isinstance(sentinel, bool) or not isinstance(sentinel, int)):
        raise ValueError(f"extra_args.{KEY}.sentinel must be a token id")
    if threshold is not None:
        if sentinel is None:
            raise ValueError(f"extra_args.{KEY}: a threshold needs an integer 'sentinel' token id")
        if sentinel not in (params.stop_token_ids or []):  # type: ignore[union-attr]
            raise ValueError(
                f"extra_args.{KEY}.sentinel must be one of the request's stop_token_ids"
            )
        if params.min_tokens:  # type: ignore[union-attr]
            raise ValueError(
                f"extra_args.{KEY}: a threshold cannot be combined with min_tokens (the sentinel "
                f"would not stop the row); use extra_args.{KEY}.min_tokens"
            )
    file = args.get("file")
    if not isinstance(file, str) or not file:
        raise ValueError(f"extra_args.{KEY}.file must be a path")
    return ConfidenceArgs(
        window, top_k, None if threshold is None else float(threshold), min_tokens, sentinel, file
    )


def check_file(file: str) -> None:
    """``ValueError`` (a 400) unless ``file`` is a file of this process's private tap directory:
    none on a worker, so every confidence request is refused there."""
    if private_tap_dir() is None:
        raise ValueError(f"extra_args.{KEY}: token confidence runs only inside winnow's own engine")
    if tap_file_name(file) is None:
        raise ValueError(f"extra_args.{KEY}.file: not a tap file of this engine")


class ConfidenceRule:
    """One opted-in row: its top-k, sentinel, window, live output tokens and open file."""

    __slots__ = ("fd", "output", "sentinel", "top_k", "window")

    def __init__(self, args: ConfidenceArgs, output: list[int], fd: int) -> None:
        self.top_k = args.top_k
        self.sentinel = args.sentinel
        self.window = ConfidenceWindow(args.window, args.threshold, args.min_tokens)
        self.output = output  # vLLM's own list: always the tokens written so far
        self.fd = fd

    def rebuild(self, upto: int) -> None:
        """Refill the window from the records of positions before ``upto`` (a row that comes
        back after a preemption, or with tokens taken back)."""
        self.window.reset()
        data = b""
        with contextlib.suppress(OSError):
            data = os.pread(self.fd, upto * RECORD_SIZE, 0)
        for position, value in enumerate(parse_confidence(data).values[:upto]):
            self.window.push(position, value)
        self.window.next = upto

    def step(self, value: float) -> bool:
        """Record the confidence of the row's current position; True if the row ends here."""
        position = len(self.output)
        if position != self.window.next:
            self.rebuild(position)
        cut = self.window.push(position, value)
        record = struct.pack("<3f", TAP_RECORD_FLAG, value, 1.0 if cut else 0.0)
        with contextlib.suppress(OSError):
            os.pwrite(self.fd, record, position * RECORD_SIZE)
        return cut


def confidences(logits: torch.Tensor, rows: dict[int, ConfidenceRule]) -> dict[int, float]:
    """Token confidence of each row's logits, by its own top-k (one pass per distinct top-k)."""
    values: dict[int, float] = {}
    for k in sorted({rule.top_k for rule in rows.values()}):
        picked = sorted(i for i, rule in rows.items() if rule.top_k == k)
        if picked == list(range(logits.shape[0])):  # every row of the batch: no copy
            found = token_confidence(logits, k).tolist()
        else:
            index = torch.tensor(picked, dtype=torch.long, device=logits.device)
            found = token_confidence(logits.index_select(0, index), k).tolist()
        values.update(zip(picked, found, strict=True))
    return values


def record_and_cut(logits: torch.Tensor, rows: dict[int, ConfidenceRule]) -> list[int]:
    """Record every row's confidence; mask each row that must end to its sentinel. Returns the
    rows that were ended."""
    if not rows:
        return []
    values = confidences(logits, rows)
    cut = []
    for i, rule in rows.items():
        sentinel = rule.sentinel
        if rule.step(values[i]) and sentinel is not None and 0 <= sentinel < logits.shape[1]:
            logits[i].fill_(float("-inf"))
            logits[i, sentinel] = 0.0
            cut.append(i)
    return cut


class TokenConfidence(LogitsProcessor):
    """Batch-level vLLM logits processor; inert for rows without
    ``extra_args.winnow_confidence``."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        answer_probe(sampling_params, CONFIDENCE)
        parsed = parse_args(sampling_params)
        if parsed is not None:
            check_file(parsed.file)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.state: RowRules[ConfidenceRule] = RowRules(self._rule, self._release)
        self.rows = self.state.rows
        self._logged: set[str] = set()

    @staticmethod
    def _rule(params: SamplingParams, output: list[int]) -> ConfidenceRule | None:
        try:
            args = parse_args(params)
            if args is None:
                return None
            # only a file the seam created in its private directory; never created here
            fd = open_tap_file(args.file, readable=True)
        except Exception:  # validated on arrival; a missing file: the call is over. Never raise
            return None  # inside the engine
        return ConfidenceRule(args, output, fd)

    @staticmethod
    def _release(rule: ConfidenceRule) -> None:
        with contextlib.suppress(OSError):
            os.close(rule.fd)

    def is_argmax_invariant(self) -> bool:
        return False  # it ends greedy rows too, and must see logits before temperature

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        self.state.update(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.rows:
            try:
                record_and_cut(logits, self.rows)
            except Exception as exc:  # never fail inside the engine: rows go unrecorded
                key = type(exc).__name__
                if key not in self._logged:
                    self._logged.add(key)
                    log.exception("token confidence failed; rows left unrecorded")
        return logits
