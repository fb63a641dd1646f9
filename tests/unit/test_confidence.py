"""DeepConf's token confidence, without an engine (issue #32, phase 1).

The kernel against a float64 computation; the stop rule's exact means; the engine-side processor
driven as vLLM drives it (batch updates and ``apply`` on synthetic logits): the confidences it
records, where it ends a row, what it leaves alone, what it refuses, and that its cut is the
offline recomputation of the stop from the same logits; and the pure trace statistics, vote,
warm-up threshold and consensus on hand-computed examples.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from tests.support.device_audit import OnlyOn
from winnow.engine.confidence import (
    RECORD_SIZE,
    ConfidenceWindow,
    exact_mean,
    first_cut,
    group_confidences,
    parse_confidence,
    read_confidence,
)
from winnow.engine.processors import PROCESSORS
from winnow.engine.processors.confidence import TokenConfidence, parse_args, record_and_cut
from winnow.engine.processors.specs import (
    CONFIDENCE,
    CONFIDENCE_KEY,
    PROBE_KEY,
    TAP_RECORD_FLAG,
    ConfidenceSpec,
    as_xargs,
    probe_answer,
)
from winnow.engine.tap_files import TAP_DIR_ENV, tap_dir, tap_files
from winnow.kernels import token_confidence
from winnow.kernels.confidence import token_confidence_torch
from winnow.strategies.parts.confidence import (
    TraceConfidence,
    consensus_reached,
    filter_and_vote,
    keep_top,
    percentile_bar,
    trace_confidence,
    warmup_threshold,
    weighted_vote,
)

NEG_INF = float("-inf")
SENTINEL = 3
VOCAB = 64
VICTIM = b"precious bytes that must stay as they are\n"


def reference(logits: torch.Tensor, k: int) -> torch.Tensor:
    """DeepConf's definition in float64: minus the mean of the top-k log-softmax values."""
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return -logprobs.topk(min(k, logits.shape[-1]), dim=-1).values.mean(dim=-1)


# ---- the kernel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_confidence_matches_float64(k: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(6, 3000, generator=g) * torch.tensor([[0.1], [1], [3], [8], [20], [1]])
    logits[5] += 1e4  # large logits: no cancellation
    logits = logits.to(dtype)
    got = token_confidence(logits, k)
    assert got.dtype == torch.float32 and got.shape == (6,)
    torch.testing.assert_close(got.double(), reference(logits, k), rtol=1e-6, atol=2e-5)
    assert torch.equal(got, token_confidence_torch(logits, k))


def test_token_confidence_known_values_and_masks() -> None:
    uniform = torch.zeros(1, VOCAB)  # every log-probability is -log V
    peaked = torch.zeros(1, VOCAB)
    peaked[0, 7] = 30.0  # ~0 for the top token, ~-30 for the other k - 1
    got = token_confidence(torch.cat([uniform, peaked]), 4)
    assert got[0].item() == pytest.approx(math.log(VOCAB), abs=1e-5)
    assert got[1].item() == pytest.approx(reference(peaked, 4).item(), abs=1e-5)
    assert got[1] > 20  # peaked: confident
    split = torch.full((1, VOCAB), -40.0)
    split[0, :4] = 0.0  # the mass split over the top 4: the lowest C there is, log 4
    assert token_confidence(split, 4).item() == pytest.approx(math.log(4), abs=1e-5)
    assert token_confidence(peaked, 1) < token_confidence(uniform, 1)  # k = 1: -log p_max
    whole = token_confidence(uniform, VOCAB + 50)  # k beyond the vocabulary: all of it
    assert whole.item() == pytest.approx(math.log(VOCAB), abs=1e-5)
    few = torch.full((3, VOCAB), NEG_INF)
    few[0, :2] = 1.0  # two candidates left, k = 4: a masked token among the top k
    few[2, 5] = 0.0
    out = token_confidence(few, 4)
    assert math.isinf(out[0]) and out[0] > 0 and math.isnan(out[1])  # all masked: NaN
    assert out[2].item() == math.inf
    assert token_confidence(torch.empty(0, VOCAB), 4).shape == (0,)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="top_k"):
            token_confidence(uniform, bad)  # type: ignore[arg-type]


