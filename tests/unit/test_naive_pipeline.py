"""The naive client-side best-of-N pipeline (a load-generator client kind) against the fake
engine app with a scripted reward, on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.support.serving import LiveServer, serve_in_thread
from winnow.cli import main as cli_main
from winnow.clients import report
from winnow.clients.loadgen import BenchConfig, run_benchmark
from winnow.clients.naive import candidate_body, naive_best_of_n, reward_item
from winnow.clients.prompts import BenchPrompt
from winnow.engine.fake import FakeEngine
from winnow.rewards.base import OutcomeItem, Reward, RewardInfo, Scored
from winnow.rewards.registry import RewardSet

SCORES = {"low": 0.1, "mid": 0.5, "top": 0.9, "high": 0.7}
TEXTS = ["answer A #low", "answer B #top", "answer C #mid", "answer D #high"]


class TagReward(Reward):
    """Scores a response by the word after its last '#'; counts the calls it gets."""

    def __init__(self) -> None:
        self.calls = 0
        self.items = 0

    @property
    def info(self) -> RewardInfo:
        return RewardInfo("tagged", "outcome", "test", "the #tag")

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        self.calls += 1
        self.items += len(items)
        tags = [i.response.rsplit("#", 1)[-1].strip() for i in items]
        return Scored([SCORES.get(t, 0.0) for t in tags], tokens=3 * len(items))


def per_prompt_cycle(texts: Sequence[str]) -> Callable[[str, int, object], str]:
    """Hands out ``texts`` in turn *per prompt*: the n completions of one prompt get n distinct
    texts however the requests of concurrent prompts interleave."""
    handed: Counter[str] = Counter()

    def script(prompt: str, index: int, spec: object) -> str:
        handed[prompt] += 1
        return texts[(handed[prompt] - 1) % len(texts)]

    return script


@pytest.fixture(scope="module")
def scored_server() -> Iterator[LiveServer]:
    """The app on a FakeEngine that hands out TEXTS in turn, with the ``tagged`` reward."""
    from winnow.server.app import create_app
    from winnow.settings import Settings

    engine = FakeEngine(per_prompt_cycle(TEXTS), delay=0.01)
    reward = TagReward()
    app = create_app(
        Settings(api_key="k", request_timeout=30), engine, RewardSet({"tagged": reward})
    )
    with serve_in_thread(app, engine=engine, rewards=reward, api_key="k") as server:
        yield server


def test_candidate_bodies_and_reward_items():
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "n": 8, "seed": 5,
            "stream": True, "stream_options": {"include_usage": True},
            "temperature": 0.7}  # fmt: skip
    first, third = candidate_body(body, 0), candidate_body(body, 2)
    assert first == {"model": "m", "messages": body["messages"], "seed": 5, "temperature": 0.7}
    assert third["seed"] == 7 and "n" not in third and "stream" not in third
    assert "seed" not in candidate_body({"prompt": "p"}, 3)
    assert reward_item(body, "r") == {"messages": body["messages"], "response": "r"}
    assert reward_item({"prompt": "p"}, "r") == {"prompt": "p", "response": "r"}


def test_pipeline_sends_n_requests_and_keeps_the_best_scored(scored_server: LiveServer):
    engine, reward = scored_server.engine, scored_server.rewards
    calls_before, reward_calls_before = len(engine.calls), reward.calls
    base = scored_server.base_url

    async def go():
        async with httpx.AsyncClient() as http:
            return await naive_best_of_n(
                http, base + "/completions", base + "/rewards",
                {"prompt": "2 + 2 =", "max_tokens": 40, "temperature": 0.7}, n=4,
                reward="tagged", headers={"Authorization": "Bearer k"},
            )  # fmt: skip

    outcome = asyncio.run(go())
    texts = [c.text for c in outcome.candidates]
    assert sorted(texts) == sorted(TEXTS)  # four separate requests, one text each
    assert texts[outcome.chosen] == "answer B #top"
    assert outcome.scores[outcome.chosen] == pytest.approx(0.9)
    new_calls = engine.calls[calls_before:]
    assert len(new_calls) == 4 and all(spec.n == 1 for spec in new_calls)
    assert reward.calls - reward_calls_before == 4  # one reward request per candidate
    assert outcome.reward_calls == 4 and outcome.reward_tokens == 12
    assert all(
        c.completion_tokens == len(t) + 1 for c, t in zip(outcome.candidates, texts, strict=True)
    )


def _cfg(server: LiveServer, **kw) -> BenchConfig:
    base = {"base_url": server.base_url, "api_key": server.api_key, "progress": False,
            "client": "naive_best_of_n", "naive_n": 4, "reward": "tagged", "stream": False,
            "max_tokens": 40, "temperature": 0.7}  # fmt: skip
    return BenchConfig(**{**base, **kw})


def test_run_counts_every_candidate_and_reward_call(scored_server: LiveServer):
    prompts = [BenchPrompt(f"question {i}") for i in range(3)]
    run = asyncio.run(run_benchmark(_cfg(scored_server, endpoint="chat"), prompts))
    m = run.metrics
    assert (m.completed, m.failed) == (3, 0), [r.error for r in run.results]
    per_prompt = sum(len(t) + 1 for t in TEXTS)  # characters + EOS: every text once per prompt
    assert m.winnow is not None
    assert m.winnow["engine_calls"] == 12 and m.winnow["reward_calls"] == 12
    assert m.winnow["generated_tokens"] == 3 * per_prompt
    assert m.winnow["discarded_tokens"] == 3 * per_prompt - m.total_output_tokens
    for r in run.results:
        assert not r.streamed and r.ttft == r.e2el > 0 and r.tpot is None
        assert r.output_tokens == len("answer B #top") + 1  # the chosen one (one text each)
    assert "Generated tokens" in report.format_table(run)


def test_max_concurrency_caps_whole_pipelines(scored_server: LiveServer):
    prompts = [BenchPrompt(f"q{i}") for i in range(4)]
    run = asyncio.run(run_benchmark(_cfg(scored_server, max_concurrency=1), prompts))
    assert run.metrics.completed == 4
    spans = sorted((r.start, r.start + r.e2el) for r in run.results)
    assert all(nxt[0] >= prev[1] - 1e-3 for prev, nxt in itertools.pairwise(spans))


def test_failures_are_results(scored_server: LiveServer):
    prompts = [BenchPrompt("q")]
    unknown = asyncio.run(run_benchmark(_cfg(scored_server, reward="nope"), prompts))
    assert unknown.metrics.failed == 1 and "nope" in unknown.results[0].error
    bad_key = replace(_cfg(scored_server), reward_api_key="wrong")
    run = asyncio.run(run_benchmark(bad_key, prompts))
    assert run.metrics.failed == 1 and "401" in run.results[0].error
    with pytest.raises(ValueError, match="not streamed"):
        _cfg(scored_server, stream=True)
    with pytest.raises(ValueError, match="client"):
        BenchConfig(client="nope")  # type: ignore[arg-type]


def test_cli_runs_the_naive_pipeline(scored_server: LiveServer, tmp_path: Path, capsys):
    out = tmp_path / "naive.json"
    args = ["bench", "serve", "--base-url", scored_server.base_url, "--api-key", "k",
            "--client", "naive_best_of_n", "--naive-n", "2", "--reward", "tagged",
            "--reward-base-url", scored_server.base_url, "--endpoint", "chat",
            "--task", "add_sub_1digit", "--num-prompts", "3", "--max-tokens", "40",
            "--temperature", "0.7", "--max-concurrency", "2", "--goodput", "e2el:10000",
            "--result-file", str(out), "--disable-tqdm"]  # fmt: skip
    assert cli_main(args) == 0
    assert "(no stream)" in capsys.readouterr().out  # the naive kind is not streamed by default
    result = json.loads(out.read_text())
    assert result["completed"] == 3 and result["stream"] is False
    assert (result["client"], result["naive_n"], result["reward"]) == (
        "naive_best_of_n",
        2,
        "tagged",
    )
    assert result["winnow_usage"]["engine_calls"] == 6
    assert result["winnow_usage"]["reward_calls"] == 6
    assert result["request_goodput"] > 0
    assert all(not r["streamed"] for r in result["requests"])
    assert cli_main([*args[:-3], "--stream", "--disable-tqdm"]) == 2  # streaming refused


def test_help_documents_metrics_kinds_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "serve", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--request-rate", "--burstiness", "--max-concurrency", "--num-warmups",
                   "--num-prompts", "--prompts-file", "--task", "--extra-body", "--goodput",
                   "--rate-sweep", "--result-file", "--disable-tqdm", "--client", "TTFT", "ITL",
                   "TPOT", "E2EL", "naive_best_of_n"):  # fmt: skip
        assert needle in text, needle


def test_sequential_pipeline_sends_one_call_at_a_time(scored_server: LiveServer):
    """The for-loop client: each of its n completions waits for the last, so a request lasts at
    least n times the fake's delay per completion (all at once it would take about one)."""
    prompts = [BenchPrompt("q")]
    seq = asyncio.run(run_benchmark(_cfg(scored_server, naive_sequential=True), prompts))
    (r,) = seq.results
    assert r.success, r.error
    assert r.winnow is not None and r.winnow["engine_calls"] == 4 and r.winnow["reward_calls"] == 4
    assert r.e2el >= 4 * scored_server.engine.delay
    assert r.output_tokens == len("answer B #top") + 1  # the same choice as all at once
    assert "sequential" in report.format_table(seq)
    assert report.to_json(seq)["naive_sequential"] is True
