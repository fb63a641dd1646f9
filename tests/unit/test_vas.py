"""Value-augmented sampling (unit): TD(lambda) targets, the in-engine logit adjustment on known
distributions, composition, resumable training, the strategy on the fake engine. Hidden-state
recovery on the real model and VAS through HTTP on the real engine: tests/engine/test_vas.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from tests.support.device_audit import OnlyOn
from winnow.engine.base import SamplingSpec
from winnow.engine.fake import FakeEngine
from winnow.engine.processors.allowed import ALLOWED_DIRS_ENV
from winnow.engine.processors.specs import VAS_KEY as KEY
from winnow.engine.processors.specs import VasSpec
from winnow.engine.processors.vas import ValueGuide, VasRule, guide_rows
from winnow.heads.value import (
    EmbeddingInverse,
    QHead,
    available,
    logits_map,
    save_value_model,
    td_lambda_targets,
    vas_unavailable,
)
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings
from winnow.train.value import Dataset, ValueConfig, fit_value_head

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


@pytest.fixture
def allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The processors may read value models under ``tmp_path`` (as ``--allow-dir`` lets them)."""
    monkeypatch.setenv(ALLOWED_DIRS_ENV, str(tmp_path))
    return tmp_path


def test_processor_tracks_rows_and_leaves_others_untouched(tmp_path: Path, allowed: Path):
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


def _gpu_like_processor(tmp_path: Path) -> tuple[ValueGuide, torch.Tensor, EmbeddingInverse]:
    """A processor with two value models (loaded on the CPU, as in the engine) and three rows:
    both models, one model at its own k, and a row without VAS."""
    embedding, inverse = tiny()
    g = torch.Generator().manual_seed(4)
    for name in ("a", "b"):
        head = QHead(
            *(torch.randn(*shape, generator=g) for shape in ((H, H), (H,), (V,), (H,), (1,)))
        )
        save_value_model(tmp_path / name, head, {})
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    proc = ValueGuide(None, torch.device("meta"), False)
    proc._ensure_inverse()  # no model in this test: set the inverse by hand
    proc.error, proc.inverse = None, inverse
    rows = [
        added(0, SamplingParams(extra_args={KEY: {"values": {a: 2.0, b: -1.0}, "top_k": 4}})),
        added(1, SamplingParams(extra_args={KEY: {"values": {b: 1.5}, "top_k": 6}})),
        added(2, SamplingParams()),
    ]
    proc.update_state(BatchUpdate(3, [], rows, []))
    assert sorted(proc.rows) == [0, 1]
    return proc, embedding, inverse


def test_processor_works_on_the_logits_device_only(tmp_path: Path, allowed: Path):
    """vLLM's logits are on the GPU: the inverse, the value heads and the betas must be there
    too (a CPU operand raises in the sampler and kills the engine). Driven with meta logits,
    every tensor apply() uses must be on meta; the CPU-loaded tensors move there once."""
    proc, _, _ = _gpu_like_processor(tmp_path)
    for step, dtype in enumerate((torch.float32, torch.float32, torch.bfloat16)):
        logits = torch.empty(3, V, device="meta", dtype=dtype)
        with OnlyOn("meta") as audit:
            out = proc.apply(logits)
        assert audit.strays == [] and audit.host_reads == [] and audit.calls > 20
        assert out.device.type == "meta" and out.dtype == dtype
        assert bool(audit.moves) == (step == 0)  # moved on the first step only
    assert proc.inverse is not None and proc.inverse.device.type == "meta"
    assert {h.device.type for h in proc._placed.values()} == {"meta"}


def test_processor_adds_values_to_bfloat16_logits(tmp_path: Path, allowed: Path):
    """bf16 logits (a GPU engine's usual dtype): h is recovered and Q computed in float32, the
    adjustment added in bf16, equal to the float32 result up to bf16 rounding."""
    proc, embedding, _ = _gpu_like_processor(tmp_path)
    logits = torch.randn(3, H, generator=torch.Generator().manual_seed(5)) @ embedding.T
    low = logits.bfloat16()
    want = proc.apply(low.float()) - low.float()  # the same rows, in float32
    got = proc.apply(low.clone()).float() - low.float()
    assert got.dtype == torch.float32 and torch.equal(got[2], torch.zeros(V))
    assert torch.allclose(got, want, atol=0.1, rtol=2**-7)
    assert int((got[0] != 0).sum()) <= 4 and int((got[1] != 0).sum()) <= 6


def test_params_are_validated(tmp_path: Path, allowed: Path):
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


# ---- the logits map of other architectures -------------------------------------------------------

SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300}  # fmt: skip


def _tiny_causal_lm(directory: Path, kind: str) -> Any:
    """A randomly initialised model whose logits are an affine map of h other than E h."""
    import transformers as tf

    cls, config = {
        "llama_tied": (tf.LlamaForCausalLM, tf.LlamaConfig(**SMALL, tie_word_embeddings=True)),
        "phi_lm_head_bias": (tf.PhiForCausalLM, tf.PhiConfig(**SMALL)),
        "cohere_logit_scale": (tf.CohereForCausalLM, tf.CohereConfig(**SMALL, logit_scale=0.25)),
        "granite_logits_scaling": (
            tf.GraniteForCausalLM, tf.GraniteConfig(**SMALL, logits_scaling=4.0),
        ),
    }[kind]  # fmt: skip
    torch.manual_seed(0)
    model = cls(config).eval()
    if kind == "phi_lm_head_bias":
        with torch.no_grad():
            model.lm_head.bias.normal_()  # zeros at initialisation
    model.save_pretrained(directory)
    return model