# ---- the stop rule: exact means ------------------------------------------------------------------


def test_means_are_exact_and_order_free() -> None:
    assert exact_mean([0.1, 0.1, 0.1]) == 0.1  # a float sum gives 0.10000000000000002
    assert exact_mean([None, math.inf, math.nan]) is None
    rng = random.Random(0)
    values = [struct.unpack("<f", struct.pack("<f", rng.uniform(0, 30)))[0] for _ in range(500)]
    true = float(sum((Fraction(v) for v in values), Fraction(0)) / len(values))
    for _ in range(3):
        rng.shuffle(values)
        assert exact_mean(values) == true
    window = ConfidenceWindow(7, None)
    for position, value in enumerate(values):
        window.push(position, value)
    assert window.mean() == exact_mean(values[-7:]) == group_confidences(values, 7)[-1]


def test_first_cut_on_hand_computed_values() -> None:
    values: list[float | None] = [9.0, 9.0, 9.0, 3.0, None, 3.0, 3.0, 3.0]
    # full windows of 3 finite values: position 2: 9, 3: 7, 5: 5, 6: 3, 7: 3 (4 is unknown)
    assert first_cut(values, 3, threshold=7.5) == 3
    assert first_cut(values, 3, threshold=7.0) == 5  # strictly below
    assert first_cut(values, 3, threshold=7.5, min_tokens=4) == 5  # 4 pushes nothing
    assert first_cut(values, 3, threshold=3.0) is None
    assert first_cut(values, 3, threshold=None) is None  # record only
    assert first_cut(values, 1, threshold=10.0) == 0
    assert first_cut(values, 9, threshold=100.0) is None  # the window never fills
    assert group_confidences(values, 3) == [9.0, 7.0, 5.0, 3.0, 3.0]
    assert group_confidences(values, 50) == [39 / 7]  # shorter than the window: one group
    assert group_confidences([None], 3) == []


def test_records_parse_back() -> None:
    record = struct.Struct("<3f")
    data = (
        record.pack(TAP_RECORD_FLAG, 2.5, 0.0)
        + bytes(RECORD_SIZE)  # not written
        + record.pack(TAP_RECORD_FLAG, math.inf, 0.0)  # written, not finite
        + record.pack(TAP_RECORD_FLAG, 1.25, 1.0)
    )
    records = parse_confidence(data)
    assert records.values == [2.5, None, None, 1.25] and records.cut == 3
    assert parse_confidence(data[: 2 * RECORD_SIZE + 5]).values == [2.5, None]


# ---- the processor -------------------------------------------------------------------------------


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's private tap directory, named to the processor as the engine core sees it."""
    directory = tap_dir()
    monkeypatch.setenv(TAP_DIR_ENV, str(directory))
    return directory


@pytest.fixture
def files(channel: Path) -> Iterator[list[str]]:
    with tap_files(4) as paths:
        yield paths


def args_of(path: str, **changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"window": 3, "top_k": 4, "threshold": None, "min_tokens": 0,
                            "sentinel": SENTINEL, "file": path}  # fmt: skip
    return {**args, **changes}


def params(file: str, **changes: Any) -> SamplingParams:
    return SamplingParams(
        stop_token_ids=[SENTINEL], extra_args={CONFIDENCE_KEY: args_of(file, **changes)}
    )


def admit(proc: TokenConfidence, rows: list[tuple[int, SamplingParams, list[int]]]) -> None:
    size = max(i for i, _, _ in rows) + 1
    proc.update_state(BatchUpdate(size, [], [(i, p, [1, 2], out) for i, p, out in rows], []))


def flat() -> torch.Tensor:  # C = log V: below a peaked row's (log k is the least)
    return torch.zeros(VOCAB)


def peaked() -> torch.Tensor:
    row = torch.zeros(VOCAB)
    row[5] = 12.0
    return row


def is_cut(row: torch.Tensor) -> bool:
    return row[SENTINEL].item() == 0.0 and bool(torch.isinf(row).sum() == VOCAB - 1)


