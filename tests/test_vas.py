"""Value-augmented sampling: TD(lambda) targets, the in-engine logit adjustment on known
distributions, composition, hidden-state recovery on the real model, resumable training, the
strategy on the fake engine; and (marker ``engine``) VAS through HTTP on the real engine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from winnow.engine.fake import FakeEngine
from winnow.engine.processors.vas import KEY, ValueGuide, VasRule, guide_rows
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings
from winnow.train.value import Dataset, ValueConfig, fit_value_head
from winnow.values import (
    EmbeddingInverse,
    QHead,
    available,
    load_value_model,
    output_embedding,
    save_value_model,
    td_lambda_targets,
)

# ---- TD(lambda) ---------------------------------------------------------------------------------


def test_td_lambda_targets_by_hand():
    # V after each token: 0.2, 0.5, 0.4; reward 1 on the last token; gamma 1, lambda 0.5:
    # t=2: delta = 1 - 0.4 = 0.6, A = 0.6, target 1.0
    # t=1: delta = 0.4 - 0.5 = -0.1, A = -0.1 + 0.5 * 0.6 = 0.2, target 0.7
    # t=0: delta = 0.5 - 0.2 = 0.3, A = 0.3 + 0.5 * 0.2 = 0.4, target 0.6
    assert td_lambda_targets([0.2, 0.5, 0.4], 1.0, lam=0.5).tolist() == pytest.approx(
        [0.6, 0.7, 1.0]
    )
    # lambda 1: the Monte-Carlo return everywhere; lambda 0: one-step TD (next value)
    assert td_lambda_targets([0.2, 0.5, 0.4], 1.0, lam=1.0).tolist() == pytest.approx([1, 1, 1])
    assert td_lambda_targets([0.2, 0.5, 0.4], 1.0, lam=0.0).tolist() == pytest.approx(
        [0.5, 0.4, 1.0]
    )
    # the paper's setting, zero values: the reward discounted by lambda per token back
    got = td_lambda_targets([0.0] * 4, 2.0, gamma=1.0, lam=0.95).tolist()
    assert got == pytest.approx([2 * 0.95**3, 2 * 0.95**2, 2 * 0.95, 2.0])


# ---- the adjustment -----------------------------------------------------------------------------

V, H = 12, 4


def tiny(seed: int = 0) -> tuple[torch.Tensor, EmbeddingInverse]:
    g = torch.Generator().manual_seed(seed)
    embedding = torch.randn(V, H, generator=g)
    return embedding, EmbeddingInverse(embedding)


def bias_head(q: list[float]) -> QHead:
    """A head whose Q is a known number per token (b only), zero elsewhere."""
    head = QHead.zeros(H, V)
    head.b = torch.tensor(q)
    return head


def rows_of(*rules: dict | None) -> dict:
    out = {}
    for i, r in enumerate(rules):
        if r is not None:
            out[i] = VasRule(r["values"], r.get("top_k", 20))  # parse_rule checks paths
    return out


def test_adjustment_on_a_known_distribution(tmp_path: Path):
    embedding, inverse = tiny()
    h = torch.tensor([[1.0, -0.5, 0.3, 2.0]])
    logits = h @ embedding.T
    q = [float(i % 5) for i in range(V)]
    path = str(tmp_path / "v")
    save_value_model(Path(path), bias_head(q), {})
    beta, k = 1.5, 3
    out = logits.clone()
    guide_rows(out, rows_of({"values": {path: beta}, "top_k": k}), inverse, {path: bias_head(q)})
    top = logits[0].topk(k).indices.tolist()
    mean_q = sum(q[t] for t in top) / k
    for t in range(V):
        want = logits[0, t] + (beta * (q[t] - mean_q) if t in top else 0.0)
        assert float(out[0, t]) == pytest.approx(float(want), abs=1e-5)
    # on the top-k, the sampling distribution is pi_ref * exp(beta * Q), renormalised
    p_ref, p_new = logits[0, top].softmax(0), out[0, top].softmax(0)
    tilted = p_ref * torch.exp(beta * torch.tensor([q[t] for t in top]))
    assert p_new.tolist() == pytest.approx((tilted / tilted.sum()).tolist(), abs=1e-5)


def test_hidden_state_term_uses_the_recovered_state(tmp_path: Path):
    embedding, inverse = tiny(1)
    g = torch.Generator().manual_seed(2)
    head = QHead(
        torch.randn(H, H, generator=g), torch.randn(H, generator=g), torch.zeros(V),
        torch.randn(H, generator=g), torch.zeros(1),
    )  # fmt: skip
    h = torch.randn(2, H, generator=g)
    logits = h @ embedding.T
    out = logits.clone()
    rule = {"values": {"p": 2.0}, "top_k": 5}
    guide_rows(out, rows_of(rule, rule), inverse, {"p": head})
    top = logits.topk(5, dim=1).indices
    want = 2.0 * head.advantage(h, top, embedding)  # computed from the true h
    got = out.gather(1, top) - logits.gather(1, top)
    assert torch.allclose(got, want, atol=1e-4)
    assert abs(float(got.sum(1).abs().max())) < 1e-4  # centred: the top-k mass is not shifted


def test_composition_adds_beta_weighted_values_and_rows_stay_independent():
    embedding, inverse = tiny()
    logits = torch.randn(4, H, generator=torch.Generator().manual_seed(3)) @ embedding.T
    qa, qb = [float(i) for i in range(V)], [float((7 * i) % V) for i in range(V)]
    heads = {"a": bias_head(qa), "b": bias_head(qb)}
    rows = rows_of(
        {"values": {"a": 2.0, "b": -1.0}, "top_k": 4},  # composed
        None,  # no VAS arguments: untouched
        {"values": {"a": 2.0}, "top_k": 4},
        {"values": {"b": -1.0}, "top_k": 6},  # its own k
    )
    out = logits.clone()
    guide_rows(out, rows, inverse, heads)
    delta = out - logits
    assert torch.equal(out[1], logits[1])
    both = _alone(logits[0], qa, 2.0, 4) + _alone(logits[0], qb, -1.0, 4)
    assert torch.allclose(delta[0], both, atol=1e-5)
    assert torch.allclose(delta[2], _alone(logits[2], qa, 2.0, 4), atol=1e-5)
    assert torch.allclose(delta[3], _alone(logits[3], qb, -1.0, 6), atol=1e-5)
    assert int((delta[3] != 0).sum()) <= 6
    # beta 0 changes nothing at all
    out0 = logits.clone()
    guide_rows(out0, rows_of({"values": {"a": 0.0}, "top_k": 4}), inverse, heads)
    assert torch.equal(out0, logits)


def _alone(row: torch.Tensor, q: list[float], beta: float, k: int) -> torch.Tensor:
    top = row.topk(k).indices
    qt = torch.tensor([q[t] for t in top.tolist()])
    out = torch.zeros_like(row)
    out[top] = beta * (qt - qt.mean())
    return out


def added(index: int, params: SamplingParams) -> tuple:
    return (index, params, [1, 2], [])


def test_processor_tracks_rows_and_leaves_others_untouched(tmp_path: Path):
    embedding, inverse = tiny()
    path = tmp_path / "v"
    save_value_model(path, bias_head([float(i) for i in range(V)]), {})
    proc = ValueGuide(None, torch.device("cpu"), False)  # no model: nothing loads at start
    assert proc.inverse is None and proc._ensure_inverse() is None and proc.error
    proc.rows.clear()
    proc.error = None
    proc.inverse = inverse
    vas = SamplingParams(extra_args={KEY: {"values": {str(path): 3.0}}})
    plain = SamplingParams(extra_args={"other": 1})
    proc.update_state(BatchUpdate(3, [], [added(0, vas), added(1, plain), added(2, vas)], []))
    assert sorted(proc.rows) == [0, 2]
    logits = torch.randn(3, H) @ embedding.T
    out = proc.apply(logits.clone())
    assert torch.equal(out[1], logits[1]) and not torch.equal(out[0], logits[0])
    # slot 2 reused by a plain request without a removal: it must be forgotten
    proc.update_state(BatchUpdate(3, [], [added(2, plain)], []))
    assert sorted(proc.rows) == [0]
    proc.update_state(BatchUpdate(3, [0], [], []))
    assert proc.rows == {}
    assert torch.equal(proc.apply(logits.clone()), logits)


def test_params_are_validated(tmp_path: Path):
    path = tmp_path / "v"
    save_value_model(path, bias_head([0.0] * V), {})
    ok = {"values": {str(path): 1.0}}
    ValueGuide.validate_params(SamplingParams(extra_args={KEY: ok}))
    ValueGuide.validate_params(SamplingParams())  # no VAS: nothing to check
    for bad in ({"values": {str(tmp_path / "nope"): 1.0}}, {"values": {str(path): math.inf}},
                {"values": {str(path): 1.0}, "top_k": 0}, {"beta": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            ValueGuide.validate_params(SamplingParams(extra_args={KEY: bad}))
    # settings vLLM applies to the logits before this processor are refused with VAS
    for conflict in ({"min_tokens": 3}, {"logit_bias": {5: 2.0}}, {"allowed_token_ids": [1, 2]}):
        with pytest.raises(ValueError, match="cannot be combined"):
            ValueGuide.validate_params(SamplingParams(extra_args={KEY: ok}, **conflict))


def test_real_model_hidden_state_is_recovered_from_logits(default_model_dir: str):
    """h = pinv(E_S) l_S on SmolLM2's own embedding and its own hidden states."""
    from winnow.rewards.backbone import Backbone

    embedding = output_embedding(default_model_dir)
    assert embedding.shape == (49152, 576)
    inverse = EmbeddingInverse(embedding)
    backbone = Backbone(default_model_dir)
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


