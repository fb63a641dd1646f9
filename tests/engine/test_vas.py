"""Value-augmented sampling (engine): hidden-state recovery on the real model; and (marker
``engine``) VAS through HTTP on the real engine."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from winnow.engine.processors.specs import VAS_KEY as KEY
from winnow.heads.value import EmbeddingInverse, available, load_value_model, output_embedding


@pytest.fixture(scope="module")
def real_model(default_model_dir: str) -> tuple[torch.Tensor, EmbeddingInverse, Any]:
    """SmolLM2's output embedding, its inverse and the model (built once: pinv takes a while)."""
    from winnow.rewards.backbone import Backbone

    embedding = output_embedding(default_model_dir)
    return embedding, EmbeddingInverse(embedding), Backbone(default_model_dir)


def test_real_model_hidden_state_is_recovered_from_logits(real_model):
    """h = pinv(E_S) l_S on SmolLM2's own embedding and its own hidden states."""
    embedding, inverse, backbone = real_model
    assert embedding.shape == (49152, 576)
    ids = backbone.encode("Calculate 7 * 8. 7 * 8 = 56, so the answer is 56.")
    h = backbone.encode_sequences([ids])[0].hidden
    with torch.inference_mode():
        logits = backbone.model.lm_head(h)  # what vLLM hands to logits processors
    recovered = inverse.hidden(logits)
    error = ((recovered - h).norm(dim=1) / h.norm(dim=1)).max()
    assert float(error) < 1e-4
    # and the values VAS computes from the recovered state equal those from the true one
    shipped = available().get("default")
    if shipped is not None:
        head, _ = load_value_model(shipped)
        top = logits.topk(20, dim=1).indices
        a, b = head.advantage(h, top, embedding), head.advantage(recovered, top, embedding)
        assert torch.allclose(a, b, atol=1e-3 * max(1.0, float(a.abs().max())))


BF16_TEXTS = (
    ("Calculate 7 * 8.", "7 * 8 = 56, so the answer is 56."),
    ("What is 15 + 27? Answer with a number.", "15 + 27 = 42. The answer is 42."),
    ("Tell me a short story about a cat.",
     "Once upon a time a cat named Tom lived in a small house by the river. He loved fish."),
    ("Explain photosynthesis in one paragraph.",
     "Plants use sunlight, water and carbon dioxide to make glucose and oxygen."),
    ("Calculate 123 - 45 and explain each step.",
     "123 - 45: 123 - 40 = 83, 83 - 5 = 78. The answer is 78."),
)  # fmt: skip


def test_real_model_hidden_state_from_bfloat16_logits(real_model):
    """A GPU engine usually hands over bf16 logits: the recovery error to expect (the README's
    figure; run with -s to print it), and what it does to the VAS adjustment."""
    embedding, inverse, backbone = real_model
    texts = [
        backbone.tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False
        )
        for q, a in BF16_TEXTS
    ]
    encoded = backbone.encode_sequences([backbone.encode(t) for t in texts])
    h = torch.cat([e.hidden for e in encoded])  # float32, [positions, 576]
    with torch.inference_mode():
        logits = h @ embedding.T

    def error(recovered: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
        e = (recovered - true).norm(dim=1) / true.norm(dim=1)
        return float(e.median()), float(e.max())

    fp32 = error(inverse.hidden(logits), h)
    bf16 = error(inverse.hidden(logits.bfloat16()), h)
    head, _ = load_value_model(available()["default"])
    top = logits.topk(20, dim=1).indices
    exact = head.advantage(h, top, embedding)
    from_bf16 = head.advantage(inverse.hidden(logits.bfloat16()), top, embedding)
    adv = error(from_bf16, exact)
    print(
        f"\nrelative error of h over {len(h)} positions (median, max): fp32 logits "
        f"{fp32[0]:.1e}, {fp32[1]:.1e}; bf16-rounded logits {bf16[0]:.1e}, {bf16[1]:.1e}; "
        f"top-20 advantage from bf16 logits {adv[0]:.1e}, {adv[1]:.1e}"
    )
    assert fp32[1] < 1e-5 and bf16[1] < 1e-2
    assert adv[1] < 2e-2


# ---- the real engine ----------------------------------------------------------------------------

QUESTION = "Calculate 6 * 7. Give the final answer as a single number."


def _complete(live_server, strategy: dict | None, **body) -> dict:
    import httpx

    payload = {"model": "SmolLM2-135M-Instruct", "prompt": QUESTION, "max_tokens": 24,
               "temperature": 1.0, "seed": 11, **body}  # fmt: skip
    if strategy is not None:
        payload["strategy"] = strategy
    r = httpx.post(
        f"{live_server.base_url}/completions",
        json=payload,
        headers={"Authorization": f"Bearer {live_server.api_key}"},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.engine
def test_vas_through_http_and_beta_zero_is_plain_sampling(live_server):
    import openai

    client = openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key)
    chat = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=32,
        extra_body={"strategy": {"name": "vas", "values": {"default": 3.0, "brevity": 1.0}}},
    )
    assert chat.choices[0].message.content
    assert chat.usage.completion_tokens > 0
    plain = _complete(live_server, None)
    zero = _complete(live_server, {"name": "vas", "values": {"default": 0.0}})
    assert zero["choices"][0]["text"] == plain["choices"][0]["text"]
    assert zero["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]
    assert live_server.wait_idle() == 0


@pytest.mark.engine
def test_large_beta_samples_tokens_of_higher_value(live_server, default_model_dir: str):
    """The tokens VAS writes have a higher (centred) Q than plain samples, recomputed
    independently with transformers from the same weights."""
    from winnow.engine.base import SamplingSpec
    from winnow.rewards.backbone import Backbone

    path = available()["default"]
    head, _ = load_value_model(path)
    embedding = output_embedding(default_model_dir)
    prompt = live_server.run(
        live_server.engine.apply_chat_template([{"role": "user", "content": QUESTION}])
    )
    ids = tuple(live_server.run(live_server.engine.tokenize(prompt)))

    def sample(beta: float | None) -> list[list[int]]:
        extra = None if beta is None else {KEY: {"values": {str(path): beta}, "top_k": 20}}
        spec = SamplingSpec(prompt=ids, n=8, max_tokens=24, temperature=1.0, seed=5,
                            extra_args=extra)  # fmt: skip
        return [c.token_ids for c in live_server.run(live_server.engine.generate(spec)).completions]

    backbone = Backbone(default_model_dir)

    def mean_advantage(responses: list[list[int]]) -> float:
        total, count = 0.0, 0
        encoded = backbone.encode_sequences([list(ids) + r for r in responses])
        for k, r in enumerate(responses):
            h = encoded[k].hidden[len(ids) - 1 : len(ids) - 1 + len(r)]
            with torch.inference_mode():
                top = backbone.model.lm_head(h).topk(20, dim=1).indices
                adv = head.advantage(h, top, embedding)
            for t, token in enumerate(r):
                hit = (top[t] == token).nonzero()
                if len(hit):
                    total, count = total + float(adv[t, int(hit[0])]), count + 1
        return total / count

    plain, guided = sample(None), sample(20.0)
    assert guided != plain
    assert mean_advantage(guided) > mean_advantage(plain) + 0.05
    assert live_server.wait_idle() == 0