class Driver:
    """vLLM's side: each step the processor sees the batch's logits, then every live row
    writes its argmax token (a cut row writes the sentinel and leaves the batch)."""

    def __init__(self, proc: TokenConfidence, outputs: dict[int, list[int]]) -> None:
        self.proc, self.outputs = proc, outputs
        self.live = set(outputs)
        self.cut_at: dict[int, int] = {}  # row -> position where it was ended
        self.seen: list[torch.Tensor] = []  # the logits of each step, as handed to the processor

    def step(self, logits: torch.Tensor) -> torch.Tensor:
        self.seen.append(logits.clone())
        out = self.proc.apply(logits)
        for i in sorted(self.live):
            token = int(out[i].argmax())
            if token == SENTINEL and is_cut(out[i]):
                self.cut_at[i] = len(self.outputs[i])
                self.live.discard(i)
                self.proc.update_state(BatchUpdate(out.shape[0], [i], [], []))
            else:
                self.outputs[i].append(token)
        return out


def test_records_each_positions_confidence(files: list[str]) -> None:
    """Record-only rows (no threshold) and rows of another top-k: every position's C is written
    at record len(output), equal to the reference for that row's logits, and no logit changes."""
    proc = TokenConfidence(None, torch.device("cpu"), False)
    outputs: dict[int, list[int]] = {0: [], 1: [], 2: []}
    admit(proc, [(0, params(files[0]), outputs[0]), (1, params(files[1], top_k=20), outputs[1]),
                 (2, SamplingParams(), outputs[2])])  # fmt: skip
    assert sorted(proc.rows) == [0, 1]
    driver = Driver(proc, outputs)
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        logits = torch.randn(3, VOCAB, generator=g) * 4
        before = logits.clone()
        assert torch.equal(driver.step(logits), before)
    for row, (file, k) in enumerate(((files[0], 4), (files[1], 20))):
        records = read_confidence(file)
        want = [token_confidence(step[row : row + 1], k).item() for step in driver.seen]
        assert records.values == want and records.cut is None  # the file's bits are the values
        expected = torch.stack([reference(step[row], k) for step in driver.seen])
        torch.testing.assert_close(torch.tensor(records.values, dtype=torch.float64), expected,
                                   rtol=1e-6, atol=2e-5)  # fmt: skip
        assert os.path.getsize(file) == 6 * RECORD_SIZE
    assert os.path.getsize(files[2]) == 0  # nothing for a row without the key
    fds = [rule.fd for rule in proc.rows.values()]
    proc.update_state(BatchUpdate(3, [0, 1], [], []))
    assert proc.rows == {}
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed when the row leaves


def test_a_row_ends_at_the_first_window_below_the_threshold(files: list[str]) -> None:
    """Peaked steps 0-4, flat from 5: with a window of 3 the means are P, P, P, P, P, (2P+F)/3,
    (P+2F)/3, F. A threshold just above (P+2F)/3 ends the row at step 6, not before; with
    min_tokens 7 at step 7. Only the row that ends is masked (all -inf but the sentinel)."""
    p = token_confidence(peaked()[None], 4).item()
    f = token_confidence(flat()[None], 4).item()
    threshold = exact_mean([p, f, f])
    assert threshold is not None and threshold < exact_mean([p, p, f])  # type: ignore[operator]
    threshold = math.nextafter(threshold, math.inf)
    proc = TokenConfidence(None, torch.device("cpu"), False)
    outputs: dict[int, list[int]] = {0: [], 1: [], 2: [], 3: []}
    admit(proc, [(0, params(files[0], threshold=threshold), outputs[0]),
                 (1, params(files[1], threshold=threshold, min_tokens=7), outputs[1]),
                 (2, SamplingParams(), outputs[2]),
                 (3, params(files[3]), outputs[3])])  # fmt: skip
    driver = Driver(proc, outputs)
    for step in range(10):
        row = peaked() if step < 5 else flat()
        logits = torch.stack([row, row, row, row])
        before = logits.clone()
        out = driver.step(logits)
        for i in range(4):
            ended = (i, step) in ((0, 6), (1, 7))
            assert is_cut(out[i]) == ended, (i, step)
            if not ended and i in driver.live:
                assert torch.equal(out[i], before[i])  # untouched
    assert driver.cut_at == {0: 6, 1: 7}
    assert len(outputs[0]) == 6 and SENTINEL not in outputs[0]  # nothing past the cut
    assert read_confidence(files[0]).cut == 6 and len(read_confidence(files[0]).values) == 7
    assert read_confidence(files[1]).cut == 7
    assert read_confidence(files[3]).cut is None and len(outputs[3]) == 10  # record only


