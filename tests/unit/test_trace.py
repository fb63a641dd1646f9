"""The search trace (strategy parameter ``trace: true``) on the scripted fake engine: for every
strategy the trace says what happened — the chosen candidate is the winner, votes add up,
cards' rejected segments are the discarded tokens, pruned beams are not in the answer."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.support.cards import LastWordReward
from tests.support.cards import run as run_cards
from tests.support.selection import CANDIDATES, client_for
from tests.support.tree import BEAM, LONG, StepTags, continuing, scripted
from winnow.engine.base import Completion
from winnow.engine.fake import FakeEngine
from winnow.protocol.trace import CUT_MARK, MAX_TEXT_CHARS, Trace, TraceLimits, clip_text
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings
from winnow.strategies.cards import threshold
from winnow.strategies.parts.selection import Candidate, selection_trace


def post(client: TestClient, strategy: dict, **body) -> dict:
    payload = {"prompt": "Q", "max_tokens": 40, "seed": 3, **body, "strategy": strategy}
    r = client.post("/v1/completions", json=payload)
    assert r.status_code == 200, r.text
    return r.json()


def only_trace(body: dict) -> dict:
    (trace,) = body["winnow"]["trace"]
    return trace


def test_trace_is_off_by_default_and_refused_where_there_is_nothing_to_trace():
    with client_for() as client:
        body = post(client, {"name": "best_of_n", "n": 4, "reward": "tagged"})
        assert body["winnow"].get("trace") is None
        r = client.post(
            "/v1/completions", json={"prompt": "Q", "strategy": {"name": "sample", "trace": True}}
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "strategy.trace"


@pytest.mark.parametrize("selection", ["best", "weighted_vote", "majority"])
def test_best_of_n_trace_names_the_returned_choice_as_winner(selection):
    strategy = {"name": "best_of_n", "n": 6, "reward": "tagged", "selection": selection}
    with client_for() as client:
        body = post(client, {**strategy, "trace": True})
    trace = only_trace(body)
    assert trace["strategy"] == "best_of_n" and trace["selection"] == selection
    cands = {c["index"]: c for c in trace["candidates"]}
    assert [c["text"] for c in trace["candidates"]] == CANDIDATES
    (winner,) = trace["winner"]
    assert cands[winner]["chosen"] and sum(c["chosen"] for c in cands.values()) == 1
    assert body["choices"][0]["text"] == cands[winner]["text"]
    groups = {g["id"]: g for g in trace["groups"]}
    # every candidate with an answer is a member of its group, and only there
    for c in cands.values():
        if c["group"] is not None:
            assert c["index"] in groups[c["group"]]["members"]
    assert sum(g["count"] for g in groups.values()) == sum(
        c["group"] is not None for c in cands.values()
    )
    winning = [g for g in groups.values() if g["winner"]]
    if selection == "best":
        assert cands[winner]["score"] == max(c["score"] for c in cands.values())  # 0.95
        assert cands[winner]["group"] is None  # "I do not know": no answer, no group
    elif selection == "weighted_vote":
        (group,) = winning
        assert group["vote"] == max(g["vote"] for g in groups.values())
        assert group["vote"] == pytest.approx(
            sum(cands[i]["score"] for i in group["members"])
        )  # a probability reward: its scores are the votes
        assert cands[winner]["group"] == group["id"]
    else:  # majority: no reward called, no scores, the largest group
        assert all(c["score"] is None for c in cands.values())
        (group,) = winning
        assert group["count"] == max(g["count"] for g in groups.values())
        assert group["vote"] is None
    assert trace["dropped"] == 0 and trace["clipped"] == 0


def test_best_of_majority_trace_shows_the_frequency_filter():
    with client_for() as client:
        body = post(client, {"name": "best_of_majority", "n": 6, "reward": "tagged", "trace": True})
    trace, details = only_trace(body), body["winnow"]["details"]
    groups = trace["groups"]
    for g in groups:
        assert g["passed"] == (g["count"] >= details["min_group_size"])
        assert g["mean"] == pytest.approx(g["vote"] / g["count"])
    assert sum(g["passed"] for g in groups) == details["qualifying_groups"]
    (winning,) = [g for g in groups if g["winner"]]
    assert winning["passed"]
    assert winning["mean"] == max(g["mean"] for g in groups if g["passed"])
    (winner,) = trace["winner"]
    assert winner in winning["members"]
    chosen = next(c for c in trace["candidates"] if c["index"] == winner)
    assert body["choices"][0]["text"] == chosen["text"]


def test_adaptive_trace_lists_the_waves_and_why_sampling_stopped():
    strategy = {"name": "adaptive", "wave": 2, "max_n": 6, "reward": "tagged", "trace": True}
    with client_for() as client:
        body = post(client, {**strategy, "selection": "weighted_vote"})
    trace, details = only_trace(body), body["winnow"]["details"]
    assert [w["size"] for w in trace["waves"]] == details["wave_sizes"]
    assert [w["drawn"] for w in trace["waves"]] == [2, 4, 6][: details["waves"]]
    assert [w["stop"] for w in trace["waves"]] == [False] * (details["waves"] - 1) + [True]
    assert trace["waves"][-1]["reason"] == details["stopped"]
    assert [c["wave"] for c in trace["candidates"]] == [
        i for i, size in enumerate(details["wave_sizes"]) for _ in range(size)
    ]
    (winner,) = trace["winner"]
    chosen = next(c for c in trace["candidates"] if c["index"] == winner)
    assert body["choices"][0]["text"] == chosen["text"] and chosen["chosen"]


def test_cards_trace_rejected_segments_are_the_discarded_tokens():
    texts = ["A bad¦ x good¦ y meh¦ z"] * 3 + ["A good¦ x bad¦ y good¦ z"] * 20
    strategy = {"trace": True, "max_rejections": 3, "min_segment_tokens": 2, "alpha": 0.2}
    r, _, _ = run_cards(texts, strategy, max_tokens=60)
    assert r.status_code == 200, r.text
    body = r.json()
    trace, details = only_trace(body), body["winnow"]["details"]
    segments = trace["segments"]
    assert trace["r0"] == pytest.approx(details["r0"]) and trace["r_star"] == details["r_star"]
    taken = [s for s in segments if s["outcome"] in ("accepted", "forced")]
    rejected = [s for s in segments if s["outcome"] != "accepted"]  # forced ones were rejected
    assert len(segments) == details["candidates"]
    assert len(taken) == details["segments"]
    assert len(rejected) == details["rejections"]
    assert sum(s["outcome"] == "forced" for s in segments) == details["forced_accepts"]
    # the taken segments, in order, are the answer
    assert "".join(s["text"] for s in taken) == body["choices"][0]["text"]
    for s in segments:  # tau at the segment's end, on the schedule
        end = s["start"] + s["tokens"]
        assert s["tau"] == pytest.approx(threshold(end, trace["r0"], trace["r_star"], 60))
    # every generated token not in the answer: the rejected segments and the cut sentinels
    usage = body["usage"]["winnow"]
    thrown = sum(s["generated"] for s in segments if s["outcome"] == "rejected") + sum(
        s["generated"] - s["tokens"] for s in taken
    )
    assert thrown == usage["discarded_tokens"]
    assert sum(s["generated"] for s in segments) == usage["generated_tokens"]
    assert any(s["outcome"] == "rejected" for s in segments)
    assert trace["winner"] == [0]


def tree_client(table: dict, early: bool = False) -> TestClient:
    script = continuing(table) if early else scripted(table)
    reward = StepTags()
    app = create_app(Settings(max_n=16), FakeEngine(script), RewardSet({"prm": reward}))
    return TestClient(app)


def ancestors(nodes: dict[int, dict], node: int | None) -> list[dict]:
    out = []
    while node is not None:
        out.append(nodes[node])
        node = nodes[node]["parent"]
    return out


@pytest.mark.parametrize("early", [False, True])
def test_tree_search_trace_pruned_beams_are_not_in_the_answer(early):
    strategy = {"name": "tree_search", "n": 4, "beam_width": 2, "reward": "prm", "trace": True}
    if early:
        strategy |= {"partial_tokens": 6, "max_depth": 2}
    with tree_client(LONG if early else BEAM, early) as client:
        body = post(client, strategy, prompt="<user>Q<assistant>", max_tokens=300)
    trace, details = only_trace(body), body["winnow"]["details"]
    nodes = {n["id"]: n for n in trace["nodes"]}
    assert len(nodes) == details["expansions"]
    assert sum(n["status"] == "pruned" for n in nodes.values()) == details["pruned"]
    assert max(n["round"] for n in nodes.values()) + 1 == details["rounds"]
    for n in nodes.values():  # a child's parent was kept in the round before
        if n["parent"] is not None:
            parent = nodes[n["parent"]]
            assert parent["status"] == "kept" and parent["round"] == n["round"] - 1
    assert len(trace["candidates"]) == details["finished"]
    for c in trace["candidates"]:
        assert nodes[c["node"]]["status"] == "finished" and nodes[c["node"]]["final"]
    (winner,) = trace["winner"]
    chosen = next(c for c in trace["candidates"] if c["index"] == winner)
    assert chosen["text"] == body["choices"][0]["text"]
    path = ancestors(nodes, chosen["node"])
    assert all(n["status"] != "pruned" for n in path)
    assert "".join(n["text"] for n in reversed(path)) == chosen["text"]
    assert nodes[chosen["node"]]["chosen"]
    pruned = [n for n in nodes.values() if n["status"] == "pruned"]
    assert pruned
    if early:  # the partial scores that cut children: each cut child wrote partial_tokens only
        assert all(n["partial"] and n["tokens"] == 6 for n in pruned)
        for n in pruned:  # every cut child scored below each kept sibling of its round
            same_round = [k for k in nodes.values() if k["round"] == n["round"]]
            kept = [k for k in same_round if k["status"] != "pruned"]
            assert all(n["score"] <= k["score"] for k in kept)
    else:
        assert not any(n["partial"] for n in nodes.values())


def test_trace_streams_in_the_last_chunk_before_usage():
    strategy = {"name": "best_of_n", "n": 6, "reward": "tagged", "trace": True}
    with client_for() as client:
        payload = {
            "messages": [{"role": "user", "content": "Q"}],
            "max_tokens": 40,
            "stream": True,
            "stream_options": {"include_usage": True},
            "strategy": strategy,
        }
        with client.stream("POST", "/v1/chat/completions", json=payload) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    *answer, info, usage = chunks
    assert usage["usage"]["winnow"]["strategy"] == "best_of_n"
    assert info["choices"] == [] and info["object"] == "chat.completion.chunk"
    trace = info["winnow"]["trace"][0]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in answer)
    (winner,) = trace["winner"]
    assert text == next(c["text"] for c in trace["candidates"] if c["index"] == winner)


def test_cards_trace_streams_too():
    reward = LastWordReward()
    app = create_app(Settings(max_n=8), FakeEngine(lambda *_: "A good¦ x good¦ z"),
                     RewardSet({"words": reward}))  # fmt: skip
    payload = {"prompt": "Q:", "max_tokens": 30, "stream": True,
               "strategy": {"name": "cards", "reward": "words", "trace": True}}  # fmt: skip
    with TestClient(app) as client, client.stream("POST", "/v1/completions", json=payload) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    info = events[-1]
    segments = info["winnow"]["trace"][0]["segments"]
    text = "".join(c["text"] for e in events[:-1] for c in e["choices"])
    assert text == "".join(s["text"] for s in segments if s["outcome"] != "rejected")


def test_trace_is_bounded_and_says_so():
    long = "step " * 500 + "The answer is 42."
    clipped = clip_text(long)
    assert len(clipped) == MAX_TEXT_CHARS and CUT_MARK in clipped
    assert clipped.endswith("The answer is 42.")  # the tail, where the answer is, is kept
    candidates = [
        Candidate(Completion(i, long if i == 0 else f"The answer is {i}.", [1] * 5, "stop"))
        for i in range(10)
    ]
    for i, c in enumerate(candidates):
        c.score, c.answer, c.group = i / 10, str(i), i
    chosen = [candidates[9]]
    trace = Trace(strategy="best_of_n", limits=TraceLimits(max_entries=3))
    trace = selection_trace("best_of_n", candidates, chosen, "best", trace=trace)
    assert [c["index"] for c in trace.model_dump()["candidates"]] == [0, 1, 9]  # chosen kept
    assert len(trace.groups) == 3
    assert trace.dropped == 7 + 7  # candidates and groups left out
    assert trace.clipped == 1 and trace.candidates[0].chars == len(long)


def test_openapi_describes_the_trace():
    with client_for() as client:
        schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for name in ("Trace", "TraceCandidate", "TraceGroup", "TraceSegment", "TraceNode"):
        assert name in components, name
    trace_field = components["WinnowInfo"]["properties"]["trace"]
    assert "#/components/schemas/Trace" in json.dumps(trace_field)
    strategy = components["ChatCompletionRequest"]["properties"]["strategy"]["anyOf"]
    traced = {v["title"] for v in strategy if "trace" in v.get("properties", {})}
    assert traced == {
        f"strategy {n}"
        for n in ("best_of_n", "best_of_majority", "adaptive", "cards", "deepconf", "tree_search")
    }