# ---- training -----------------------------------------------------------------------------------


def synthetic(n: int = 24, length: int = 6, seed: int = 0) -> tuple[Dataset, torch.Tensor]:
    """Responses whose reward is whether token 3 was ever written (knowable from its Q)."""
    g = torch.Generator().manual_seed(seed)
    embedding = torch.randn(V, H, generator=g)
    tokens = torch.randint(0, V, (n, length), generator=g)
    hidden = torch.randn(n * length, H, generator=g)
    rewards = torch.tensor([float((row == 3).any()) for row in tokens], dtype=torch.float64)
    offsets = [i * length for i in range(n + 1)]
    return Dataset(hidden, tokens.reshape(-1), offsets, rewards), embedding


def test_fitting_learns_and_resumes_from_a_checkpoint_exactly(tmp_path: Path):
    data, embedding = synthetic()
    config = ValueConfig(epochs=6, batch_positions=32, lr=5e-2, seed=1)
    full, state = fit_value_head(data, data, embedding, config, tmp_path / "a.safetensors")
    assert state["epoch"] == 6 and state["loss"][-1] < state["loss"][0]
    # the value of writing token 3 has become the highest bias
    assert int(full.b.argmax()) == 3
    # two epochs, stop; then the same run resumes from the checkpoint to six
    half = ValueConfig(epochs=2, batch_positions=32, lr=5e-2, seed=1)
    fit_value_head(data, None, embedding, half, tmp_path / "b.safetensors")
    resumed, rstate = fit_value_head(data, data, embedding, config, tmp_path / "b.safetensors")
    assert rstate["epoch"] == 6 and rstate["step"] == state["step"]
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert rstate["loss"] == pytest.approx(state["loss"], rel=1e-5)
    # a finished checkpoint does nothing more
    again, astate = fit_value_head(data, None, embedding, config, tmp_path / "b.safetensors")
    assert astate["step"] == state["step"] and torch.equal(again.b, resumed.b)