def test_engine_cut_equals_offline_recomputation(files: list[str]) -> None:
    """Random logits drifting from peaked to flat, rows with their own window, top-k, threshold
    and min_tokens: where the engine ends each row is first_cut of the confidences computed
    offline from the same logits, and of the records it wrote."""
    rules = [{"window": 4, "top_k": 20, "min_tokens": 0}, {"window": 8, "top_k": 4,
             "min_tokens": 10}, {"window": 1, "top_k": 1, "min_tokens": 3},
             {"window": 16, "top_k": 10, "min_tokens": 0}]  # fmt: skip
    g = torch.Generator().manual_seed(7)
    steps = 40
    sequence = [
        torch.randn(len(rules), VOCAB, generator=g) * (6.0 - 5.0 * t / steps) for t in range(steps)
    ]
    thresholds = []
    for row, rule in enumerate(rules):  # a threshold the drift crosses mid-way, per row
        values = [token_confidence(s[row : row + 1], rule["top_k"]).item() for s in sequence]
        groups = group_confidences(values, rule["window"])
        thresholds.append(sorted(groups)[len(groups) // 3])
    proc = TokenConfidence(None, torch.device("cpu"), False)
    outputs: dict[int, list[int]] = {i: [] for i in range(len(rules))}
    admit(proc, [(i, params(files[i], threshold=thresholds[i], **rule), outputs[i])
                 for i, rule in enumerate(rules)])  # fmt: skip
    driver = Driver(proc, outputs)
    for logits in sequence:
        driver.step(logits.clone())
    for row, rule in enumerate(rules):
        offline = [
            token_confidence(seen[row : row + 1], rule["top_k"]).item()
            for seen in driver.seen[: driver.cut_at.get(row, steps - 1) + 1]
        ]
        want = first_cut(offline, rule["window"], thresholds[row], rule["min_tokens"])
        assert want is not None and want >= rule["min_tokens"]
        assert driver.cut_at[row] == want
        records = read_confidence(files[row])
        assert (
            records.cut
            == want
            == first_cut(records.values, rule["window"], thresholds[row], rule["min_tokens"])
        )


def test_a_preempted_row_is_cut_where_it_would_have_been(files: list[str]) -> None:
    """vLLM may take a row out (preemption) and add it back later, in another slot, with the
    tokens it wrote: its window is rebuilt from its records, so it ends at the same position
    (peaked 0-8, flat from 9, a window of 5: position 11's mean (2P+3F)/5 is the first below
    the threshold; a window started afresh at 10 would first be full, and below, at 14)."""
    sequence = [(peaked() if t < 9 else flat())[None] for t in range(20)]
    values = [token_confidence(s, 4).item() for s in sequence]
    threshold = math.nextafter(exact_mean(values[7:12]) or 0.0, math.inf)
    want = first_cut(values, 5, threshold)
    assert want == 11
    proc = TokenConfidence(None, torch.device("cpu"), False)
    output: list[int] = []
    request = params(files[0], window=5, threshold=threshold)
    admit(proc, [(0, request, output)])
    driver = Driver(proc, {0: output})
    for t, logits in enumerate(sequence):
        if t == 10:  # preempted, then back in another slot with its 10 tokens
            proc.update_state(BatchUpdate(1, [0], [], []))
            proc.update_state(BatchUpdate(2, [], [(1, request, [1, 2], output)], []))
            driver.outputs, driver.live = {1: output}, {1}
        row = 1 if t >= 10 else 0
        batch = torch.zeros(row + 1, VOCAB)
        batch[row] = logits[0]
        driver.step(batch)
        if driver.cut_at:
            break
    assert driver.cut_at == {1: want}
    assert read_confidence(files[0]).cut == want


def test_works_on_the_logits_device_only(files: list[str]) -> None:
    """vLLM's logits are on the GPU: every tensor the processor uses must be on their device
    (here meta, audited); the host reads are the confidences, one per distinct top-k."""
    proc = TokenConfidence(None, torch.device("meta"), False)
    admit(proc, [(0, params(files[0], threshold=5.0, window=1), []), (1, SamplingParams(), []),
                 (2, params(files[1], top_k=20), [])])  # fmt: skip
    reads = {"tolist": lambda t: [1.0, 9.0][: t.shape[0]]}
    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.empty(3, VOCAB, device="meta", dtype=dtype)
        with OnlyOn("meta", reads=reads) as audit:
            cut = record_and_cut(logits, proc.rows)
        assert cut == [0] and logits.device.type == "meta" and logits.dtype == dtype
        assert audit.strays == [] and audit.moves == [] and audit.host_reads == ["tolist"] * 2
    assert read_confidence(files[0]).values == [1.0] and read_confidence(files[0]).cut == 0


def test_rows_without_the_key_or_with_the_probe_are_untouched(files: list[str]) -> None:
    proc = TokenConfidence(None, torch.device("cpu"), False)
    admit(proc, [(0, SamplingParams(), []), (1, SamplingParams(extra_args={"other": 1}), [])])
    assert proc.rows == {}
    logits = torch.randn(2, VOCAB)
    assert torch.equal(proc.apply(logits.clone()), logits)
    assert parse_args(SamplingParams()) is None
    assert record_and_cut(logits, {}) == []
    with pytest.raises(ValueError, match=probe_answer(CONFIDENCE)):
        TokenConfidence.validate_params(SamplingParams(extra_args={PROBE_KEY: CONFIDENCE}))
    TokenConfidence.validate_params(SamplingParams(extra_args={PROBE_KEY: "segment"}))
    assert not proc.is_argmax_invariant()
    assert PROCESSORS.index("winnow.engine.processors.confidence:TokenConfidence") == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"window": 0}, {"window": 5000}, {"window": "3"}, {"window": True}, {"window": 2.0},
        {"top_k": 0}, {"top_k": 101}, {"min_tokens": -1},
        {"threshold": "1"}, {"threshold": math.inf}, {"threshold": math.nan}, {"threshold": True},
        {"threshold": 2.0, "sentinel": None}, {"threshold": 2.0, "sentinel": 99},
        {"sentinel": "3"}, {"file": None}, {"file": ""}, {"file": 7},
    ],
)  # fmt: skip
def test_malformed_arguments_are_a_400(files: list[str], bad: dict[str, Any]) -> None:
    extra = {CONFIDENCE_KEY: args_of(files[0], **bad)}
    for form in (extra, as_xargs(extra)):  # as the local engine and a worker's client send it
        with pytest.raises(ValueError, match=CONFIDENCE_KEY):
            TokenConfidence.validate_params(SamplingParams(stop_token_ids=[SENTINEL],
                                                           extra_args=form))  # fmt: skip


