"""Every processor reads its arguments the same from the local engine (an object under its key)
and from a remote worker (the same object as a JSON string, as ``vllm_xargs`` carries it), and
answers the capability probe that names it. On vLLM ``SamplingParams``, no engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vllm import SamplingParams

from winnow.engine.processors.args import request_args
from winnow.engine.processors.segment import UncertaintySegmenter
from winnow.engine.processors.segment import parse_rule as parse_segment
from winnow.engine.processors.specs import (
    PROBE_KEY,
    SEGMENT_KEY,
    TAP_KEY,
    SegmentSpec,
    TapSpec,
    VasSpec,
    as_xargs,
    probe_answer,
)
from winnow.engine.processors.tap import RewardTap
from winnow.engine.processors.tap import parse_args as parse_tap
from winnow.engine.processors.vas import ValueGuide
from winnow.engine.processors.vas import parse_rule as parse_vas
from winnow.heads.value import available

SENTINEL = 16
HEAD = Path(__file__).resolve().parents[2] / "winnow" / "assets" / "rewards" / "default"


def both(extra: dict, **settings: object) -> tuple[SamplingParams, SamplingParams]:
    """The same request as the local engine and as a remote worker sees it."""
    return (
        SamplingParams(extra_args=extra, **settings),
        SamplingParams(extra_args=as_xargs(extra), **settings),
    )


def test_segment_arguments_read_the_same_in_both_forms() -> None:
    spec = SegmentSpec(entropy=2.25, min_tokens=6)
    local, remote = both(spec.extra_args(SENTINEL), stop_token_ids=[SENTINEL])
    assert spec.xargs(SENTINEL) == as_xargs(spec.extra_args(SENTINEL))
    assert isinstance(remote.extra_args[SEGMENT_KEY], str)
    assert parse_segment(local) == parse_segment(remote) == spec.extra_args(SENTINEL)[SEGMENT_KEY]
    rules = [UncertaintySegmenter._rule(p, [1]) for p in (local, remote)]
    assert [(r.entropy, r.min_tokens, r.sentinel) for r in rules] == [(2.25, 6, SENTINEL)] * 2
    for params in (local, remote):  # the sentinel must be a stop token, in either form
        with pytest.raises(ValueError, match="stop_token_ids"):
            UncertaintySegmenter.validate_params(SamplingParams(extra_args=params.extra_args))


def test_vas_arguments_read_the_same_in_both_forms() -> None:
    spec = VasSpec(values={str(available()["default"]): 2.5, str(available()["brevity"]): -1.0})
    local, remote = both(spec.extra_args())
    assert spec.xargs() == as_xargs(spec.extra_args())
    a, b = parse_vas(local), parse_vas(remote)
    assert a is not None and b is not None
    assert (a.values, a.top_k) == (b.values, b.top_k) == (dict(spec.values), 20)
    for params in both(spec.extra_args(), min_tokens=2):  # conflicts are seen in both forms
        with pytest.raises(ValueError, match="cannot be combined"):
            ValueGuide.validate_params(params)
    conflicted = {**SegmentSpec().extra_args(SENTINEL), **spec.extra_args()}
    for params in both(conflicted, stop_token_ids=[SENTINEL]):
        with pytest.raises(ValueError, match="segment"):
            ValueGuide.validate_params(params)


def test_tap_arguments_read_the_same_in_both_forms(tmp_path: Path) -> None:
    extra = TapSpec(heads=(str(HEAD),), file=str(tmp_path / "f")).extra_args()
    local, remote = both(extra)
    assert isinstance(remote.extra_args[TAP_KEY], str)
    assert parse_tap(local) == parse_tap(remote) == ((str(HEAD),), str(tmp_path / "f"))


def test_malformed_arguments_are_refused_in_both_forms(tmp_path: Path) -> None:
    for bad in ({"entropy": 3.0}, [1, 2], "not json", json.dumps([1])):
        with pytest.raises(ValueError):
            UncertaintySegmenter.validate_params(SamplingParams(extra_args={SEGMENT_KEY: bad}))
    with pytest.raises(ValueError, match="JSON"):
        request_args(SamplingParams(extra_args={TAP_KEY: "{heads"}), TAP_KEY)
    bad_vas = {"values": {str(tmp_path / "nope"): 1.0}}
    for params in both({"winnow_vas": bad_vas}):
        with pytest.raises(ValueError, match="not a value model directory"):
            ValueGuide.validate_params(params)
    assert request_args(SamplingParams(), TAP_KEY) is None
    assert request_args(SamplingParams(extra_args={"other": "1"}), TAP_KEY) is None


def test_each_processor_answers_the_probe_that_names_it() -> None:
    processors = {"segment": UncertaintySegmenter, "vas": ValueGuide, "tap": RewardTap}
    for name, processor in processors.items():
        for asked in processors:
            params = SamplingParams(extra_args={PROBE_KEY: asked})
            if asked == name:
                with pytest.raises(ValueError, match=probe_answer(name)):
                    processor.validate_params(params)
            else:
                processor.validate_params(params)  # another's probe: inert