@pytest.mark.parametrize(
    "kind", ["llama_tied", "phi_lm_head_bias", "cohere_logit_scale", "granite_logits_scaling"]
)
def test_hidden_state_is_recovered_through_bias_and_logit_scaling(tmp_path: Path, kind: str):
    """The model's own logits (transformers applies the bias and the scaling as vLLM does)
    give back the hidden state its LM head read."""
    model = _tiny_causal_lm(tmp_path, kind)
    ids = torch.randint(0, SMALL["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        h = model.model(ids).last_hidden_state[0]
        logits = model(ids).logits[0]
    lm = logits_map(tmp_path)
    bias = 0.0 if lm.bias is None else lm.bias
    assert torch.allclose(lm.scale * (h @ lm.embedding.T + bias), logits, atol=1e-5)
    assert (lm.scale, lm.bias is not None) == {
        "llama_tied": (1.0, False), "phi_lm_head_bias": (1.0, True),
        "cohere_logit_scale": (0.25, False), "granite_logits_scaling": (0.25, False),
    }[kind]  # fmt: skip
    recovered = EmbeddingInverse.of_model(tmp_path).hidden(logits)
    error = ((recovered - h).norm(dim=1) / h.norm(dim=1)).max()
    assert float(error) < 1e-5
    assert vas_unavailable(tmp_path) is None


def test_soft_capped_logits_are_refused_nested_configs_are_read(tmp_path: Path):
    import transformers as tf

    flat = tf.Gemma2Config(**SMALL, head_dim=16, final_logit_softcapping=30.0)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 28, "patch_size": 14}  # fmt: skip
    nested = tf.Gemma3Config(
        text_config={**SMALL, "head_dim": 16, "final_logit_softcapping": 30.0},
        vision_config=vision,
    )
    for name, config in (("gemma2", flat), ("gemma3", nested)):
        config.save_pretrained(tmp_path / name)
        with pytest.raises(ValueError, match="soft-caps its logits"):
            logits_map(tmp_path / name)
        assert "final_logit_softcapping=30.0" in str(vas_unavailable(tmp_path / name))
        # the engine's processor logs it and leaves VAS rows unguided: it never raises
        model_config = type("ModelConfig", (), {"model": str(tmp_path / name)})
        proc = ValueGuide(type("VllmConfig", (), {"model_config": model_config}), "cpu", False)
        assert proc._ensure_inverse() is None and "soft-caps" in str(proc.error)
    # a multimodal model: the text config's logit scale, the language model's embedding
    llava = tf.LlavaConfig(
        text_config=tf.CohereConfig(**SMALL, logit_scale=0.25),
        vision_config=tf.CLIPVisionConfig(**vision),
        image_token_index=SMALL["vocab_size"] - 1,
    )
    torch.manual_seed(0)
    model = tf.LlavaForConditionalGeneration(llava)
    model.save_pretrained(tmp_path / "llava")
    lm = logits_map(tmp_path / "llava")
    assert lm.scale == 0.25 and lm.bias is None
    assert torch.equal(lm.embedding, model.get_output_embeddings().weight.detach())


def test_vas_on_a_model_it_cannot_invert_is_a_400():
    client, engine = fake_client()
    reason = "gemma2 soft-caps its logits (final_logit_softcapping=30.0): ..."
    engine.info.extra["vas_unavailable"] = reason
    with client:
        r = client.post("/v1/completions", json={"prompt": "q", "strategy": "vas"})
    assert r.status_code == 400 and reason in r.json()["error"]["message"]
    assert engine.calls == []


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
    assert spec.vas == VasSpec(values={str(shipped["default"]): 2.5}, top_k=7)
    assert spec.extra_args is None  # typed, as the segment spec: nothing left untyped
    assert spec.vas.extra_args() == {KEY: {"values": {str(shipped["default"]): 2.5}, "top_k": 7}}


def test_the_local_engine_writes_the_typed_vas_spec_into_extra_args():
    """SamplingSpec.vas reaches vLLM as the raw extra_args did, beside other extra_args."""
    from winnow.engine.vllm_local import VllmEngine

    engine = VllmEngine("/nonexistent/model")  # never started: only the sampling params
    wire = {KEY: {"values": {"/v": 2.0}, "top_k": 5}}
    typed = SamplingSpec(prompt="x", vas=VasSpec(values={"/v": 2.0}, top_k=5), extra_args={"k": 1})
    raw = SamplingSpec(prompt="x", extra_args={"k": 1, **wire})
    for spec in (typed, raw):
        params = engine._sampling_params(spec, stream=False)
        assert params.extra_args == {"k": 1, **wire}
    assert engine._sampling_params(SamplingSpec(prompt="x"), stream=False).extra_args is None


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