def test_a_number_no_float_holds_is_a_400_not_an_overflow(files: list[str]) -> None:
    """A worker's client sends JSON, which allows an integer of 400 digits; ``math.isfinite``
    raises OverflowError on it, which vLLM would answer with a 500."""
    form = {CONFIDENCE_KEY: json.dumps(args_of(files[0], threshold=10**400))}
    with pytest.raises(ValueError, match="threshold"):
        TokenConfidence.validate_params(SamplingParams(stop_token_ids=[SENTINEL], extra_args=form))


def test_other_malformed_requests_are_a_400(files: list[str]) -> None:
    for value in ("not json", "[1, 2]", ["x"], "[" * 50_000, '{"a":' * 20_000):
        with pytest.raises(ValueError):
            TokenConfidence.validate_params(SamplingParams(extra_args={CONFIDENCE_KEY: value}))
    with_min_tokens = SamplingParams(
        stop_token_ids=[SENTINEL], min_tokens=4,
        extra_args={CONFIDENCE_KEY: args_of(files[0], threshold=2.0)},
    )  # fmt: skip
    with pytest.raises(ValueError, match="min_tokens"):
        TokenConfidence.validate_params(with_min_tokens)
    ok = SamplingParams(stop_token_ids=[SENTINEL],
                        extra_args={CONFIDENCE_KEY: args_of(files[0], threshold=2)})  # fmt: skip
    TokenConfidence.validate_params(ok)
    record_only = args_of(files[0])
    del record_only["sentinel"]
    TokenConfidence.validate_params(SamplingParams(extra_args={CONFIDENCE_KEY: record_only}))


