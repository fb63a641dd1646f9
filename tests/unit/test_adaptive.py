"""adaptive: waves until the answer is settled, on the scripted fake engine with scripted rewards.

Tokens are characters on the fake engine (plus one EOS), and ``cycle_script`` hands out its texts
in order across calls, so each test scripts its waves exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
from collections.abc import Sequence

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.support.selection import LogitReward, TaggedReward
from winnow.engine.fake import FakeEngine, cycle_script
from winnow.metering.engine import MeteredEngine
from winnow.metering.rewards import MeteredRewards
from winnow.metering.usage import UsageMeter
from winnow.rewards.base import Reward
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings
from winnow.strategies import registry
from winnow.strategies.adaptive import adaptive
from winnow.strategies.base import GenerationRequest
from winnow.strategies.parts.stopping import (
    Stopping,
    Vote,
    mode_probability,
    next_wave,
    pseudo_counts,
    run_waves,
    verdict,
)

FIVE, SEVEN, EIGHT = "The answer is 5.", "The answer is 7.", "The answer is 8."
NONE = "I do not know."


def client_for(
    texts: Sequence[str], *rewards: Reward, engine: FakeEngine | None = None, **settings
) -> tuple[TestClient, FakeEngine]:
    engine = engine or FakeEngine(cycle_script(texts))
    reward_set = RewardSet({r.info.name: r for r in rewards} or {"tagged": TaggedReward()})
    app = create_app(Settings(**{"max_n": 64, **settings}), engine, reward_set)
    return TestClient(app), engine


def ask(client: TestClient, strategy: dict, n: int = 1, **extra) -> dict:
    body = {"prompt": "q", "max_tokens": 100, "n": n, "strategy": strategy, **extra}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def details(body: dict) -> dict:
    return body["winnow"]["details"]


def tokens(*texts: str) -> int:
    return sum(len(t) + 1 for t in texts)  # characters + EOS


# ---- the stopping rules, through the server -----------------------------------------------------


def test_a_wave_that_settles_the_answer_stops_after_one_engine_call():
    c, engine = client_for([FIVE])
    with c:
        body = ask(c, {"name": "adaptive"})
    assert body["choices"][0]["text"] == FIVE
    d = details(body)
    # 4 of 4 agree: P(leader is the mode) = 1 - 2^-5 under Dirichlet(5, 1)
    assert d["stopped"] == "confident" and d["waves"] == 1 and d["candidates"] == 4
    assert d["confidence"] == pytest.approx(1 - 2**-5)
    assert [call.n for call in engine.calls] == [4]
    usage = body["usage"]["winnow"]
    assert usage["engine_calls"] == 1 and usage["reward_calls"] == 0
    assert usage["generated_tokens"] == tokens(FIVE) * 4


def test_split_answers_go_on_to_max_n():
    c, engine = client_for([FIVE, SEVEN])
    with c:
        body = ask(c, {"name": "adaptive", "wave": 4, "max_n": 12})
    d = details(body)
    assert d["stopped"] == "max_n" and d["waves"] == 3 and d["wave_sizes"] == [4, 4, 4]
    assert d["candidates"] == 12 and d["leader_share"] == pytest.approx(0.5)
    assert [call.n for call in engine.calls] == [4, 4, 4]
    assert body["usage"]["winnow"]["generated_tokens"] == 6 * tokens(FIVE, SEVEN)


def test_dirichlet_stops_once_the_posterior_passes_confidence():
    # wave 1: 5, 7, 5, 7 (2:2); wave 2: four 5s (6:2); wave 3 would follow below 0.95
    texts = [FIVE, SEVEN, FIVE, SEVEN, FIVE, FIVE, FIVE, FIVE]
    expected = mode_probability(7.0, [3.0, 1.0])
    assert 0.9 < expected < 0.95  # so the default confidence goes on, 0.9 stops
    c, _engine = client_for(texts)
    with c:
        strict = details(ask(c, {"name": "adaptive", "max_n": 8}))
        loose = details(ask(c, {"name": "adaptive", "max_n": 8, "confidence": 0.9}))
    assert strict["stopped"] == "max_n" and strict["confidence"] == pytest.approx(expected)
    assert loose["stopped"] == "confident" and loose["waves"] == 2
    assert loose["confidence"] == pytest.approx(expected)


def test_unparsed_answers_count_against_the_leader():
    # 3 fives and 1 unparsed: Dirichlet(4, 1 + 1) -> 0.8125; without it, 4 vs 1 -> 0.9375
    c, _ = client_for([FIVE, FIVE, FIVE, NONE])
    with c:
        d = details(ask(c, {"name": "adaptive", "max_n": 4}))
    assert d["confidence"] == pytest.approx(mode_probability(4.0, [2.0])) == pytest.approx(0.8125)
    assert d["stopped"] == "max_n"


def test_agreement_stops_after_a_wave_that_agrees():
    texts = [FIVE, SEVEN, EIGHT, SEVEN] + [SEVEN] * 4 + [FIVE, SEVEN, EIGHT, NONE]
    c, engine = client_for(texts)
    with c:
        body = ask(c, {"name": "adaptive", "rule": "agreement", "max_n": 12})
    d = details(body)
    assert d["stopped"] == "wave_agreed" and d["waves"] == 2
    assert d["confidence"] is None and body["choices"][0]["text"] == SEVEN
    assert len(engine.calls) == 2


def test_agreement_needs_every_answer_of_the_wave_to_parse():
    texts = [NONE] * 4 + [FIVE] * 4
    c, _ = client_for(texts)
    with c:
        d = details(ask(c, {"name": "adaptive", "rule": "agreement", "max_n": 12}))
    assert d["stopped"] == "wave_agreed" and d["waves"] == 2  # the unparsed wave did not count


def test_weighted_rule_trusts_the_reward_where_counts_are_not_decisive():
    # 3 fives the reward trusts, 1 seven it does not: counts 3:1 (and the "anything else"
    # bucket) give 0.78 < 0.9; the weighted votes 3.86:0.14 give 0.93
    texts = ["The answer is 5. #ninetyfive"] * 3 + ["The answer is 7. #ten"]
    c, _ = client_for(texts)
    with c:
        plain = details(ask(c, {"name": "adaptive", "max_n": 4, "confidence": 0.9}))
        weighted = ask(
            c,
            {"name": "adaptive", "max_n": 8, "confidence": 0.9, "rule": "weighted",
             "reward": "tagged", "selection": "weighted_vote"},
        )  # fmt: skip
    assert plain["stopped"] == "max_n"
    d = details(weighted)
    share = 4 * 2.85 / 2.95
    assert d["stopped"] == "confident" and d["waves"] == 1
    assert d["confidence"] == pytest.approx(mode_probability(share + 1, [4 - share + 1, 1.0]))
    assert d["leader_share"] == pytest.approx(share / 4)
    assert weighted["usage"]["winnow"]["reward_calls"] == 1  # the one wave, scored once


def test_weighted_rule_reads_a_logit_reward_through_a_sigmoid():
    # raw logits would give negative votes; sigmoid(-1) = 0.27 each for the 7s, sigmoid(1) for
    # the 5: the 7s lead 3 * 0.27 : 0.73
    texts = ["The answer is 7. #minusone"] * 3 + ["The answer is 5. #plusone"]
    c, _ = client_for(texts, LogitReward())
    with c:
        body = ask(
            c,
            {"name": "adaptive", "max_n": 4, "rule": "weighted", "reward": "logit",
             "selection": "weighted_vote"},
        )  # fmt: skip
    d = details(body)
    p7, p5 = 1 / (1 + math.e), 1 / (1 + math.exp(-1))
    assert d["leader_share"] == pytest.approx(3 * p7 / (3 * p7 + p5))
    assert body["choices"][0]["text"] == texts[0]


def test_accept_stops_at_a_candidate_the_reward_trusts():
    texts = ["The answer is 5. #ten", "The answer is 7. #ninetyfive", "The answer is 8. #twenty",
             "The answer is 9. #thirty"]  # fmt: skip
    c, _engine = client_for(texts)
    with c:
        body = ask(c, {"name": "adaptive", "reward": "tagged", "accept": 0.9, "selection": "best"})
        below = details(
            ask(c, {"name": "adaptive", "reward": "tagged", "accept": 0.96, "max_n": 8})
        )
    d = details(body)
    assert d["stopped"] == "accepted" and d["waves"] == 1
    assert body["choices"][0]["text"] == texts[1]
    assert below["stopped"] == "max_n"


def test_min_n_holds_the_rule_back():
    c, _engine = client_for([FIVE])
    with c:
        d = details(ask(c, {"name": "adaptive", "wave": 2, "min_n": 6}))
    assert d["wave_sizes"] == [2, 2, 2] and d["stopped"] == "confident"


def test_client_n_gets_the_top_groups_and_at_least_n_answers_are_drawn():
    texts = [FIVE, FIVE, SEVEN]
    c, _engine = client_for(texts)
    with c:
        body = ask(c, {"name": "adaptive", "wave": 1, "max_n": 3}, n=2)
    assert [ch["text"] for ch in body["choices"]] == [FIVE, SEVEN]
    assert details(body)["candidates"] == 3  # no stop before 2 answers, and 2 fives: 0.875


def test_selection_at_the_end_scores_every_wave_in_one_reward_call():
    texts = ["The answer is 5. #ten", "The answer is 7. #ninety"] * 2 + [
        "The answer is 5. #twenty",
        "The answer is 7. #ninetyfive",
    ] * 2
    reward = TaggedReward()
    c, _ = client_for(texts, reward)
    with c:
        body = ask(
            c,
            {"name": "adaptive", "max_n": 8, "reward": "tagged", "selection": "weighted_vote",
             "return_candidates": True},
        )  # fmt: skip
    assert details(body)["waves"] == 2
    assert reward.calls == 1 and body["usage"]["winnow"]["reward_calls"] == 1
    assert body["choices"][0]["text"] == "The answer is 7. #ninetyfive"
    candidates = body["winnow"]["candidates"]
    assert [x["index"] for x in candidates] == list(range(8))  # numbered across waves
    assert {x["group"] for x in candidates} == {0, 1}  # grouped across waves
    assert sum(x["chosen"] for x in candidates) == 1 and candidates[5]["chosen"]  # first 0.95
    assert all(x["score"] is not None for x in candidates)


def test_waves_take_the_seeds_of_one_n_sample_call():
    c, engine = client_for([FIVE, SEVEN])
    with c:
        ask(c, {"name": "adaptive", "wave": 3, "max_n": 8}, seed=7)
        ask(c, {"name": "adaptive", "wave": 3, "max_n": 8})
    assert [(call.n, call.seed) for call in engine.calls] == [
        (3, 7), (3, 10), (2, 13), (3, None), (3, None), (2, None),
    ]  # fmt: skip


# ---- the token budget ---------------------------------------------------------------------------


def test_budget_caps_the_total_and_waves_shrink_to_what_it_can_pay_for():
    c, engine = client_for([FIVE, SEVEN])  # 17 tokens each, counted at max_tokens=100 ahead
    with c:
        body = ask(c, {"name": "adaptive", "max_n": 32, "budget": 350})
    d = details(body)
    assert d["stopped"] == "budget"
    # each wave: as many as (350 - generated) // 100 can pay for, at most 4; 5 and 7 alternate,
    # so the rule never stops it
    sizes, generated = [], 0
    while (k := min(4, (350 - generated) // 100)) > 0:
        sizes.append(k)
        generated += 17 * k
    assert d["wave_sizes"] == sizes == [call.n for call in engine.calls]
    assert body["usage"]["winnow"]["generated_tokens"] == generated <= 350


def test_budget_is_the_declared_token_budget_for_the_server_cap():
    c, _ = client_for([FIVE, SEVEN], max_request_tokens=1000)
    with c:
        r = c.post(
            "/v1/completions",
            json={"prompt": "q", "max_tokens": 100, "strategy": {"name": "adaptive"}},
        )
        assert r.status_code == 400 and "up to 3200 tokens" in r.json()["error"]["message"]
        body = ask(c, {"name": "adaptive", "max_n": 64, "budget": 1000})
    assert details(body)["stopped"] == "budget"
    assert body["usage"]["winnow"]["generated_tokens"] <= 1000


# ---- streaming and cancellation -----------------------------------------------------------------


def test_streams_the_chosen_answer_once_with_usage():
    c, _ = client_for([FIVE, SEVEN, SEVEN, SEVEN] + [SEVEN] * 4)
    payload = {
        "prompt": "q",
        "max_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},
        "strategy": {"name": "adaptive"},
    }
    with c, c.stream("POST", "/v1/completions", json=payload) as r:
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    texts = [ch["choices"][0]["text"] for ch in chunks if ch.get("choices")]
    assert texts == [SEVEN]
    usage = chunks[-1]["usage"]
    assert usage["winnow"]["engine_calls"] == 2
    assert usage["winnow"]["generated_tokens"] == 8 * tokens(SEVEN)  # 3:1, then 7:1 (0.977)
    assert usage["completion_tokens"] == tokens(SEVEN)


def _request(strategy: dict, **fields) -> GenerationRequest:
    _, params = registry.parse(strategy)
    request = GenerationRequest(prompt="q", prompt_text="q", max_tokens=100, params=params)
    for key, value in fields.items():
        setattr(request, key, value)
    params.check(request)
    return request


@pytest.mark.anyio
async def test_cancelling_aborts_the_wave_in_flight():
    engine = FakeEngine(cycle_script([FIVE]), delay=30)
    usage = UsageMeter()
    task = asyncio.ensure_future(
        adaptive(
            _request({"name": "adaptive"}),
            MeteredEngine(engine, usage),
            MeteredRewards(RewardSet({"tagged": TaggedReward()}), usage),
        )
    )
    for _ in range(200):
        await asyncio.sleep(0.01)
        if engine._running:
            break
    assert engine._running == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine._running == 0 and engine.aborted == 1
    assert len(engine.calls) == 1  # no further wave was started


def test_a_request_past_its_wall_time_aborts_its_wave():
    engine = FakeEngine(cycle_script([FIVE]), delay=5.0)
    c, _ = client_for([], engine=engine, request_timeout=0.3)
    with c:
        r = c.post("/v1/completions", json={"prompt": "q", "strategy": {"name": "adaptive"}})
        assert r.status_code == 504
        assert engine.aborted == 1 and engine._running == 0


# ---- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "extra", "param"),
    [
        ({"min_n": 9, "max_n": 8}, {}, "strategy.min_n"),
        ({"rule": "weighted"}, {}, "strategy.reward"),
        ({"selection": "best"}, {}, "strategy.reward"),
        ({"accept": 0.9}, {}, "strategy.reward"),
        ({"rule": "agreement", "wave": 1}, {}, "strategy.wave"),
        ({"confidence": 1.0}, {}, "strategy.confidence"),
        ({"confidence": 0.5}, {}, "strategy.confidence"),
        ({"accept": 0.0, "reward": "tagged"}, {}, "strategy.accept"),
        ({"wave": 0}, {}, "strategy.wave"),
        ({"rule": "sprt"}, {}, "strategy.rule"),
        ({"selection": "best_of_majority", "reward": "tagged"}, {}, "strategy.selection"),
        ({"budget": 99}, {}, "strategy.budget"),
        ({"budget": 150}, {"n": 2}, "strategy.budget"),
        ({"max_n": 2}, {"n": 3}, "n"),
        ({}, {"temperature": 0}, "temperature"),
        ({"n": 4}, {}, "strategy.n"),
    ],
)
def test_bad_parameters_are_400(strategy, extra, param):
    c, engine = client_for([FIVE])
    with c:
        body = {"prompt": "q", "max_tokens": 100, "strategy": {"name": "adaptive", **strategy}}
        r = c.post("/v1/completions", json={**body, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert engine.calls == []


def test_unknown_reward_is_a_400_before_any_sampling():
    c, engine = client_for([FIVE])
    with c:
        r = c.post(
            "/v1/completions",
            json={"prompt": "q", "strategy": {"name": "adaptive", "reward": "nope"}},
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_reward"
    assert engine.calls == []


def test_max_n_is_held_to_the_servers_max_n():
    c, _ = client_for([FIVE], max_n=16)
    with c:
        r = c.post("/v1/completions", json={"prompt": "q", "strategy": {"name": "adaptive"}})
    assert r.status_code == 400 and "--max-n" in r.json()["error"]["message"]


def test_strategies_endpoint_and_openapi_describe_adaptive():
    c, _ = client_for([FIVE])
    with c:
        data = {s["name"]: s for s in c.get("/v1/strategies").json()["data"]}
        doc = c.get("/openapi.json").json()
    entry = data["adaptive"]
    assert entry["streams_tokens"] is False and entry["description"].startswith("Sample in waves")
    props = entry["parameters"]["properties"]
    for name in ("wave", "min_n", "max_n", "rule", "confidence", "accept", "reward", "selection",
                 "budget", "return_candidates"):  # fmt: skip
        assert name in props, name
    assert "Dirichlet" in props["rule"]["description"]
    assert set(props["rule"]["enum"]) == {"dirichlet", "agreement", "weighted", "confidence"}
    variants = doc["components"]["schemas"]["CompletionRequest"]["properties"]["strategy"]["anyOf"]
    (schema,) = [v for v in variants if v.get("title") == "strategy adaptive"]
    assert schema["properties"]["name"]["const"] == "adaptive"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["confidence"]["exclusiveMaximum"] == 1.0


# ---- the pure decision code ---------------------------------------------------------------------


def _binomial_cdf_half(n: int, k: int) -> float:
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


@pytest.mark.parametrize(("a", "b"), [(1, 1), (2, 1), (5, 1), (3, 2), (10, 4), (20, 14), (33, 1)])
def test_two_answer_posterior_is_the_beta_closed_form(a, b):
    # P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) <= a - 1) for integers
    assert mode_probability(a, [b]) == pytest.approx(_binomial_cdf_half(a + b - 1, a - 1), abs=1e-9)


@pytest.mark.parametrize("alphas", [(4.3, 2.1, 1.0, 1.5), (1.5, 1.0, 1.0, 1.0), (12.7, 9.1, 3, 1)])
def test_many_answer_posterior_matches_sampling(alphas):
    draws = np.random.default_rng(0).gamma(np.array(alphas), size=(400_000, len(alphas)))
    sampled = float((draws[:, 0] > draws[:, 1:].max(axis=1)).mean())
    assert mode_probability(alphas[0], alphas[1:]) == pytest.approx(sampled, abs=3e-3)


def test_next_wave_respects_max_n_and_the_budget():
    s = Stopping(wave=4, max_n=10, budget=500, max_tokens=100)
    assert next_wave(s, 0, 0) == (4, None)
    assert next_wave(s, 8, 0) == (2, None)
    assert next_wave(s, 10, 0) == (0, "max_n")
    assert next_wave(s, 4, 250) == (2, None)
    assert next_wave(s, 4, 401) == (0, "budget")


def test_verdict_waits_for_min_n_and_reports_the_posterior():
    votes = [Vote(0)] * 4
    early = verdict(Stopping(min_n=8), votes, 4)
    assert not early.stop and early.confidence == pytest.approx(1 - 2**-5)
    assert verdict(Stopping(min_n=4), votes, 4).reason == "confident"
    assert verdict(Stopping(), [Vote(None)] * 4, 4).confidence == 0.0  # nothing parsed


def test_weighted_pseudo_counts_keep_the_number_of_votes():
    votes = [Vote(0, 0.9), Vote(0, 0.3), Vote(1, 0.6), Vote(None, 0.2), Vote(1, None)]
    counts, other = pseudo_counts(votes, weighted=True)
    assert counts[0] == pytest.approx(5 * 1.2 / 2.0) and counts[1] == pytest.approx(5 * 0.6 / 2.0)
    assert other == pytest.approx(0.5) and sum(counts.values()) + other == pytest.approx(5)
    assert pseudo_counts([Vote(0, 0.0), Vote(1, None)], weighted=True) == ({0: 1.0, 1: 1.0}, 0.0)


def test_run_waves_hands_every_draw_all_votes_so_far():
    stored = [Vote(0, tokens=10), Vote(1, tokens=10)] * 3 + [Vote(0, tokens=10)] * 8

    async def draw_from(drawn: list[int]):
        async def draw(k: int) -> list[Vote]:
            drawn.append(k)
            return stored[: sum(drawn)]

        return draw

    async def main() -> None:
        drawn: list[int] = []
        outcome = await run_waves(Stopping(wave=3, max_n=14), await draw_from(drawn))
        assert outcome.waves == drawn == [3, 3, 3, 3]
        assert outcome.reason == "confident" and outcome.generated == 120  # 9:3 -> 0.953
        assert len(outcome.votes) == 12

    asyncio.run(main())


# ---- the offline evaluation runs the same decisions as the server -------------------------------


def test_offline_evaluation_decides_as_the_strategy_does(tmp_path):
    from benchmarks.adaptive import offline
    from benchmarks.quality import run as quality
    from winnow.answers.groups import answers_and_groups

    tasks = ["add_sub_1digit", "mul_1digit"]
    items = quality.problem_set(argparse.Namespace(tasks=tasks, problems=4))
    scripts = []
    for k, problem in enumerate(items):
        gold, wrong = problem.answer, f"{problem.answer}1"
        if k == 0:  # settles in one wave
            texts = [f"The answer is {gold}."] * 32
        elif k == 1:  # split to the end
            texts = [f"The answer is {gold}.", f"The answer is {wrong}."] * 16
        elif k == 2:  # all different first, then settles
            texts = [f"The answer is {i}{gold}." for i in range(1, 5)]
            texts += [f"The answer is {gold}."] * 28
        else:  # nothing parses
            texts = ["no idea"] * 32
        scripts.append(texts)
    journal = tmp_path / "rows.jsonl"
    with journal.open("w") as f:
        for k, (problem, texts) in enumerate(zip(items, scripts, strict=True)):
            answers, groups = answers_and_groups(texts)
            cands = [
                {"index": i, "text": t, "score": (i % 10) / 10, "answer": a, "group": g,
                 "finish_reason": "stop", "tokens": len(t) + 1, "chosen": False}
                for i, (t, a, g) in enumerate(zip(texts, answers, groups, strict=True))
            ]  # fmt: skip
            row = {"i": k, "question": problem.question, "body": {"winnow": {"candidates": cands}}}
            f.write(json.dumps(row) + "\n")
    # the server on the same answers, wave by wave
    drawn, tokens_used, right, served = [], [], [], []
    for problem, texts in zip(items, scripts, strict=True):
        c, _ = client_for(texts)
        with c:
            body = ask(c, {"name": "adaptive", "return_candidates": True}, max_tokens=96)
        drawn.append(details(body)["candidates"])
        tokens_used.append(body["usage"]["winnow"]["generated_tokens"])
        right.append(body["choices"][0]["text"] == f"The answer is {problem.answer}.")
        served.append(
            {"question": problem.question, "correct": right[-1], "usage": body["usage"]["winnow"]}
        )
    raw = tmp_path / "served.raw.json"  # compare.py's raw rows for one label
    raw.write_text(json.dumps({"adaptive": served}))
    out = tmp_path / "adaptive"
    served_args = ["--given", "{}", "--served", str(raw), "adaptive"]
    offline.main(["--rows", str(journal), "--out", str(out), "--problems", "4", *served_args])
    summary = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").exists()
    default = summary["adaptive"][0]
    assert summary["given"]["accuracy"] == default["accuracy"]  # "{}" is the default
    assert summary["served"]["same_verdict"] == 4 and summary["served"]["same_tokens"] == 4
    assert "fixed in advance" in out.with_suffix(".md").read_text()
    assert drawn == [4, 32, 12, 32]  # 4 of 4; split; 4 + 4 + 4 (8 of 12 agree); nothing parses
    assert default["mean_drawn"] == pytest.approx(statistics.fmean(drawn))
    assert default["tokens"] == pytest.approx(statistics.fmean(tokens_used))
    assert default["accuracy"] == pytest.approx(statistics.fmean(right))
    assert default["stopped"] == {"confident": 2, "max_n": 2}
