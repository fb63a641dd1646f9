"""tree_search (unit): beam search, DVTS and early rejection.

On the scripted fake engine (tokens are characters) with a scripted process reward: every step
written by the fake carries a tag "vNN" and the reward scores that step NN/100, so which beams
survive is known in advance (the reward and the step tables BEAM and LONG: tests/support/tree.py).
End to end on the real engine: tests/engine/test_tree_search.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import pytest
from fastapi.testclient import TestClient

from tests.support.tree import BEAM, LONG, StepTags, continuing, generated, scripted
from winnow.engine.base import Generation, SamplingSpec
from winnow.engine.fake import FakeEngine
from winnow.metering.engine import MeteredEngine
from winnow.metering.rewards import MeteredRewards
from winnow.metering.usage import UsageMeter
from winnow.rewards.base import OutcomeItem, Reward, RewardInfo, Scored
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings
from winnow.strategies.base import GenerationRequest
from winnow.strategies.registry import StrategyError
from winnow.strategies.tree_search import TreeSearchParams, tree_search

PROMPT = "<user>Q<assistant>"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingFake(FakeEngine):
    """The fake, also recording how many tokens each call generated."""

    def __init__(self, script: Callable[[str, int, SamplingSpec], str], **kw) -> None:
        super().__init__(script, **kw)
        self.produced: list[int] = []

    async def generate(self, spec: SamplingSpec) -> Generation:
        generation = await super().generate(spec)
        self.produced.append(generation.generated_tokens)
        return generation


def request_for(params: dict, *, n: int = 1, max_tokens: int = 200, **kw) -> GenerationRequest:
    return GenerationRequest(
        prompt=tuple(ord(c) for c in PROMPT),
        prompt_text=PROMPT,
        n=n,
        max_tokens=max_tokens,
        temperature=kw.pop("temperature", 0.8),
        params=TreeSearchParams.model_validate({"reward": "prm", **params}),
        **kw,
    )


@pytest.mark.anyio
async def search(engine: FakeEngine, reward: Reward, params: dict, **kw):
    request = request_for(params, **kw)
    request.params.check(request)
    usage = UsageMeter()
    result = await tree_search(
        request, MeteredEngine(engine, usage), MeteredRewards(RewardSet({"prm": reward}), usage)
    )
    return request, result, usage


def prompts(engine: FakeEngine) -> list[str]:
    return [generated("".join(chr(t) for t in c.prompt)) for c in engine.calls]


# ---- beam search ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_beam_keeps_top_n_over_m_and_expands_each_m_times():
    engine, reward = CountingFake(scripted(BEAM)), StepTags()
    request, result, usage = await search(engine, reward, {"n": 4, "beam_width": 2})
    # round 0: one call, n=N from the prompt; then one call per kept beam, n=M each
    assert [c.n for c in engine.calls] == [4, 2, 2, 2, 2]
    assert prompts(engine) == [
        "",
        "a v90\n\n",
        "d v70\n\n",  # top N/M = 2 of a(.9) b(.1) c(.5) d(.7)
        "a v90\n\nf v80\n\n",  # children: af(.8) ae(.6) df(.8) de(.6): ties keep the older
        "d v70\n\nf v80\n\n",
    ]
    assert all(c.stop == ("\n\n",) and c.include_stop_str_in_output for c in engine.calls[:3])
    # every prefix of a round in ONE reward call: N items each
    assert [len(items) for items in reward.calls] == [4, 4, 4]
    assert reward.calls[1][1].steps == ("a v90\n\n", "f v80\n\n")
    assert not any(i.partial for items in reward.calls for i in items)
    details = result.details
    assert details["rounds"] == 3
    assert details["expansions"] == 12
    assert details["pruned"] == 4  # 2 of 4 in rounds 0 and 1; round 2 all finished
    assert details["survivors"] == [2, 2, 0]
    assert details["finished"] == 4
    (choice,) = result.choices
    assert choice.text in ("a v90\n\nf v80\n\nThe answer is 5. v95",)
    assert choice.score == pytest.approx(0.95)
    assert choice.finish_reason == "stop"
    assert choice.token_ids == [*map(ord, choice.text), 0]  # ids = the text's, then EOS
    # accounting: every token the engine produced, kept or not; within the advertised budget
    assert usage.generated_tokens == sum(engine.produced) > len(choice.token_ids)
    assert usage.engine_calls == len(engine.calls) == 5
    assert usage.reward_calls == 3
    assert usage.generated_tokens <= request.params.token_budget(request)


@pytest.mark.parametrize(("how", "kept", "score"), [("last", "b v30", 0.99), ("min", "a v90", 0.5)])
@pytest.mark.anyio
async def test_aggregation_decides_which_beams_survive(how, kept, score):
    table = {
        0: ["a v90\n\n", "b v30\n\n", "c v20\n\n", "d v10\n\n"],
        1: ["x v50\n\n", "x v50\n\n", "y v80\n\n", "y v80\n\n"],  # a's children, then b's
        2: ["The answer is 1. v99"],
    }
    engine = CountingFake(scripted(table, counter=True))
    _, result, _ = await search(engine, StepTags(), {"n": 4, "beam_width": 2, "aggregation": how})
    # last: b-y (.8) beats a-x (.5); min: a-x (min .5) beats b-y (min .3)
    assert all(p.startswith(kept) for p in prompts(engine)[-2:])
    assert result.choices[0].score == pytest.approx(score)


class UnscoredTags(StepTags):
    """The vNN tags; a step tagged "vNA" gets no score (NaN)."""

    @staticmethod
    def tag(text: str) -> float:
        return math.nan if "vNA" in text else StepTags.tag(text)


@pytest.mark.anyio
async def test_an_unscored_step_prunes_its_beam_wherever_it_is():
    table = {
        0: ["a v90\n\n", "b v50\n\n", "c v20\n\n", "d v10\n\n"],
        1: ["x vNA\n\n", "x vNA\n\n", "y v40\n\n", "y v40\n\n"],  # a's children, then b's
        2: ["The answer is 1. v99"],
    }
    engine = CountingFake(scripted(table, counter=True))
    params = {"n": 4, "beam_width": 2, "aggregation": "min"}
    _, result, _ = await search(engine, UnscoredTags(), params)
    # min(0.9, NaN) was 0.9 (NaN compares False), so a-x (unscored) beat b-y (0.4)
    assert all(p.startswith("b v50\n\ny v40") for p in prompts(engine)[-2:])
    assert result.choices[0].score == pytest.approx(0.4)


class LogitTags(StepTags):
    """The vNN tags on a logit scale: (NN - 50) / 10."""

    def __init__(self, name: str = "prm", kind: str = "process") -> None:
        super().__init__(name, kind)
        self._info = RewardInfo(name, kind, "test", "raw logit")  # type: ignore[arg-type]

    @staticmethod
    def tag(text: str) -> float:
        return (StepTags.tag(text) * 100 - 50) / 10


@pytest.mark.anyio
async def test_weighted_vote_over_beams_reads_logits_as_probabilities():
    table = {0: ["The answer is 3. v30", "The answer is 4. v40", "The answer is 4. v40",
                 "The answer is 4. v40"]}  # fmt: skip
    engine = CountingFake(scripted(table))
    _, result, _ = await search(
        engine, LogitTags(), {"n": 4, "beam_width": 2, "selection": "weighted_vote"}
    )
    # raw sums: 4 has 3 * -1 = -3 and lost to 3's -2; as probabilities 0.81 beats 0.12
    assert result.choices[0].text == "The answer is 4. v40"
    assert result.choices[0].score == pytest.approx(-1.0)


@pytest.mark.anyio
async def test_finished_beams_leave_the_search():
    table = {
        0: ["The answer is 3. v20", "a v90\n\n", "b v80\n\n", "c v70\n\n"],
        1: ["The answer is 7. v60"],
    }
    engine, reward = CountingFake(scripted(table)), StepTags()
    _, result, _ = await search(engine, reward, {"n": 4, "beam_width": 2})
    # the finished child is not a parent; the top 2 of the 3 others are, refilled to N=4
    assert prompts(engine) == ["", "a v90\n\n", "b v80\n\n"]
    assert [c.n for c in engine.calls] == [4, 2, 2]
    assert result.details["finished"] == 5  # 1 + 4: the search stops once N have finished
    assert result.details["pruned"] == 1
    assert result.choices[0].text == "a v90\n\nThe answer is 7. v60"


@pytest.mark.anyio
async def test_a_stated_final_answer_ends_a_beam_and_a_long_step_is_cut():
    first = ["The answer is 2.\n\nand more v50\n\n", "x" * 40]

    def script(prompt: str, index: int, spec: SamplingSpec) -> str:
        return first[index] if not generated(prompt) else "The answer is 9."

    engine = CountingFake(script)
    _, result, _ = await search(
        engine, StepTags(), {"n": 2, "beam_width": 2, "step_tokens": 20, "return_candidates": True}
    )
    texts = [c["text"] for c in result.candidates]
    assert texts[0] == "The answer is 2.\n\n"  # finished at its answer: nothing more sampled
    assert texts[1:] == ["x" * 20 + "The answer is 9."] * 2  # cut at step_tokens, new step
    assert [spec.max_tokens for spec in engine.calls] == [20, 20]


@pytest.mark.anyio
async def test_max_depth_last_round_runs_to_the_end():
    table = {0: ["a v50\n\n"], 1: ["b v50\n\nc v50\n\nThe answer is 1."]}
    engine = CountingFake(scripted(table))
    _, result, _ = await search(engine, StepTags(), {"n": 2, "beam_width": 2, "max_depth": 2})
    assert engine.calls[-1].stop == ()  # no step delimiter in the last round
    assert result.choices[0].text == "a v50\n\nb v50\n\nc v50\n\nThe answer is 1."


@pytest.mark.anyio
async def test_total_max_tokens_ends_beams_with_length():
    engine = CountingFake(lambda prompt, index, spec: "a" * 30 + "\n\n")
    _, result, usage = await search(engine, StepTags(), {"n": 2, "beam_width": 2}, max_tokens=70)
    (choice,) = result.choices
    assert choice.finish_reason == "length"
    assert len(choice.token_ids) == 70
    assert [c.max_tokens for c in engine.calls] == [70, 38, 6]
    assert usage.generated_tokens == sum(engine.produced)


@pytest.mark.anyio
async def test_weighted_vote_over_finished_beams():
    table = {0: ["The answer is 3. v90", "The answer is 4. v60", "The answer is 4. v50", "z\n\n"],
             1: ["The answer is 5. v10"]}  # fmt: skip
    engine = CountingFake(scripted(table))
    _, result, _ = await search(
        engine, StepTags(), {"n": 4, "beam_width": 2, "selection": "weighted_vote"}
    )
    assert result.choices[0].text == "The answer is 4. v60"  # 4: 1.1 beats 3: 0.9


@pytest.mark.anyio
async def test_outcome_reward_scores_prefixes():
    engine, reward = CountingFake(scripted(BEAM)), StepTags("orm", "outcome")
    request = request_for({"n": 4, "beam_width": 2, "reward": "orm", "aggregation": "min"})
    usage = UsageMeter()
    result = await tree_search(
        request, MeteredEngine(engine, usage), MeteredRewards(RewardSet({"orm": reward}), usage)
    )
    assert not reward.calls and len(reward.outcome_calls) == 3
    assert reward.outcome_calls[1][0].response == "a v90\n\ne v60\n\n"  # the prefix as text
    assert result.choices[0].score == pytest.approx(0.8)  # a(.9) f(.8) 5(.95): min .8


class Lowest(StepTags):
    """An outcome reward that prefers the answer the step tags rank last (1 - its last tag)."""

    def __init__(self) -> None:
        super().__init__("orm", "outcome")

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        self.outcome_calls.append(list(items))
        return Scored([1 - self.tag(i.response) for i in items], tokens=len(items))


@pytest.mark.parametrize("mode", ["beam", "dvts"])
@pytest.mark.anyio
async def test_final_reward_rescores_the_finished_beams_and_picks_by_it(mode):
    engine, prm, orm = CountingFake(scripted(BEAM)), StepTags(), Lowest()
    params = {"n": 4, "beam_width": 2, "mode": mode, "final_reward": "orm"}
    request = request_for(params, n=2)
    request.params.check(request)
    usage = UsageMeter()
    rewards = MeteredRewards(RewardSet({"prm": prm, "orm": orm}), usage)
    result = await tree_search(request, MeteredEngine(engine, usage), rewards)
    # the PRM pruned as it does alone: the same engine calls as without a final reward
    alone = CountingFake(scripted(BEAM))
    await search(alone, StepTags(), {"n": 4, "beam_width": 2, "mode": mode})
    assert [c.prompt for c in engine.calls] == [c.prompt for c in alone.calls]
    # ONE outcome call over every finished beam, whole answers; the pick is the ORM's
    (items,) = orm.outcome_calls
    assert len(items) == result.details["finished"]
    assert all(i.response.endswith(("v55", "v95")) for i in items)
    assert [c.score for c in result.choices] == [pytest.approx(0.45)] * 2
    assert all(c.text.endswith("The answer is 4. v55") for c in result.choices)
    assert result.details["reward_calls"] == len(prm.calls) + 1
    assert usage.reward_calls == len(prm.calls) + 1


# ---- DVTS -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dvts_subtrees_are_independent():
    table = {
        0: ["a v90\n\n", "b v80\n\n", "c v30\n\n", "d v20\n\n"],  # subtree 0: a, b; 1: c, d
        1: ["e v40\n\n", "f v45\n\n", "g v60\n\n", "h v50\n\n"],
        2: ["The answer is 1. v10", "The answer is 2. v20"],
    }
    engine = CountingFake(scripted(table, counter=True))
    _, result, _ = await search(
        engine, StepTags(), {"n": 4, "beam_width": 2, "mode": "dvts", "return_candidates": True}
    )
    # N/M = 2 subtrees, M children each; each keeps ITS best (beam search would keep a and b)
    assert [c.n for c in engine.calls] == [2, 2, 2, 2, 2, 2]
    assert prompts(engine)[2:4] == ["a v90\n\n", "c v30\n\n"]
    assert prompts(engine)[4:6] == ["a v90\n\nf v45\n\n", "c v30\n\ng v60\n\n"]
    assert result.details["survivors"] == [2, 2, 0]
    assert result.details["pruned"] == 4
    texts = [c["text"] for c in result.candidates]
    assert len(texts) == 4 and all(t.startswith(("a v90", "c v30")) for t in texts)
    assert engine.calls[0].seed is None  # no request seed: the engine's own randomness


@pytest.mark.anyio
async def test_dvts_seeds_differ_per_call():
    table = {0: ["The answer is 1."]}
    engine = CountingFake(scripted(table))
    await search(engine, StepTags(), {"n": 4, "beam_width": 2, "mode": "dvts"}, seed=7)
    seeds = [c.seed for c in engine.calls]
    assert len(seeds) == 2 and len(set(seeds)) == 2  # else both subtrees sample the same


@pytest.mark.anyio
async def test_dvts_subtree_ends_when_its_best_child_finishes():
    table = {0: ["The answer is 6. v90", "a v10\n\n", "b v50\n\n", "c v40\n\n"],
             1: ["The answer is 8. v70"]}  # fmt: skip
    engine = CountingFake(scripted(table, counter=True))
    _, result, _ = await search(engine, StepTags(), {"n": 4, "beam_width": 2, "mode": "dvts"})
    assert prompts(engine)[2:] == ["b v50\n\n"]  # subtree 0 is done; subtree 1 goes on with b
    assert result.details["survivors"] == [1, 0]
    assert result.details["finished"] == 3  # the finished child, and b's two children


# ---- early rejection --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_early_rejection_scores_partial_children_and_finishes_only_the_top():
    engine, reward = CountingFake(continuing(LONG)), StepTags()
    request, result, usage = await search(
        engine,
        reward,
        {"n": 4, "beam_width": 2, "partial_tokens": 6, "max_depth": 2},
        max_tokens=300,
    )
    first, *rest = engine.calls
    assert (first.n, first.max_tokens) == (4, 6)  # every child writes 6 tokens only
    partial_items = reward.calls[0]
    assert len(partial_items) == 4 and all(i.partial for i in partial_items)
    assert [i.steps for i in partial_items] == [("p v20 ",), ("q v90 ",), ("r v70 ",), ("s v10 ",)]
    # the top 1/M (q, r) finish their step from where they stopped; p and s are dropped
    assert [(c.n, generated("".join(map(chr, c.prompt)))) for c in rest[:2]] == [
        (1, "q v90 "),
        (1, "r v70 "),
    ]
    assert rest[0].max_tokens == 256 - 6
    # 2 of 4 children dropped and 2 continued, in each of the 2 rounds
    assert result.details["pruned"] == 4 and result.details["continuations"] == 4
    assert result.details["survivors"][0] == 2
    # the dropped children cost 6 tokens each, nothing more
    assert engine.produced[0] == 24
    assert usage.generated_tokens == sum(engine.produced)
    assert usage.generated_tokens <= request.params.token_budget(request)
    # the last round: partial children of both survivors, then the best two run to the end
    assert [c.n for c in rest[2:4]] == [2, 2]
    assert all(c.stop == () for c in rest[2:])
    assert result.choices[0].text.startswith(("q v90 second one\n\n", "r v70 third st\n\n"))
    assert result.choices[0].finish_reason == "stop"
    assert engine._running == 0


async def early_rejection(table: dict[int, Sequence[str]], partial_tokens: int):
    """Beam 4 x 2 with early rejection over ``table``, every beam returned as a candidate."""
    engine, reward = CountingFake(continuing(table)), StepTags()
    params = {"n": 4, "beam_width": 2, "partial_tokens": partial_tokens, "return_candidates": True}
    _, result, _ = await search(engine, reward, params)
    return engine, reward, result


@pytest.mark.anyio
async def test_early_rejection_child_done_within_partial_tokens_is_not_partial():
    table = {0: ["a v80\n\n", "The answer is 1. v30", "long step v99 .....\n\n", "x"],
             1: ["The answer is 2. v40"]}  # fmt: skip
    engine, reward, result = await early_rejection(table, partial_tokens=8)
    flags = [i.partial for i in reward.calls[0]]
    assert flags == [False, True, True, False]  # complete step; answer cut at 8; long; EOS
    # 3 alive ('x' finished at EOS), a and the answer kept; only the partial one continues
    assert [(c.n, c.max_tokens) for c in engine.calls[:2]] == [
        (4, 8),
        (1, 200 - 8),
    ]  # capped by max_tokens
    assert prompts(engine)[1] == "The answ"
    # it finishes at EOS: the complete step 'a' is the only beam left, refilled to N children
    assert result.details["survivors"][0] == 1
    assert (prompts(engine)[2], engine.calls[2].n) == ("a v80\n\n", 4)


@pytest.mark.anyio
async def test_early_rejection_finds_a_step_end_split_between_partial_and_continuation():
    # the partial step stops at "v80 a\n", its continuation starts "\n": the engine sees only
    # the continuation and would run on into the next step; the search ends the step there
    table = {0: ["v80 a\n\nzz v10\n\n", "v20 bbbbbbbbb\n\n", "v30 ccccccccc\n\n", "v10 ddddd\n\n"],
             1: ["The answer is 2. v40"]}  # fmt: skip
    engine, _, result = await early_rejection(table, partial_tokens=6)
    assert prompts(engine)[1] == "v80 a\n"  # the survivor continued from its partial step
    assert "v80 a\n\n" in prompts(engine)  # ... and the next step starts right after "\n\n"
    texts = [c["text"] for c in result.candidates]
    assert "v80 a\n\nThe answer is 2. v40" in texts
    assert not any("zz" in t for t in texts)
    assert engine._running == 0


@pytest.mark.anyio
async def test_cancelling_the_request_aborts_every_engine_call():
    engine = CountingFake(scripted(BEAM), delay=30)
    request = request_for({"n": 4, "beam_width": 2, "mode": "dvts"})
    usage = UsageMeter()
    task = asyncio.ensure_future(
        tree_search(
            request,
            MeteredEngine(engine, usage),
            MeteredRewards(RewardSet({"prm": StepTags()}), usage),
        )
    )
    for _ in range(200):
        await asyncio.sleep(0.01)
        if engine._running == 2:
            break
    assert engine._running == 2  # both subtrees' first calls in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine._running == 0
    assert engine.aborted == 2


@pytest.mark.anyio
async def test_a_failing_call_cancels_the_others_of_its_round():
    calls = {"n": 0}

    def script(prompt: str, index: int, spec: SamplingSpec) -> str:
        return "a\n\n"

    class Failing(CountingFake):
        async def generate(self, spec: SamplingSpec) -> Generation:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("engine exploded")
            return await super().generate(spec)

    engine = Failing(script, delay=30)
    with pytest.raises(RuntimeError, match="exploded"):
        await search(engine, StepTags(), {"n": 4, "beam_width": 2, "mode": "dvts"})
    assert engine._running == 0 and engine.aborted == 1


# ---- parameters -------------------------------------------------------------------------------


def test_token_budget_is_an_upper_bound_formula():
    request = request_for({"n": 4, "beam_width": 2, "step_tokens": 32, "max_depth": 3})
    assert request.params.token_budget(request) == 4 * (2 * 32 + 200)
    er = request_for({"n": 4, "beam_width": 2, "step_tokens": 32, "max_depth": 3,
                      "partial_tokens": 8})  # fmt: skip
    # per round: 2 rejected children x 8, 2 kept x 32; last round: 2 x 8 + 2 x 200
    assert er.params.token_budget(er) == 2 * (16 + 64) + 16 + 400
    assert request.params.candidates() == 4


@pytest.mark.parametrize(
    ("params", "n", "param"),
    [
        ({"n": 6, "beam_width": 4}, 1, "strategy.n"),
        ({"n": 4, "beam_width": 2, "partial_tokens": 64, "step_tokens": 64}, 1,
         "strategy.partial_tokens"),
        ({"n": 4, "beam_width": 2, "mode": "dvts"}, 3, "n"),
        ({"n": 4, "beam_width": 2, "partial_tokens": 8}, 3, "n"),
        ({"n": 4, "beam_width": 2}, 5, "n"),
    ],
)  # fmt: skip
def test_check_rejects_impossible_combinations(params, n, param):
    request = request_for(params, n=n)
    with pytest.raises(StrategyError) as err:
        request.params.check(request)
    assert err.value.param == param


def client(engine: FakeEngine | None = None) -> TestClient:
    rewards = RewardSet({"prm": StepTags(), "verifier": StepTags("verifier", "outcome")})
    app = create_app(Settings(max_n=16), engine or FakeEngine(scripted(BEAM)), rewards)
    return TestClient(app)


@pytest.mark.parametrize(
    ("strategy", "extra", "needle"),
    [
        ({"n": 6, "beam_width": 4}, {}, "multiple of strategy.beam_width"),
        ({"n": 4, "beam_width": 2, "partial_tokens": 300}, {}, "below strategy.step_tokens"),
        ({"n": 4, "beam_width": 2, "mode": "dvts"}, {"n": 3}, "may finish only 2"),
        ({"n": 4}, {"temperature": 0}, "temperature must be > 0"),
        ({"n": 4, "mode": "mcts"}, {}, "strategy.mode"),
        ({"n": 4, "width": 2}, {}, "parameters of 'tree_search'"),
        ({"n": 4, "reward": "nope"}, {}, "unknown reward"),
        ({"n": 4, "final_reward": "prm"}, {}, "the final pick needs an outcome reward"),
        ({"n": 4, "final_reward": "nope"}, {}, "unknown reward"),
        ({"n": 32}, {}, "cap"),
    ],
)
def test_bad_parameters_are_400(strategy, extra, needle):
    with client() as c:
        r = c.post(
            "/v1/completions",
            json={"prompt": PROMPT, "max_tokens": 50, "strategy": {"name": "tree_search",
                  "reward": "prm", **strategy}, **extra},
        )  # fmt: skip
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_through_the_server_returns_n_choices_and_details():
    with client() as c:
        r = c.post(
            "/v1/completions",
            json={"prompt": PROMPT, "max_tokens": 100, "n": 2, "temperature": 0.7,
                  "strategy": {"name": "tree_search", "reward": "prm", "n": 4,
                               "beam_width": 2, "return_candidates": True}},
        )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["choices"]) == 2
    assert body["choices"][0]["text"].endswith("The answer is 5. v95")
    details = body["winnow"]["details"]
    assert details["survivors"] == [2, 2, 0] and details["rounds"] == 3
    assert len(body["winnow"]["candidates"]) == 4
    assert all("step_scores" in c for c in body["winnow"]["candidates"])
    usage = body["usage"]
    assert usage["winnow"]["engine_calls"] == 5 and usage["winnow"]["reward_calls"] == 3
    assert usage["winnow"]["discarded_tokens"] == (
        usage["winnow"]["generated_tokens"] - usage["completion_tokens"]
    )