def test_the_spec_writes_what_the_processor_reads(files: list[str]) -> None:
    spec = ConfidenceSpec(window=8, top_k=10, threshold=11.5, min_tokens=2)
    extra = spec.extra_args(SENTINEL, files[0])
    sent = {"window": 8, "top_k": 10, "threshold": 11.5, "min_tokens": 2, "sentinel": SENTINEL}
    assert extra == {CONFIDENCE_KEY: {**sent, "file": files[0]}}  # tail stays with the seam
    for form in (extra, spec.xargs(SENTINEL, files[0])):
        parsed = parse_args(SamplingParams(stop_token_ids=[SENTINEL], extra_args=form))
        assert parsed is not None and (parsed.window, parsed.threshold) == (8, 11.5)
    assert "sentinel" not in ConfidenceSpec().extra_args(None, files[0])[CONFIDENCE_KEY]
    with pytest.raises(ValueError, match="sentinel"):
        spec.extra_args(None, files[0])
    for bad in ({"threshold": 0.0}, {"threshold": math.inf}, {"window": 0}, {"top_k": 101},
                {"tail": 0}, {"other": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            ConfidenceSpec(**bad)


def test_a_client_named_file_outside_the_private_directory_is_refused(
    channel: Path, tmp_path: Path
) -> None:
    """Only a file of the private directory is opened: not one elsewhere, not one reached
    through ``..``, not a symbolic link planted there; the file named is left as it was."""
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    proc = TokenConfidence(None, torch.device("cpu"), False)
    through = f"{channel}/../{tmp_path.name}/victim"
    for file in (str(victim), through, str(channel / "victim")):
        request = params(file, threshold=1.0)
        with pytest.raises(ValueError, match="not a tap file of this engine"):
            TokenConfidence.validate_params(request)
        admit(proc, [(0, request, [])])
        assert proc.rows == {}
    planted = channel / ("ab" * 16)  # a tap file's name, but a link to the victim
    planted.symlink_to(victim)
    try:
        request = params(str(planted), threshold=1.0)
        TokenConfidence.validate_params(request)  # by name it is one: opening it refuses
        admit(proc, [(0, request, [])])
        assert proc.rows == {}
        proc.apply(torch.randn(1, VOCAB))
    finally:
        planted.unlink()
    assert victim.read_bytes() == VICTIM
    gone = channel / ("cd" * 16)  # the call is over, its file deleted: nothing is created
    admit(proc, [(0, params(str(gone)), [])])
    assert proc.rows == {} and not gone.exists()


def test_a_worker_refuses_every_request_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TAP_DIR_ENV, raising=False)
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    proc = TokenConfidence(None, torch.device("cpu"), False)
    extra = {CONFIDENCE_KEY: args_of(str(victim))}
    for form in (extra, as_xargs(extra)):
        request = SamplingParams(stop_token_ids=[SENTINEL], extra_args=form)
        with pytest.raises(ValueError, match="only inside winnow's own engine"):
            TokenConfidence.validate_params(request)
        admit(proc, [(0, request, [])])
        assert proc.rows == {}
    assert victim.read_bytes() == VICTIM


# ---- trace statistics, votes, threshold, consensus -----------------------------------------------


def test_trace_statistics() -> None:
    values: list[float | None] = [float(v) for v in range(1, 22)]  # 1 .. 21
    stats = trace_confidence([*values[:5], None, math.nan, *values[5:]], window=2, tail=4)
    # groups of 2: 1.5, 2.5, ..., 20.5 (20 groups); the lowest 10%: 1.5 and 2.5
    assert stats == TraceConfidence(
        lowest_group=1.5, bottom_10=2.0, tail=19.5, mean=11.0, tokens=21, window=2
    )
    assert stats.get("tail") == 19.5
    short = trace_confidence([4.0, 2.0, 6.0], window=8, tail=2)  # shorter than the window
    assert (short.lowest_group, short.bottom_10, short.tail, short.mean) == (4.0, 4.0, 4.0, 4.0)
    assert trace_confidence([None], window=2, tail=2) == TraceConfidence(
        None, None, None, None, 0, window=2
    )
    dip = trace_confidence([9.0, 9.0, 1.0, 9.0, 9.0, 9.0], window=2, tail=2)
    assert (dip.lowest_group, dip.bottom_10, dip.tail) == (5.0, 5.0, 9.0)


def test_warmup_threshold_is_the_percentile_of_lowest_group_confidences() -> None:
    lowest = [float(v) for v in range(1, 11)]  # 1 .. 10
    # DeepConf-low keeps the top 10%: the 90th percentile, 9 + 0.1 * (10 - 9)
    assert warmup_threshold(lowest, 0.1) == pytest.approx(9.1, abs=1e-12)
    assert warmup_threshold(lowest, 0.9) == pytest.approx(1.9, abs=1e-12)  # DeepConf-high: 10th
    assert warmup_threshold([*lowest, None, math.inf], 0.1) == pytest.approx(9.1, abs=1e-12)
    assert warmup_threshold(lowest, 1.0) == 1.0 and percentile_bar([None], 0.5) is None
    for eta in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="eta"):
            warmup_threshold(lowest, eta)