# ---- the strategy on the fake engine ------------------------------------------------------------


def fake_client() -> tuple[TestClient, FakeEngine]:
    engine = FakeEngine(lambda prompt, i, spec: f"value guided {i}")
    return TestClient(create_app(Settings(max_n=8), engine, RewardSet({}))), engine


def test_vas_strategy_sends_the_value_models_to_the_engine():
    shipped = available()
    assert "default" in shipped, "the trained default value model ships with winnow"
    client, engine = fake_client()
    with client:
        r = client.post(
            "/v1/completions",
            json={"prompt": "q", "max_tokens": 8, "n": 2,
                  "strategy": {"name": "vas", "values": {"default": 2.5}, "top_k": 7}},
        )  # fmt: skip
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["choices"]] == ["value gu", "value gu"]
    (spec,) = engine.calls
    assert spec.n == 2
    assert spec.extra_args == {KEY: {"values": {str(shipped["default"]): 2.5}, "top_k": 7}}


def test_unknown_value_model_is_a_400_listing_the_available_ones():
    client, engine = fake_client()
    with client:
        r = client.post(
            "/v1/completions",
            json={"prompt": "q", "strategy": {"name": "vas", "values": {"nope": 1.0}}},
        )
        bad_k = client.post(
            "/v1/completions", json={"prompt": "q", "strategy": {"name": "vas", "top_k": 0}}
        )
    assert r.status_code == 400
    assert "nope" in r.text and "default" in r.text
    assert bad_k.status_code == 400
    assert engine.calls == []


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
