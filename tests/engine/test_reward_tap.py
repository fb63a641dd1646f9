"""The reward tap (engine): probe heads scored on the policy's final hidden states in the engine.

On the default model, without the engine: the processor on logits made from known states writes
the head's scores at the right records, and the probe reward reads a tap only when the tokens
match. With the real engine (marker ``engine``): the tap's score equals the re-encoded one within
1e-4 for every finish reason, best_of_n / best_of_majority served over HTTP score without a
reward forward pass, and tap files do not outlive their calls. The channel's files without the
model: tests/unit/test_reward_tap.py.
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from winnow.engine.base import Completion, Generation, ModelInfo, SamplingSpec
from winnow.engine.processors.inverse import shared_inverse
from winnow.engine.processors.specs import TAP_KEY, TAP_RECORD_FLAG, tap_record_size
from winnow.engine.processors.tap import RewardTap, parse_args
from winnow.engine.tap_files import tap_dir, tap_files
from winnow.heads.probe import has_sigmoid, head_scorer, load_head
from winnow.rewards.base import OutcomeItem, Tapped
from winnow.rewards.probe import ProbeReward

DEFAULT_HEAD = Path(__file__).resolve().parents[2] / "winnow" / "assets" / "rewards" / "default"


def added(index: int, params: SamplingParams, output: list[int]) -> tuple[Any, ...]:
    return (index, params, [1, 2, 3], output)


class _Config:
    def __init__(self, model: str) -> None:
        self.model_config = type("M", (), {"model": model})()


# ---- the processor, on logits of known states ---------------------------------------------------


def test_processor_writes_each_rows_scores_at_its_position(default_model_dir: str):
    """Logits ``E h`` of known states: the tap writes head(h) of each tapped row at record
    ``len(output)``, leaves untapped rows and the logits alone, and closes files of rows that
    leave the batch."""
    inverse = shared_inverse(default_model_dir)
    assert inverse is not None
    head, meta = load_head(DEFAULT_HEAD)
    scorer = head_scorer(head, has_sigmoid(meta))
    proc = RewardTap(_Config(default_model_dir), torch.device("cpu"), False)
    with tap_files(2) as paths:  # the tap writes only files of the server's private directory
        files = [Path(p) for p in paths]
        _write_each_rows_scores(proc, files, inverse, scorer)


def _write_each_rows_scores(proc: RewardTap, files: list[Path], inverse: Any, scorer: Any) -> None:
    outputs: list[list[int]] = [[5, 6], [], [7]]
    tap = [SamplingParams(extra_args={TAP_KEY: {"heads": [str(DEFAULT_HEAD)], "file": str(f)}})
           for f in files]  # fmt: skip
    rows = [added(0, tap[0], outputs[0]), added(1, tap[1], outputs[1]),
            added(2, SamplingParams(), outputs[2])]  # fmt: skip
    proc.update_state(BatchUpdate(3, [], rows, []))
    assert sorted(proc.rows) == [0, 1]
    g = torch.Generator().manual_seed(0)
    states = torch.randn(3, inverse.embedding.shape[1], generator=g)
    logits = states @ inverse.embedding.T
    out = proc.apply(logits.clone())
    assert torch.equal(out, logits)  # it never edits a logit
    expected = scorer(states, torch.arange(3)).reshape(-1)
    size = tap_record_size(1)
    a, b = files[0].read_bytes(), files[1].read_bytes()
    assert len(a) == 3 * size and a[: 2 * size] == bytes(2 * size)  # records 0, 1 unwritten
    flag, value = struct.unpack("<2f", a[2 * size :])
    assert flag == TAP_RECORD_FLAG and math.isclose(value, float(expected[0]), abs_tol=1e-5)
    flag, value = struct.unpack("<2f", b)
    assert flag == TAP_RECORD_FLAG and math.isclose(value, float(expected[1]), abs_tol=1e-5)
    outputs[0].append(9)  # the next step: one more record
    proc.apply(logits.clone())
    assert len(files[0].read_bytes()) == 4 * size
    fds = [r.fd for r in proc.rows.values()]
    proc.update_state(BatchUpdate(3, [0, 1], [], []))
    assert proc.rows == {}
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed


def test_processor_never_creates_files_and_rejects_malformed_args(
    default_model_dir: str, tmp_path: Path
):
    gone = tmp_path / "gone"
    proc = RewardTap(_Config(default_model_dir), torch.device("cpu"), False)
    args = {TAP_KEY: {"heads": [str(DEFAULT_HEAD)], "file": str(gone)}}
    proc.update_state(BatchUpdate(1, [], [added(0, SamplingParams(extra_args=args), [1])], []))
    assert proc.rows == {} and not gone.exists()  # the call is over: nothing left behind
    for bad in ({"heads": [], "file": "x"}, {"heads": [str(tmp_path)], "file": "x"},
                {"heads": [str(DEFAULT_HEAD)]}, "x"):  # fmt: skip
        with pytest.raises(ValueError):
            RewardTap.validate_params(SamplingParams(extra_args={TAP_KEY: bad}))
    assert parse_args(SamplingParams()) is None


# ---- the probe reward reads a tap only for the tokens it would encode ---------------------------


@pytest.fixture(scope="module")
def probe(default_model_dir: str) -> ProbeReward:
    from winnow.rewards.backbone import Backbone

    return ProbeReward("default", DEFAULT_HEAD, Backbone(default_model_dir))


def test_probe_reads_the_tap_when_tokens_match_and_encodes_otherwise(probe: ProbeReward):
    prompt, response = "What is 2 + 3?\n", "2 + 3 = 5. The answer is 5."
    backbone = probe.backbone
    prompt_ids, ids = tuple(backbone.encode(prompt)), tuple(backbone.encode(response))
    job = probe.outcome_job(OutcomeItem(prompt, response))
    planted = [None] * len(prompt_ids) + [0.123456] * (len(ids) + 1)
    scores = {probe.tap_head: planted[len(prompt_ids) - 1 :]}

    async def run(tapped: Tapped | None) -> Any:
        return await probe.score([OutcomeItem(prompt, response, tapped=tapped)])

    good = asyncio.run(run(Tapped(prompt_ids, ids, scores)))
    assert good.scores == [pytest.approx(0.123456)] and good.tapped == 1 and good.tokens == 0
    assert job.positions[0] >= len(prompt_ids)
    other = (*ids[:-3], ids[-3] + 1, *ids[-2:])  # a token before the answer differs
    encoded = asyncio.run(run(Tapped(prompt_ids, other[: len(ids)], scores)))
    if job.positions[0] >= len(prompt_ids) + len(ids) - 3:
        assert encoded.tapped == 0 and encoded.tokens > 0
    missing = asyncio.run(run(Tapped(prompt_ids, ids, {"/elsewhere": planted})))
    assert missing.tapped == 0 and missing.tokens > 0
    assert missing.scores[0] != pytest.approx(0.123456)


class PrefillEngine:
    """Stands in for the engine that tapped a response: a one-token call's tap gives ``value``
    (None: it could not score) for its prompt's last token; records the prompts it saw."""

    def __init__(self, tap_model: str, head: str, value: float | None) -> None:
        self.info = ModelInfo(name="m", max_model_len=4096, tap_model=tap_model)
        self.head, self.value, self.prompts = head, value, []

    async def generate(self, spec: SamplingSpec) -> Generation:
        assert spec.tap == (self.head,) and spec.max_tokens == 1
        self.prompts.append(tuple(spec.prompt))
        if self.value == -1.0:
            raise RuntimeError("engine down")
        tap = {self.head: [self.value, None]}
        completion = Completion(0, "x", [7], "length", tap=tap)
        return Generation(
            list(spec.prompt), [completion], cached_prompt_tokens=len(spec.prompt) - 2
        )