def test_offline_filter_and_vote() -> None:
    assert keep_top([5.0, None, 1.0, 9.0, 7.0], 0.5) == [3, 4]  # the 50th percentile is 6
    groups: list[int | None] = [0, 0, 0, 1, 1]
    stats: list[float | None] = [3.0, 3.0, 3.0, 4.0, 4.0]
    assert weighted_vote(groups, stats).leader == 0  # 9 against 8 without a filter
    vote = filter_and_vote(groups, stats, 0.4)  # 60th percentile 3.4: only the 4s are kept
    assert (vote.leader, vote.voters, vote.weights, vote.share) == (1, [3, 4], {1: 8.0}, 1.0)
    # no answer: never in the pool (its high confidence does not move the bar)
    vote = filter_and_vote([0, 1, 0, None, 1, 2], [10.0, 12.0, 11.0, 50.0, 3.0, 9.0], 0.5)
    assert vote.voters == [0, 1, 2] and vote.weights == {0: 21.0, 1: 12.0}
    assert vote.leader == 0 and vote.share == pytest.approx(21 / 33)
    assert filter_and_vote([None, None], [1.0, 2.0], 0.5).leader is None
    assert filter_and_vote([0, 1], [None, None], 0.5).leader is None
    with pytest.raises(ValueError):
        filter_and_vote([0], [1.0, 2.0], 0.5)


def test_votes_break_ties_to_the_first_answer_and_count_without_weights() -> None:
    assert weighted_vote([1, 0], [2.0, 2.0]).leader == 1  # seen first
    counted = weighted_vote([1, 0, 0], [0.0, None, 0.0])  # nothing positive: one vote each
    assert counted.leader == 0 and counted.share == pytest.approx(2 / 3)
    assert weighted_vote([None], [1.0]).leader is None


def test_consensus_stop() -> None:
    groups: list[int | None] = [0, 0, 1, None]
    weights: list[float | None] = [9.0, 9.0, 2.0, 100.0]  # no answer: no vote
    assert consensus_reached(groups, weights, 0.9)  # 18 / 20
    assert not consensus_reached(groups, weights, 0.95)
    assert not consensus_reached([None], [1.0], 0.5)
    with pytest.raises(ValueError, match="tau"):
        consensus_reached(groups, weights, 0.0)
