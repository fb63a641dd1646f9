"""A reward that knows where it applies (#31): the domain head's distance (a ReLU head the tap can
run), its calibrated threshold, and the verdict a probe reward's scores carry per prompt, read
from the engine's tap or from the backbone's re-encoding of the prompt."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from tests.support.tiny_lm import tiny_lm
from winnow.heads.domain import DOMAIN_DIR, load_domain, read_domain_meta
from winnow.heads.probe import save_head
from winnow.rewards.backbone import Backbone
from winnow.rewards.base import OutcomeItem, Tapped
from winnow.rewards.probe import ProbeReward
from winnow.train.domain import fit_domain, ledoit_wolf


def _gaussian(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 3.0, dim)
    return torch.randn(n, dim, generator=g) * scales + shift


def test_ledoit_wolf_shrinks_more_with_fewer_rows() -> None:
    few, many = _gaussian(10, 32, 0), _gaussian(2000, 32, 0)
    assert ledoit_wolf(few)[2] > ledoit_wolf(many)[2]
    mean = ledoit_wolf(many)[0]
    assert torch.allclose(mean.float(), many.mean(0), atol=1e-5)
    assert bool(torch.linalg.eigvalsh(ledoit_wolf(few)[1]).min() > 0)  # invertible


def test_the_domain_head_computes_the_whitened_l1_distance_and_calibrates_its_threshold(
    tmp_path: Path,
) -> None:
    train, held = _gaussian(400, 16, 0), _gaussian(200, 16, 1)
    domain = fit_domain(tmp_path, train, held, quantile=0.9)
    meta = read_domain_meta(tmp_path)
    assert meta is not None and meta.calibrated_on == "held-out" and meta.held_prompts == 200
    # the stored MLP is the distance: mean |(h - mu) W| with W the inverse square root
    mean, cov, _ = ledoit_wolf(train)
    values, vectors = torch.linalg.eigh(cov)
    w = (vectors * values.rsqrt()) @ vectors.T
    probe = _gaussian(5, 16, 7, shift=0.5)
    expected = ((probe.double() - mean) @ w).abs().mean(1)
    assert domain.distances(probe) == pytest.approx(expected.tolist(), rel=1e-4)
    # about 0.8 in the domain (E|N(0,1)| = 0.798), the threshold near the held-out 0.9 quantile
    fresh = domain.distances(_gaussian(1000, 16, 2))
    assert 0.7 < sum(fresh) / len(fresh) < 0.95
    inside = sum(domain.verdict(d).in_domain for d in fresh) / len(fresh)
    assert 0.8 < inside < 0.97
    far = domain.distances(_gaussian(100, 16, 3, shift=2.0))
    assert not any(domain.verdict(d).in_domain for d in far)
    verdict = domain.verdict(far[0])
    assert verdict.threshold == meta.threshold and verdict.distance == far[0]


def test_without_held_out_questions_the_threshold_is_the_training_ones(tmp_path: Path) -> None:
    fit_domain(tmp_path, _gaussian(50, 8, 0), None)
    meta = read_domain_meta(tmp_path)
    assert meta is not None and meta.calibrated_on == "train" and "held-out" not in meta.distances
    with pytest.raises(ValueError, match="at least two"):
        fit_domain(tmp_path, _gaussian(1, 8, 0), None)


# ---- the probe reward's verdicts ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_lm(tmp_path_factory.mktemp("tiny") / "lm")


def _probe_with_domain(root: Path, model: Path, prompts: list[str]) -> Path:
    """A linear probe on the tiny model, with a domain fitted on ``prompts``' last states."""
    backbone = Backbone(model)
    probe = root / "probe"
    save_head(probe, {"weight": torch.ones(backbone.hidden_size), "bias": torch.zeros(1)},
              {"kind": "outcome", "layer": -1, "output": "sigmoid"})  # fmt: skip
    encoded = backbone.encode_sequences([backbone.encode_prompt(p) for p in prompts])
    states = torch.stack([e.hidden[-1] for e in encoded])
    fit_domain(probe, states[: len(prompts) // 2], states[len(prompts) // 2 :], quantile=1.0)
    return probe


def _prompt(question: str) -> str:
    return f"<user>{question}\n<assistant>"


def test_a_probe_reward_reports_each_prompts_domain(tmp_path: Path, tiny: Path) -> None:
    inside = [_prompt(f"Calculate {a} + {b}.") for a in range(6) for b in range(4)]
    probe = _probe_with_domain(tmp_path, tiny, inside)
    reward = ProbeReward("p", probe, Backbone(tiny))
    asyncio.run(reward.start())
    assert reward.tap_heads(str(tiny)) == (
        str(probe.resolve()),
        str((probe / DOMAIN_DIR).resolve()),
    )
    assert reward.info.extra["domain"]["quantile"] == 1.0  # type: ignore[index]
    outside = _prompt("Write a haiku about the sea, in French, with no numbers!")
    items = [OutcomeItem(inside[0], "3"), OutcomeItem(inside[0], "4"), OutcomeItem(outside, "x")]
    scored = asyncio.run(reward.score(items))
    assert scored.domain is not None and len(scored.domain) == 3
    assert scored.domain[0] == scored.domain[1]
    assert scored.domain[0].in_domain and not scored.domain[2].in_domain
    assert scored.domain[2].distance > scored.domain[0].distance
    # the same distance as the domain head on the backbone's state of the prompt
    domain = load_domain(probe)
    assert domain is not None
    backbone = Backbone(tiny)
    state = backbone.encode_sequences([backbone.encode_prompt(outside)])[0].hidden[-1:]
    assert scored.domain[2].distance == pytest.approx(domain.distances(state)[0], rel=1e-4)


def test_the_domain_is_read_from_the_engines_tap_when_it_saw_the_prompt(
    tmp_path: Path, tiny: Path
) -> None:
    prompts = [_prompt(f"Calculate {a} * {b}.") for a in range(5) for b in range(4)]
    probe = _probe_with_domain(tmp_path, tiny, prompts)
    reward = ProbeReward("p", probe, Backbone(tiny))
    asyncio.run(reward.start())
    ids = tuple(reward.backbone.encode_prompt(prompts[0]))
    head = str((probe / DOMAIN_DIR).resolve())
    tap = Tapped(ids, (5, 6), {head: [1234.5, None, None]})
    verdicts, tokens = asyncio.run(reward.domain_of([prompts[0]], [tap]))
    assert tokens == 0 and verdicts is not None
    assert verdicts[0].distance == 1234.5 and not verdicts[0].in_domain
    # a tap of other prompt tokens is not trusted: the prompt is encoded
    other = Tapped((*ids, 7), (5,), {head: [1234.5]})
    verdicts, tokens = asyncio.run(reward.domain_of([prompts[0]], [other]))
    assert tokens == len(ids) and verdicts is not None and verdicts[0].in_domain


def test_a_probe_without_a_domain_head_says_nothing(tmp_path: Path, tiny: Path) -> None:
    probe = tmp_path / "plain"
    save_head(probe, {"weight": torch.ones(32), "bias": torch.zeros(1)}, {"kind": "outcome"})
    reward = ProbeReward("p", probe, Backbone(tiny))
    asyncio.run(reward.start())
    assert reward.tap_heads(str(tiny)) == (str(probe.resolve()),)
    scored = asyncio.run(reward.score([OutcomeItem(_prompt("q"), "a")]))
    assert scored.domain is None and "domain" not in reward.info.extra


def test_post_rewards_reports_the_domain_per_item(tmp_path: Path, tiny: Path) -> None:
    from fastapi.testclient import TestClient

    from winnow.engine.fake import FakeEngine
    from winnow.rewards.configs import ProbeConfig, VerifierConfig
    from winnow.rewards.registry import build_rewards
    from winnow.server.app import create_app
    from winnow.settings import Settings

    inside = [_prompt(f"Calculate {a} + {b}.") for a in range(6) for b in range(4)]
    probe = _probe_with_domain(tmp_path, tiny, inside)
    rewards = build_rewards(
        [ProbeConfig(name="p", path=str(probe)), VerifierConfig(name="verifier")],
        default_model_dir=str(tiny),
    )
    with TestClient(create_app(Settings(), FakeEngine(), rewards)) as client:
        far = _prompt("Tell me about whales, at length!")
        items = [{"prompt": inside[1], "response": "4"}, {"prompt": far, "response": "no"}]
        body = client.post("/v1/rewards", json={"reward": "p", "items": items}).json()
        first, second = (d["domain"] for d in body["data"])
        assert first["in_domain"] and not second["in_domain"]
        assert first["threshold"] == second["threshold"] and second["distance"] > first["distance"]
        plain = client.post(
            "/v1/rewards",
            json={
                "reward": "verifier",
                "items": [{"prompt": "q", "response": "4", "reference": "4"}],
            },
        ).json()
        assert plain["data"][0]["domain"] is None
        card = next(r for r in client.get("/v1/rewards").json()["data"] if r["name"] == "p")
        assert card["extra"]["domain"]["calibrated_on"] == "held-out"


def test_a_request_can_ask_the_domain_without_scoring(tmp_path: Path, tiny: Path) -> None:
    """The hook a strategy uses before it picks (MeteredRewards.domain_of): verdicts, their
    encoding counted in the request's usage; None from a reward without a domain."""
    from winnow.metering.rewards import MeteredRewards
    from winnow.metering.usage import UsageMeter
    from winnow.rewards.registry import RewardSet
    from winnow.rewards.verifier import VerifierReward

    inside = [_prompt(f"Calculate {a} - {b}.") for a in range(6) for b in range(4)]
    probe = _probe_with_domain(tmp_path, tiny, inside)
    reward = ProbeReward("p", probe, Backbone(tiny))
    asyncio.run(reward.start())
    usage = UsageMeter()
    metered = MeteredRewards(RewardSet({"p": reward, "verifier": VerifierReward()}), usage)
    verdicts = asyncio.run(metered.domain_of("p", [inside[0], _prompt("Sing!")]))
    assert verdicts is not None and [v.in_domain for v in verdicts] == [True, False]
    assert usage.reward_tokens > 0 and usage.reward_calls == 1
    assert asyncio.run(metered.domain_of("verifier", [inside[0]])) is None
