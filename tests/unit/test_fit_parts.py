"""The parts of `winnow train fit` (#31): the questions file, checkers, journaled sampling through
the engine seam or an OpenAI-compatible server (winnow's own app on the fake engine), and the
held-out figures (bootstrap intervals over questions, selection over random N-subsets)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from winnow.engine.fake import FakeEngine
from winnow.server.app import create_app
from winnow.settings import Settings
from winnow.train import checkers, heldout
from winnow.train.questions import QuestionRow, read_questions, task_questions
from winnow.train.samples import read_journal
from winnow.train.sampling import EngineSampler, HttpSampler, sample_journaled

# ---- questions and checkers ---------------------------------------------------------------------


def test_questions_file_rows_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    lines = [
        {"question": "Calculate 1 + 2.", "answer": 3},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Calculate ( 1 + 2 )."}],
         "answer": "3", "group": 7},
        {"question": "Calculate 1 + 2.", "answer": "3"},  # a repeat: kept once
    ]  # fmt: skip
    path.write_text("# a comment\n\n" + "\n".join(json.dumps(x) for x in lines) + "\n")
    rows = read_questions(path)
    assert len(rows) == 2
    assert rows[0].answer == "3" and rows[0].chat == [{"role": "user", "content": rows[0].text}]
    assert rows[1].text == "Calculate ( 1 + 2 )." and rows[1].group == "7"
    assert rows[1].key == "group:7" and rows[0].key == "arith:1+2"
    assert json.loads(rows[1].id)[0] == {"content": "Be brief.", "role": "system"}
    for bad, message in [
        ({"answer": "1"}, "exactly one of"),
        ({"question": "q", "messages": [{"role": "user", "content": "q"}], "answer": "1"}, "one"),
        ({"messages": [{"role": "system", "content": "s"}], "answer": "1"}, "no user message"),
        ({"question": "q"}, "answer"),
        ({"question": "q", "answer": "1", "extra": 1}, "extra"),
    ]:
        path.write_text(json.dumps(lines[0]) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=message) as raised:
            read_questions(path)
        assert ":2:" in str(raised.value)


def test_named_task_sets_give_distinct_questions_with_the_instruction() -> None:
    rows = task_questions(["add_sub_3term_1digit", "mul_1digit"], per_task=5, seed=1)
    assert (
        len(rows) == 10 and rows[0].task == "add_sub_3term_1digit" and rows[1].task == "mul_1digit"
    )
    assert all("single number" in r.chat[-1]["content"] for r in rows)
    assert len({r.id for r in rows}) == 10
    with pytest.raises(ValueError, match="unknown task"):
        task_questions(["nope"], 1)


def test_checkers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert checkers.label(checkers.verifier, "so the answer is 8.", "8") == 1
    assert checkers.label(checkers.verifier, "The answer is 7", "#### 8") == 0
    (tmp_path / "mycheck.py").write_text(
        "def exact(response, answer):\n    return 0.9 if response.strip() == answer else 0.1\n"
    )
    monkeypatch.chdir(tmp_path)
    mine = checkers.load_checker("mycheck:exact")
    assert checkers.label(mine, " 8 ", "8") == 1 and checkers.label(mine, "9", "8") == 0
    for spec in ("mycheck", "mycheck:nothing", "nomodule_here:f"):
        with pytest.raises(ValueError, match="--checker"):
            checkers.load_checker(spec)
    assert checkers.load_checker(None) is checkers.verifier
    checkers.check_answers(["8", "#### 3", "\\frac{1}{2}"])
    with pytest.raises(ValueError, match="cannot use the answer"):
        checkers.check_answers(["8", ""])


# ---- sampling -----------------------------------------------------------------------------------


def _rows(count: int) -> list[QuestionRow]:
    return [QuestionRow(question=f"Calculate {a} + 1.", answer=str(a + 1)) for a in range(count)]


def test_sampling_through_the_engine_is_journaled_and_resumes(tmp_path: Path) -> None:
    journal = tmp_path / "samples.jsonl"
    engine = FakeEngine(lambda prompt, i, spec: f"The answer is {i}.")
    sampler = EngineSampler(engine)
    rows = _rows(3)
    first = asyncio.run(
        sample_journaled(sampler, rows[:2], journal, n=4, max_tokens=32, temperature=0.7)
    )
    assert [q.question for q in first] == [r.id for r in rows[:2]]
    assert len(engine.calls) == 2 and engine.calls[0].n == 4
    with journal.open("a") as f:
        f.write('{"task": "", "question": "cut sh')  # an interrupted write
    again = asyncio.run(
        sample_journaled(sampler, rows, journal, n=4, max_tokens=32, temperature=0.7)
    )
    assert len(engine.calls) == 3  # only the new question was asked
    assert [q.gold for q in again] == ["1", "2", "3"]
    assert again[2].samples[3].text == "The answer is 3." and again[2].prompt
    assert len(read_journal(journal)) == 3
    # each question's seed does not depend on its place in the list
    seeds = {c.seed for c in engine.calls}
    assert len(seeds) == 3


def test_sampling_through_an_openai_compatible_server(tmp_path: Path) -> None:
    """`--base-url`: winnow's own server, on the fake engine, in-process over ASGI."""
    engine = FakeEngine(lambda prompt, i, spec: f"The answer is {i + 1}.")
    app = create_app(Settings(api_key="k"), engine)
    inner = app.app  # type: ignore[attr-defined]

    async def run() -> list:
        async with inner.router.lifespan_context(inner):
            sampler = HttpSampler(
                "http://policy/v1/", lambda m: "RENDERED " + m[-1]["content"], api_key="k",
                transport=httpx.ASGITransport(app=app),
            )  # fmt: skip
            try:
                rows = _rows(2)
                path = tmp_path / "j.jsonl"
                out = await sample_journaled(
                    sampler, rows, path, n=3, max_tokens=16, temperature=0.5, seed=2
                )
                assert sampler.model == "fake-model"
                bad = HttpSampler(
                    "http://policy", str, api_key="wrong", transport=httpx.ASGITransport(app=app)
                )
                with pytest.raises(httpx.HTTPStatusError):
                    await bad.sample([{"role": "user", "content": "x"}], n=1, max_tokens=4,
                                     temperature=0.0, seed=0)  # fmt: skip
                await bad.close()
                return out
            finally:
                await sampler.close()

    records = asyncio.run(run())
    assert [len(r.samples) for r in records] == [3, 3]
    assert records[0].prompt == "RENDERED Calculate 0 + 1."
    assert [s.text for s in records[1].samples] == [f"The answer is {i}." for i in (1, 2, 3)]
    assert engine.calls[0].n == 3 and engine.calls[0].temperature == 0.5