def test_what_the_tap_cannot_serve_is_asked_of_the_engine_that_tapped(probe: ProbeReward):
    prompt, response = "What is 2 + 3?\n", "2 + 3 = 5. The answer is 5."
    backbone = probe.backbone
    prompt_ids, ids = tuple(backbone.encode(prompt)), tuple(backbone.encode(response))
    job = probe.outcome_job(OutcomeItem(prompt, response))
    other = (*ids[:2], ids[2] + 1, *ids[3:])  # the engine wrote another token early on
    tapped = Tapped(prompt_ids, other, {probe.tap_head: [0.5] * (len(ids) + 1)})

    async def run(item: OutcomeItem) -> Any:
        return await probe.score([item])

    try:
        probe.engine = PrefillEngine(str(backbone.model_dir), probe.tap_head, 0.25)
        scored = asyncio.run(run(OutcomeItem(prompt, response, tapped=tapped)))
        assert scored.scores == [pytest.approx(0.25)] and scored.tapped == 0
        assert probe.engine.prompts == [job.ids[: job.positions[0] + 1]]  # the text's own tokens
        assert (scored.tokens, scored.cached_tokens) == (2, job.positions[0] - 1)
        untapped = asyncio.run(run(OutcomeItem(prompt, response)))  # /v1/rewards: the backbone
        assert len(probe.engine.prompts) == 1 and untapped.scores[0] != pytest.approx(0.25)
        probe.engine = PrefillEngine(str(backbone.model_dir), probe.tap_head, None)
        fallback = asyncio.run(run(OutcomeItem(prompt, response, tapped=tapped)))
        assert fallback.scores[0] == pytest.approx(untapped.scores[0], abs=1e-6)
        probe.engine = PrefillEngine(str(backbone.model_dir), probe.tap_head, -1.0)  # it fails
        failed = asyncio.run(run(OutcomeItem(prompt, response, tapped=tapped)))
        assert probe.engine.prompts and failed.scores[0] == pytest.approx(
            untapped.scores[0], abs=1e-6
        )
        probe.engine = PrefillEngine("/another/model", probe.tap_head, 0.25)
        asyncio.run(run(OutcomeItem(prompt, response, tapped=tapped)))
        assert probe.engine.prompts == []  # an engine of another model cannot score this probe
    finally:
        probe.engine = None


