"""DeepConf's confidence channel, torch-free: the group-confidence stop rule that the engine
applies, the same rule recomputed offline, and the channel's records read back.

The confidence processor (:mod:`winnow.engine.processors.confidence`) writes one record per
position of a row into a file of the tap's private directory (:mod:`winnow.engine.tap_files`:
created by the seam, opened by the processor under the tap's rules, read by the seam, deleted
when the call ends). Record ``k`` (at byte ``k * tap_record_size(2)``) is three float32: the
flag :data:`~winnow.engine.processors.specs.TAP_RECORD_FLAG`, the token confidence ``C_k`` of
the distribution output token ``k`` is sampled from, and 1.0 if the row was ended at ``k``
(its token ``k`` is the sentinel, which the seam drops) else 0.0
(:data:`~winnow.engine.processors.specs.CONFIDENCE_FIELDS`).

The rule (:class:`ConfidenceWindow`): positions are pushed in order; a non-finite ``C`` (a
position whose top-k held a masked token, or a fully masked row) and a record not written are
skipped. After a finite push, the row ends at position ``k`` when a threshold is set, ``k >=
min_tokens``, the window holds ``window`` values and their mean is below the threshold.

Means are exact: each value (a float32, exact in a float) is held as an integer multiple of
``2**-150`` (every float32 is one), summed exactly and divided once, correctly rounded. So the
engine's running window and any offline recomputation from the same values give the same bits,
in any order: the engine's cut is exactly :func:`first_cut` of the records it wrote.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from winnow.engine.processors.specs import CONFIDENCE_FIELDS, tap_record_size
from winnow.engine.tap_files import MAX_TAP_RECORDS, parse_records, read_tap_file

__all__ = [
    "RECORD_SIZE",
    "ConfidenceRecords",
    "ConfidenceWindow",
    "exact_mean",
    "first_cut",
    "group_confidences",
    "parse_confidence",
    "read_confidence",
]

RECORD_SIZE = tap_record_size(len(CONFIDENCE_FIELDS))
_SCALE = 150  # 2**-150 divides every float32 (the smallest subnormal is 2**-149)


def _fixed(value: float) -> int:
    """``value`` as an integer number of ``2**-150`` (exact for every float32)."""
    return int(math.ldexp(value, _SCALE))


def _finite(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def exact_mean(values: Iterable[float | None]) -> float | None:
    """The correctly rounded mean of the finite values (None and non-finite ones skipped);
    None if there are none."""
    kept = _finite(values)
    if not kept:
        return None
    return sum(_fixed(v) for v in kept) / (len(kept) << _SCALE)


class ConfidenceWindow:
    """One row's last ``window`` finite token confidences and the stop rule on their mean."""

    __slots__ = ("min_tokens", "next", "threshold", "total", "values", "window")

    def __init__(self, window: int, threshold: float | None, min_tokens: int = 0) -> None:
        self.window = window
        self.threshold = threshold
        self.min_tokens = min_tokens
        self.values: deque[int] = deque()
        self.total = 0  # sum of values, exactly
        self.next = 0  # the position after the last one pushed

    def reset(self) -> None:
        self.values.clear()
        self.total = 0
        self.next = 0

    def mean(self) -> float | None:
        """The group confidence: the exact mean of the window's values (None while empty)."""
        if not self.values:
            return None
        return self.total / (len(self.values) << _SCALE)

    @property
    def full(self) -> bool:
        return len(self.values) == self.window

    def push(self, position: int, value: float | None) -> bool:
        """Add the confidence of ``position``; True when the row must end there."""
        self.next = position + 1
        if value is None or not math.isfinite(value):
            return False
        fixed = _fixed(value)
        self.values.append(fixed)
        self.total += fixed
        if len(self.values) > self.window:
            self.total -= self.values.popleft()
        if self.threshold is None or position < self.min_tokens or not self.full:
            return False
        mean = self.mean()
        return mean is not None and mean < self.threshold


def first_cut(
    values: Sequence[float | None], window: int, threshold: float | None, min_tokens: int = 0
) -> int | None:
    """The position where the engine ends a row whose positions have these confidences
    (``values[k]``: position k, None where unknown), or None: it does not end it."""
    rule = ConfidenceWindow(window, threshold, min_tokens)
    for position, value in enumerate(values):
        if rule.push(position, value):
            return position
    return None


def group_confidences(values: Sequence[float | None], window: int) -> list[float]:
    """DeepConf's group confidences: the exact mean of every ``window`` consecutive finite
    values (None and non-finite ones skipped); a trace with fewer has one group, all of them;
    none without a finite value."""
    kept = [_fixed(v) for v in _finite(values)]
    if not kept:
        return []
    if len(kept) <= window:
        return [sum(kept) / (len(kept) << _SCALE)]
    total = sum(kept[:window])
    groups = [total / (window << _SCALE)]
    for i in range(window, len(kept)):
        total += kept[i] - kept[i - window]
        groups.append(total / (window << _SCALE))
    return groups


@dataclass(frozen=True, slots=True)
class ConfidenceRecords:
    """What a confidence file holds: ``values[k]`` the confidence of position ``k`` (None: not
    written, or not finite), ``cut`` the position where the engine ended the row (None: it
    did not)."""

    values: list[float | None]
    cut: int | None = None


def parse_confidence(data: bytes) -> ConfidenceRecords:
    """The records in ``data`` (see the module docstring)."""
    values: list[float | None] = []
    cut = None
    for position, record in enumerate(parse_records(data, len(CONFIDENCE_FIELDS))):
        if record is None:
            values.append(None)
            continue
        value, ended = record
        values.append(value if math.isfinite(value) else None)
        if ended == 1.0 and cut is None:
            cut = position
    return ConfidenceRecords(values, cut)


def read_confidence(path: str, max_records: int = MAX_TAP_RECORDS) -> ConfidenceRecords:
    """The records of confidence file ``path``, at most ``max_records`` (a completion of ``n``
    tokens has at most ``n + 1``: the last is the cut's, or the stop token's). Read only if it
    is a regular file of this user, without following a link or blocking
    (:func:`~winnow.engine.tap_files.read_tap_file`)."""
    return parse_confidence(read_tap_file(path, 0, max_records * RECORD_SIZE))
