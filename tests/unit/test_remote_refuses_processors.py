"""A remote vLLM server cannot run winnow's logits processors: asking for them is refused, not
silently ignored."""

from __future__ import annotations

import pytest

from winnow.engine.base import EngineRequestError, SamplingSpec, SegmentSpec
from winnow.engine.processors.specs import VasSpec
from winnow.engine.remote.wire import completion_payload


def test_segment_and_value_guidance_are_refused_remotely():
    with pytest.raises(EngineRequestError, match="local engine"):
        completion_payload(SamplingSpec(prompt="x", segment=SegmentSpec()), "m", stream=False)
    vas = SamplingSpec(prompt="x", extra_args={"winnow_vas": {"values": {"/v": 1.0}}})
    with pytest.raises(EngineRequestError, match="local engine"):
        completion_payload(vas, "m", stream=False)
    plain = completion_payload(SamplingSpec(prompt="x", extra_args={"k": 1}), "m", stream=False)
    assert plain["vllm_xargs"] == {"k": 1}


def test_the_typed_value_guidance_is_refused_remotely_as_the_segment_is():
    vas = SamplingSpec(prompt="x", vas=VasSpec(values={"/v": 1.0}))
    with pytest.raises(EngineRequestError, match="local engine"):
        completion_payload(vas, "m", stream=False)