# ---- the real engine ----------------------------------------------------------------------------


class BackboneCalls:
    """Counts the jobs a probe sends to the server's own backbone (its batcher) while active."""

    def __init__(self, probe: ProbeReward) -> None:
        self.probe, self.jobs = probe, 0

    def __enter__(self) -> BackboneCalls:
        real = self.real = self.probe.batcher.submit

        async def counted(jobs):
            self.jobs += len(jobs)
            return await real(jobs)

        self.probe.batcher.submit = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.probe.batcher.submit = self.real  # type: ignore[method-assign]


@pytest.mark.engine
def test_tap_equals_reencoding_for_every_finish_reason(live_server):
    """EOS, a stop string and the token limit: every candidate's score from the engine equals
    the re-encoded one within 1e-4. The tap serves every position but a ``length``-finished
    candidate's last token (the engine never computed its state): one read there is prefilled
    by the engine when read, and the server's backbone scores none of them."""
    engine, probe = live_server.engine, live_server.rewards.get("default")
    heads = probe.tap_heads(engine.info.tap_model)
    assert heads == (probe.tap_head,)
    text = "Question: What is 12 * 7 + 5? Think step by step.\nAnswer:"

    async def run() -> list[tuple[str | None, float, float, int, bool]]:
        ids = tuple(await engine.tokenize(text, add_special_tokens=True))
        rows = []
        for max_tokens, stop in ((96, ()), (10, ()), (96, ("\n\n",))):
            spec = SamplingSpec(prompt=ids, n=4, max_tokens=max_tokens, temperature=0.8,
                                seed=3, stop=stop, tap=heads)  # fmt: skip
            generation = await engine.generate(spec)
            for c in generation.completions:
                tapped = Tapped(tuple(generation.prompt_token_ids), tuple(c.token_ids), c.tap)
                with BackboneCalls(probe) as backbone:
                    a = await probe.score([OutcomeItem(text, c.text, tapped=tapped)])
                assert backbone.jobs == 0
                b = await probe.score([OutcomeItem(text, c.text)])
                (read,) = probe.outcome_job(OutcomeItem(text, c.text)).positions
                at_end = read == len(tapped.prompt_ids) + len(c.token_ids) - 1
                rows.append((c.finish_reason, a.scores[0], b.scores[0], a.tapped, at_end))
        return rows

    rows = live_server.run(run())
    assert {r[0] for r in rows} >= {"stop", "length"}
    for finish, _, _, tapped, at_end in rows:  # the tap served all but an unscored last token
        assert tapped == (0 if finish == "length" and at_end else 1), rows
    assert max(abs(a - b) for _, a, b, _, _ in rows) < 1e-4, rows


