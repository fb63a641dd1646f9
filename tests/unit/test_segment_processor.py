"""The CARDS segmenter as vLLM drives it: batch bookkeeping and the cut, on synthetic logits."""

from __future__ import annotations

import math

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from tests.support.device_audit import OnlyOn
from winnow.engine.processors.segment import UncertaintySegmenter, cut_rows, parse_rule
from winnow.engine.processors.specs import SEGMENT_KEY as KEY

SENTINEL = 3
VOCAB = 8


def params(entropy: float = 1.0, min_tokens: int = 2) -> SamplingParams:
    rule = {"entropy": entropy, "min_tokens": min_tokens, "sentinel": SENTINEL}
    return SamplingParams(stop_token_ids=[SENTINEL], extra_args={KEY: rule})


def flat() -> torch.Tensor:  # uniform: entropy log(8) = 2.08 nats
    return torch.zeros(VOCAB)


def peaked() -> torch.Tensor:  # almost deterministic: entropy ~ 0
    row = torch.full((VOCAB,), -20.0)
    row[5] = 20.0
    return row


def batch(*rows: torch.Tensor) -> torch.Tensor:
    return torch.stack(rows)


def update(proc, size, added=(), removed=(), moved=()):
    proc.update_state(BatchUpdate(size, list(removed), list(added), list(moved)))


def test_cuts_only_uncertain_rows_that_wrote_enough():
    proc = UncertaintySegmenter(None, torch.device("cpu"), False)
    long_enough, too_short = [1, 2], [1]
    added = [
        (0, params(), None, long_enough),
        (1, params(), None, too_short),
        (2, SamplingParams(), None, [1, 2, 3]),
        (3, params(), None, [1, 2]),
    ]
    update(proc, 4, added=added)
    logits = batch(flat(), flat(), flat(), peaked())
    before = logits.clone()
    out = proc.apply(logits)
    assert out[0, SENTINEL] == 0 and torch.isinf(out[0]).sum() == VOCAB - 1  # cut
    assert torch.equal(out[1], before[1])  # uncertain but only 1 token written
    assert torch.equal(out[2], before[2])  # did not opt in
    assert torch.equal(out[3], before[3])  # written enough but certain
    too_short.append(7)  # vLLM appends to the same list: now long enough
    assert proc.apply(batch(flat(), flat(), flat(), peaked()))[1, SENTINEL] == 0


def test_threshold_is_in_nats_on_raw_logits():
    proc = UncertaintySegmenter(None, torch.device("cpu"), False)
    update(proc, 2, added=[(0, params(entropy=math.log(VOCAB) - 1e-3), None, [1, 1]),
                           (1, params(entropy=math.log(VOCAB) + 1e-3), None, [1, 1])])  # fmt: skip
    out = proc.apply(batch(flat(), flat()))
    assert out[0, SENTINEL] == 0 and not torch.isinf(out[1]).any()


def test_moves_swaps_and_reused_slots_follow_the_request():
    proc = UncertaintySegmenter(None, torch.device("cpu"), False)
    update(proc, 2, added=[(0, params(), None, [1, 1]), (1, SamplingParams(), None, [1, 1])])
    update(proc, 2, moved=[(0, 1, MoveDirectionality.SWAP)])
    out = proc.apply(batch(flat(), flat()))
    assert not torch.isinf(out[0]).any() and out[1, SENTINEL] == 0
    update(proc, 1, moved=[(1, 0, MoveDirectionality.UNIDIRECTIONAL)])
    assert proc.apply(batch(flat()))[0, SENTINEL] == 0
    # a plain request takes the slot without a removal first: it must not inherit the rule
    update(proc, 1, added=[(0, SamplingParams(), None, [1, 1])])
    assert not torch.isinf(proc.apply(batch(flat()))).any()
    update(proc, 1, added=[(0, params(), None, [1, 1])], removed=[0])
    assert proc.apply(batch(flat()))[0, SENTINEL] == 0


def test_rule_needs_the_sentinel_among_stop_tokens():
    assert parse_rule(SamplingParams()) is None
    with pytest.raises(ValueError, match="stop_token_ids"):
        parse_rule(SamplingParams(extra_args={KEY: {"sentinel": SENTINEL}}))
    with pytest.raises(ValueError, match="sentinel"):
        parse_rule(SamplingParams(extra_args={KEY: {"entropy": 3.0}}))


def test_works_on_the_logits_device_only():
    """vLLM's logits are on the GPU: every tensor the cut uses must be on their device (here
    meta, audited), and the one host read is the opted-in rows' entropies (NaN never cuts)."""
    proc = UncertaintySegmenter(None, torch.device("meta"), False)
    rows = [(0, params(), None, [1, 2]), (1, params(), None, [1]),
            (2, SamplingParams(), None, [1, 2]), (3, params(), None, [1, 2, 3])]  # fmt: skip
    update(proc, 4, added=rows)
    entropies = {"tolist": lambda t: [9.0, math.nan][: t.shape[0]]}
    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.empty(4, VOCAB, device="meta", dtype=dtype)
        with OnlyOn("meta", reads=entropies) as audit:
            cut = cut_rows(logits, proc.rows)
            out = proc.apply(logits)
        assert cut == [0] and out.device.type == "meta" and out.dtype == dtype
        assert audit.strays == [] and audit.moves == [] and audit.host_reads == ["tolist"] * 2
