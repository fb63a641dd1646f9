"""`winnow train fit --seed-journal`: answers sampled before are imported into the fit's journal
only when they are what the fit would have sampled (the prompt the model's template renders, the
gold answer, n, max_tokens, token ids that decode to the texts); a seeded fit samples nothing, a
re-run imports nothing again, and a refused import writes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.rewards.refit_questions import questions_file
from tests.support.tiny_lm import tiny_lm
from winnow.engine.base import SamplingSpec
from winnow.engine.fake import FakeEngine
from winnow.train.fit import FitConfig, fit_reward, sample_all
from winnow.train.questions import read_questions
from winnow.train.samples import QuestionSamples, Sample, read_journal
from winnow.train.sampling import EngineSampler
from winnow.train.seeding import seed_journal
from winnow.train.tasks import messages

N, MAX_TOKENS = 4, 24


def script(prompt: str, index: int, spec: SamplingSpec) -> str:
    a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
    return f"The answer is {a + b}." if index % 2 == 0 else f"Maybe {a + b + 1}?"


def _stored(tokenizer: Any, question: str, gold: int, *, bare: bool = False) -> QuestionSamples:
    """A record as `winnow train samples` writes it: the bare question, asked with the task
    instruction (``bare``: asked without it), N answers, the last one cut at MAX_TOKENS."""
    chat = [{"role": "user", "content": question}] if bare else messages(question)
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    samples = []
    for i in range(N - 1):
        text = f"The answer is {gold}." if i % 2 == 0 else f"Maybe {gold + 1}?"
        ids = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
        samples.append(Sample(text, ids, "stop"))
    cut = ("Let me think step by step about it." * 2)[:MAX_TOKENS]
    samples.append(Sample(cut, tokenizer.encode(cut, add_special_tokens=False), "length"))
    return QuestionSamples("sums", question, str(gold), prompt, samples)


def _write(path: Path, records: list[QuestionSamples]) -> Path:
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("seed")
    model = tiny_lm(root / "model")
    tokenizer = AutoTokenizer.from_pretrained(model)
    records = [
        _stored(tokenizer, f"Calculate {a} + {b}.", a + b) for a in range(10) for b in range(4)
    ]
    stored = _write(root / "stored.jsonl", records)
    questions = root / "questions.jsonl"
    assert questions_file(stored, questions) == 40
    return root, model, stored, questions


def _config(root: Path, model: Path, questions: Path, **changes: object) -> FitConfig:
    fields = dict(model=str(model), out=str(root / "out"), questions=str(questions), n=N,
                  max_tokens=MAX_TOKENS, subsets=20, mlp=False, select_at=(2,), name="sums",
                  objectives=("pairwise",), l2_grid=(1e-2,))  # fmt: skip
    return FitConfig(**{**fields, **changes})


def test_a_matching_journal_is_imported_and_nothing_is_sampled(setup) -> None:
    root, model, stored, questions = setup
    config = _config(root, model, questions, seed_journal=str(stored))
    engine = FakeEngine(script)
    report = fit_reward(config, sampler=EngineSampler(engine))
    assert engine.calls == []  # every answer came from the stored journal
    out = Path(config.out)
    rows = read_questions(questions)
    journal = read_journal(out / "samples.jsonl")
    assert [r.question for r in journal] == [row.id for row in rows]  # the fit's ids, not bare
    assert [r.prompt for r in journal] == [r.prompt for r in read_journal(stored)]
    sampling = json.loads((out / "fit.json").read_text())["sampling"]
    (seeded,) = sampling["seeded_from"]
    assert (seeded["imported"], seeded["missing"], seeded["unused"]) == (40, 0, 0)
    assert sampling["n"] == N and sampling["max_tokens"] == MAX_TOKENS
    card = (out / "reward" / "MODEL_CARD.md").read_text()
    assert "were imported from it" in card and f"--seed-journal {stored}" in card

    engine = FakeEngine(script)
    again = fit_reward(config, sampler=EngineSampler(engine))
    assert engine.calls == []
    assert again.heldout.within_auc == report.heldout.within_auc
    sampling = json.loads((out / "fit.json").read_text())["sampling"]
    assert len(sampling["seeded_from"]) == 1  # a re-run imports nothing, the record stays
    assert len(read_journal(out / "samples.jsonl")) == 40


def test_a_prompt_the_model_would_not_render_is_refused_and_nothing_written(
    setup, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    _, model, stored, questions = setup
    records = read_journal(stored)
    records[7] = _stored(AutoTokenizer.from_pretrained(model), records[7].question, 0, bare=True)
    records[7].gold = read_journal(stored)[7].gold  # only the prompt differs
    bad = _write(tmp_path / "bad.jsonl", records)
    engine = FakeEngine(script)
    config = _config(tmp_path, model, questions, seed_journal=str(bad))
    with pytest.raises(ValueError, match=r"1 of the 40 .* not the model's rendering"):
        fit_reward(config, sampler=EngineSampler(engine))
    assert engine.calls == [] and read_journal(tmp_path / "out" / "samples.jsonl") == []


@pytest.mark.parametrize(
    ("changes", "said"),
    [({"n": N + 1}, "not n=5"), ({"max_tokens": MAX_TOKENS + 8}, "max_tokens=32")],
)
def test_other_sampling_settings_are_refused(setup, tmp_path: Path, changes, said) -> None:
    _, model, stored, questions = setup
    config = _config(tmp_path, model, questions, seed_journal=str(stored), **changes)
    with pytest.raises(ValueError, match=said):
        fit_reward(config, sampler=EngineSampler(FakeEngine(script)))
    assert read_journal(tmp_path / "out" / "samples.jsonl") == []


def test_token_ids_of_another_text_are_refused(setup, tmp_path: Path) -> None:
    _, model, stored, questions = setup
    records = read_journal(stored)
    records[3].samples[0].text = "The answer is 99."
    other = _write(tmp_path / "x.jsonl", records)
    rows, journal = read_questions(questions), tmp_path / "j.jsonl"
    with pytest.raises(ValueError, match="decode to"):
        seed_journal(rows, other, journal, model=str(model), n=N, max_tokens=MAX_TOKENS)


def test_questions_the_journal_lacks_are_sampled_and_only_they(setup, tmp_path: Path) -> None:
    _, model, stored, questions = setup
    part = _write(tmp_path / "part.jsonl", read_journal(stored)[:30])
    rows = read_questions(questions)
    journal = tmp_path / "out" / "samples.jsonl"
    seeded = seed_journal(rows, part, journal, model=str(model), n=N, max_tokens=MAX_TOKENS)
    assert (seeded.imported, seeded.already, seeded.missing) == (30, 0, 10)
    engine = FakeEngine(script)
    config = _config(tmp_path, model, questions, seed_journal=str(part))
    records = sample_all(config, rows, journal, EngineSampler(engine), None)
    assert len(engine.calls) == 10 and [r.question for r in records] == [r.id for r in rows]
    again = seed_journal(rows, part, journal, model=str(model), n=N, max_tokens=MAX_TOKENS)
    assert (again.imported, again.already, again.missing) == (0, 40, 0)


def test_with_a_prompt_template_stored_prompts_must_be_the_template_s(
    setup, tmp_path: Path
) -> None:
    """A base model's fit (``--prompt-template``) imports answers asked with the template's text,
    and refuses answers asked as chats (the stored prompts are the chat template's rendering)."""
    from winnow.train.prompting import template_prompt

    _, model, stored, questions = setup
    template, rows = "Question: {question}\nAnswer:", read_questions(questions)
    config = _config(tmp_path, model, questions, seed_journal=str(stored), prompt_template=template)
    engine = FakeEngine(script)
    with pytest.raises(ValueError, match="is not --prompt-template's rendering 'Question: "):
        fit_reward(config, sampler=EngineSampler(engine))
    assert engine.calls == [] and read_journal(tmp_path / "out" / "samples.jsonl") == []
    records = read_journal(stored)
    for row, record in zip(rows, records, strict=True):
        record.prompt = template_prompt(template, row)
    asked = _write(tmp_path / "asked.jsonl", records)
    seeded = seed_journal(rows, asked, tmp_path / "j.jsonl", model=str(model), n=N,
                          max_tokens=MAX_TOKENS, prompt_template=template)  # fmt: skip
    assert seeded.imported == 40
    journal = read_journal(tmp_path / "j.jsonl")
    assert journal[0].prompt == f"Question: {rows[0].text}\nAnswer:"