@pytest.mark.engine
def test_what_the_tap_cannot_serve_the_engine_scores(live_server):
    """Candidates that ignore EOS write past a skipped <|im_end|>, so the text's tokens differ
    from the engine's before the answer the probe reads: the tap cannot serve them, and the
    engine that tapped them scores the text's own tokens (a one-token prefill per position)
    instead of the server's backbone. Equal to the backbone's score within 1e-4."""
    engine, probe = live_server.engine, live_server.rewards.get("default")
    heads = probe.tap_heads(engine.info.tap_model)

    async def run() -> tuple[list[tuple[float, float, int]], int]:
        prompt = await engine.apply_chat_template([{"role": "user", "content": "Calculate 7 - 9."}])
        ids = tuple(await engine.tokenize(prompt, add_special_tokens=False))
        spec = SamplingSpec(prompt=ids, n=8, max_tokens=64, temperature=0.7, seed=0,
                            ignore_eos=True, tap=heads)  # fmt: skip
        generation = await engine.generate(spec)
        rows, submitted = [], 0
        for c in generation.completions:
            tapped = Tapped(tuple(generation.prompt_token_ids), tuple(c.token_ids), c.tap)
            with BackboneCalls(probe) as backbone:
                a = await probe.score([OutcomeItem(prompt, c.text, tapped=tapped)])
            submitted += backbone.jobs
            b = await probe.score([OutcomeItem(prompt, c.text)])
            rows.append((a.scores[0], b.scores[0], a.tapped))
        return rows, submitted

    rows, submitted = live_server.run(run())
    assert any(t == 0 for _, _, t in rows), rows  # some the tap could not serve...
    assert submitted == 0  # ...and none went to the server's backbone
    assert max(abs(a - b) for a, b, _ in rows) < 1e-4, rows


