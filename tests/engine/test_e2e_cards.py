"""CARDS on the real engine: the in-engine cut sits exactly where the entropy crosses the
threshold (checked against an independent transformers forward pass), and the strategy runs end
to end through HTTP with the openai SDK, leaving no engine request behind."""

from __future__ import annotations

import math

import openai
import pytest
import torch

from winnow.engine.base import SEGMENT_STOP, SamplingSpec, SegmentSpec

pytestmark = pytest.mark.engine

STORY = "<|im_start|>user\nWrite a short story about a dragon.<|im_end|>\n<|im_start|>assistant\n"


def entropies(model_dir: str, ids: list[int]) -> list[float]:
    """Full-vocabulary next-token entropy (nats) after each position, by transformers."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = logits.log_softmax(-1)
    return (-(logp.exp() * logp).sum(-1)).tolist()


def test_segment_ends_before_the_first_uncertain_token(live_server, default_model_dir):
    rule = SegmentSpec(entropy=3.0, min_tokens=4)
    cuts = []
    for seed in range(4):
        spec = SamplingSpec(prompt=STORY, max_tokens=64, temperature=0.8, seed=seed, segment=rule)
        gen = live_server.run(live_server.engine.generate(spec))
        (c,) = gen.completions
        assert 16 not in c.token_ids  # the sentinel never reaches the caller
        if c.stop_reason == SEGMENT_STOP:
            cuts.append((gen.prompt_token_ids, c.token_ids))
    assert cuts, "no segment ended on uncertainty in 4 stories"
    for prompt_ids, written in cuts:
        h = entropies(default_model_dir, prompt_ids + written)
        after = h[len(prompt_ids) - 1 :]  # after[m]: entropy of the next token once m are written
        assert len(written) >= rule.min_tokens
        assert after[len(written)] >= rule.entropy - 1e-3  # the cut: uncertain here
        for m in range(rule.min_tokens, len(written)):
            assert after[m] < rule.entropy + 1e-3, (m, after[m])  # and not earlier


def test_cards_end_to_end_with_the_openai_sdk(live_server):
    client = openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key)
    r = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[
            {
                "role": "user",
                "content": "Calculate 7 * 8. Give the final answer as a single number.",
            }
        ],
        max_tokens=48,
        seed=3,
        extra_body={"strategy": {"name": "cards", "reward": "default", "max_rejections": 3}},
    )
    body = r.model_dump()
    details = body["winnow"]["details"]
    assert r.choices[0].message.content
    assert details["segments"] >= 1 and details["candidates"] >= details["segments"]
    assert math.isfinite(details["r_star"])  # the default reward's calibrated r_star
    usage = body["usage"]
    assert usage["winnow"]["generated_tokens"] >= usage["completion_tokens"]
    assert usage["winnow"]["reward_calls"] == details["candidates"] + 1
    assert live_server.wait_idle() == 0


def test_cards_streams_accepted_segments(live_server):
    client = openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key)
    stream = client.completions.create(
        model="SmolLM2-135M-Instruct",
        prompt=STORY,
        max_tokens=40,
        seed=5,
        stream=True,
        extra_body={"strategy": {"name": "cards", "max_rejections": 2}},
    )
    texts = [c.choices[0].text for c in stream if c.choices]
    assert sum(1 for t in texts if t) >= 1
    assert "".join(texts).strip()
    assert live_server.wait_idle() == 0