class _Recording(httpx.AsyncBaseTransport):
    """An ASGI transport that keeps each request's path and JSON body."""

    def __init__(self, app: object) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.sent: list[tuple[str, dict]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.sent.append((request.url.path, json.loads(request.content)))
        return await self.inner.handle_async_request(request)


def test_a_prompt_template_is_sent_to_v1_completions_as_is(tmp_path: Path) -> None:
    """A base model through a server: each question in the template, ``POST /v1/completions``
    with that text (no chat, no chat template: ``render`` is None), journaled as that text."""
    template = "Question: {question}\nAnswer:"
    engine = FakeEngine(lambda prompt, i, spec: f" {i + 1}.")
    app = create_app(Settings(api_key="k"), engine)
    inner = app.app  # type: ignore[attr-defined]
    transport = _Recording(app)

    async def run() -> list:
        async with inner.router.lifespan_context(inner):
            sampler = HttpSampler("http://policy", None, api_key="k", transport=transport)
            try:
                out = await sample_journaled(
                    sampler, _rows(2), tmp_path / "j.jsonl", n=3, max_tokens=16,
                    temperature=0.5, seed=2, template=template,
                )  # fmt: skip
                with pytest.raises(ValueError, match="chat template"):
                    await sampler.sample([{"role": "user", "content": "x"}], n=1, max_tokens=4,
                                         temperature=0.0, seed=0)  # fmt: skip
                return out
            finally:
                await sampler.close()

    records = asyncio.run(run())
    wanted = ["Question: Calculate 0 + 1.\nAnswer:", "Question: Calculate 1 + 1.\nAnswer:"]
    assert sorted(path for path, _ in transport.sent) == ["/v1/completions"] * 2
    assert sorted(body["prompt"] for _, body in transport.sent) == wanted
    assert all("messages" not in body and body["n"] == 3 for _, body in transport.sent)
    assert [r.prompt for r in records] == wanted
    assert [s.text for s in records[0].samples] == [" 1.", " 2.", " 3."]
    # the server read the text itself, not a chat rendering of it
    assert sorted("".join(map(chr, c.prompt)) for c in engine.calls) == wanted


# ---- held-out figures ---------------------------------------------------------------------------


def test_within_auc_interval_is_over_questions() -> None:
    perfect = heldout.within_auc_interval([[0.9, 0.1, 0.2]] * 10, [[1, 0, 0]] * 10)
    assert (perfect.value, perfect.low, perfect.high, perfect.questions) == (1.0, 1.0, 1.0, 10)
    mixed = heldout.within_auc_interval(
        [[0.9, 0.1], [0.1, 0.9], [0.5, 0.5], [1.0, 1.0]], [[1, 0], [1, 0], [1, 1], [1, 0]]
    )
    assert mixed.questions == 3  # the all-right question has no AUC
    assert mixed.value == pytest.approx(0.5) and mixed.low < 0.5 < mixed.high


def test_selection_averages_random_subsets_and_breaks_ties_by_expectation() -> None:
    rng = __import__("numpy").random.default_rng(0)
    # 4 answers: two wrong ones agree (group 0), the right one is alone but scored best
    best, majority, weighted, passed = heldout.question_selection(
        [0.1, 0.2, 0.9, 0.3], [0, 0, 1, 0], [0, 0, 1, 2], n=4, subsets=10, rng=rng
    )
    assert (best, majority, passed) == (1.0, 0.0, 1.0)
    assert weighted == 1.0  # group 0 sums 0.3, the right answer's group 0.9
    # a tie between two groups of one each: half right on average
    _, majority, _, _ = heldout.question_selection(
        [0.5, 0.5], [1, 0], [0, 1], n=2, subsets=1, rng=rng
    )
    assert majority == 0.5
    # subsets of 2 of 4 answers, one right: pass@2 is 1/2 on average
    _, _, _, passed = heldout.question_selection(
        [0.0] * 4, [1, 0, 0, 0], [0, 1, 2, 3], n=2, subsets=4000, rng=rng
    )
    assert passed == pytest.approx(0.5, abs=0.03)


def test_selection_gain_has_a_paired_interval() -> None:
    scores = [[0.9, 0.1, 0.2, 0.3]] * 20 + [[0.1, 0.9, 0.8, 0.7]] * 20
    labels = [[1, 0, 0, 0]] * 40
    groups = [[0, 1, 1, 1]] * 40
    figures = heldout.selection_at(scores, labels, groups, n=4, subsets=5, draws=500)
    assert figures.questions == 40 and figures.majority == 0.0 and figures.best_of_n == 0.5
    gain = figures.best_of_n_gain
    assert gain.value == pytest.approx(0.5) and 0.3 < gain.low < 0.5 < gain.high < 0.7
    assert figures.weighted_vote_gain.value == pytest.approx(0.5)