@pytest.mark.engine
@pytest.mark.parametrize("strategy", ["best_of_n", "best_of_majority"])
def test_served_selection_scores_without_a_reward_pass(live_server, strategy: str):
    """Through HTTP: no reward tokens, every candidate tapped, and each candidate's score is what
    /v1/rewards gives its text."""
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    prompt = "Question: Tom has 3 apples and buys 4 more. How many apples?\nAnswer:"
    body = {
        "model": live_server.engine.info.name, "prompt": prompt, "max_tokens": 48,
        "temperature": 0.8, "seed": 5,
        "strategy": {"name": strategy, "n": 4, "return_candidates": True},
    }  # fmt: skip
    with httpx.Client(base_url=live_server.base_url, headers=headers, timeout=120) as client:
        r = client.post("/completions", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        usage = out["usage"]["winnow"]
        assert usage["reward_tokens"] == 0 and usage["reward_tapped"] == 4, usage
        candidates = out["winnow"]["candidates"]
        check = client.post(
            "/rewards",
            json={"reward": "default", "items": [
                {"prompt": prompt, "response": c["text"]} for c in candidates]},
        )  # fmt: skip
        assert check.status_code == 200, check.text
        expected = [s["score"] for s in check.json()["data"]]
    for c, want in zip(candidates, expected, strict=True):
        assert abs(c["score"] - want) < 1e-4
    assert live_server.wait_idle() == 0
    assert list(tap_dir().iterdir()) == []


@pytest.mark.engine
def test_without_the_tap_the_server_reencodes(live_server):
    rewards = live_server.rewards
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    body = {
        "model": live_server.engine.info.name, "prompt": "2 + 2 =", "max_tokens": 16,
        "temperature": 0.8, "strategy": {"name": "best_of_n", "n": 2},
    }  # fmt: skip
    rewards.tap = False
    try:
        r = httpx.post(f"{live_server.base_url}/completions", json=body, headers=headers,
                       timeout=120)  # fmt: skip
    finally:
        rewards.tap = True
    usage = r.json()["usage"]["winnow"]
    assert usage["reward_tapped"] == 0 and usage["reward_tokens"] > 0


@pytest.mark.engine
def test_a_cancelled_tapped_call_leaves_no_file(live_server):
    engine, probe = live_server.engine, live_server.rewards.get("default")
    spec = SamplingSpec(prompt=(1, 2, 3, 4), n=4, max_tokens=2000, temperature=1.0,
                        ignore_eos=True, tap=(probe.tap_head,))  # fmt: skip

    async def run() -> int:
        task = asyncio.ensure_future(engine.generate(spec))
        await asyncio.sleep(1.0)
        during = len(list(tap_dir().iterdir()))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return during

    assert live_server.run(run()) == 4
    assert live_server.wait_idle() == 0
    assert list(tap_dir().iterdir()) == []


@pytest.mark.engine
def test_cards_scores_every_prefix_from_the_engine(live_server):
    """cards: RM(prompt) and every candidate prefix read from the tap (scores carried across
    segments, one call per segment), so no reward tokens at all."""
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    body = {
        "model": live_server.engine.info.name,
        "prompt": "Question: What is 6 * 7? Explain step by step.\nAnswer:",
        "max_tokens": 64, "temperature": 0.8, "seed": 4,
        "strategy": {"name": "cards", "max_rejections": 3, "entropy_threshold": 1.0},
    }  # fmt: skip
    r = httpx.post(f"{live_server.base_url}/completions", json=body, headers=headers, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    usage, details = out["usage"]["winnow"], out["winnow"]["details"]
    assert details["segments"] >= 2
    assert usage["reward_tapped"] == details["candidates"] + 1, (usage, details)  # + RM(prompt)
    assert usage["reward_tokens"] == 0
    assert live_server.wait_idle() == 0


@pytest.mark.engine
def test_adaptive_reads_each_waves_scores_from_the_engine(live_server):
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    body = {
        "model": live_server.engine.info.name,
        "prompt": "Question: What is 15 - 6?\nAnswer:", "max_tokens": 32, "temperature": 0.8,
        "seed": 6,
        "strategy": {"name": "adaptive", "reward": "default", "rule": "weighted",
                     "selection": "weighted_vote", "max_n": 8},
    }  # fmt: skip
    r = httpx.post(f"{live_server.base_url}/completions", json=body, headers=headers, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    usage, details = out["usage"]["winnow"], out["winnow"]["details"]
    assert usage["reward_tokens"] == 0 and usage["reward_tapped"] == details["candidates"]


@pytest.mark.engine
def test_tree_search_reads_step_scores_from_the_engine(live_server):
    """The PRM's step scores of every beam come from the tap (scores carried across the calls
    that wrote the steps) and equal the re-encoded ones: the same search, tap on and off."""
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    body = {
        "model": live_server.engine.info.name,
        "prompt": "Question: Sam has 5 pens and buys 3 more. How many pens?\nAnswer:",
        "max_tokens": 64, "temperature": 0.8, "seed": 8,
        "strategy": {"name": "tree_search", "n": 4, "beam_width": 2, "max_depth": 4,
                     "final_reward": "default", "return_candidates": True},
    }  # fmt: skip
    runs = []
    for tap in (True, False):
        live_server.rewards.tap = tap
        try:
            r = httpx.post(f"{live_server.base_url}/completions", json=body, headers=headers,
                           timeout=300)  # fmt: skip
        finally:
            live_server.rewards.tap = True
        assert r.status_code == 200, r.text
        runs.append(r.json())
    tapped, encoded = (run["usage"]["winnow"] for run in runs)
    assert tapped["reward_tapped"] > 0 and encoded["reward_tapped"] == 0
    assert tapped["reward_tokens"] < encoded["reward_tokens"]
    with_tap, without = (run["winnow"]["candidates"] for run in runs)
    assert [c["text"] for c in with_tap] == [c["text"] for c in without]
    for a, b in zip(with_tap, without, strict=True):
        assert a["step_scores"] == pytest.approx(b["step_scores"], abs=1e-4)
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_heads_are_placed_on_the_processors_device(default_model_dir: str):
    """The heads go where the logits are (on a GPU engine, the GPU), loaded once per device."""
    on_cpu = RewardTap(_Config(default_model_dir), torch.device("cpu"), False)
    on_meta = RewardTap(_Config(default_model_dir), torch.device("meta"), False)
    cpu_scorer, meta_scorer = on_cpu._scorer(str(DEFAULT_HEAD)), on_meta._scorer(str(DEFAULT_HEAD))
    assert cpu_scorer is not None and meta_scorer is not None and cpu_scorer is not meta_scorer
    hidden = torch.zeros(2, 576)
    assert cpu_scorer(hidden, torch.arange(2)).shape[0] == 2
    assert meta_scorer.placed.head.first_weight.device.type == "meta"  # type: ignore[attr-defined]
