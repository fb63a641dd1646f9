"""`winnow train fit --prompt-template` for a base model (no chat template), on a tiny model whose
tokenizer has none and a fake engine that has none either: each question is asked as the raw
completion prompt (the tokenizer's BOS once), journaled as that text, and the fit produces a
reward whose card says how to ask it; the template is a sampling setting (a re-run with another
is refused); a template without ``{question}``, a question given as several messages, and a base
model without the option are refused before anything is sampled."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.support.tiny_lm import tiny_lm, without_chat_template
from winnow.engine.base import ChatMessage, SamplingSpec
from winnow.engine.fake import FakeEngine
from winnow.train.fit import FitConfig, fit_reward
from winnow.train.prompting import template_prompt, unescape_option
from winnow.train.questions import QuestionRow, read_questions
from winnow.train.samples import read_journal
from winnow.train.sampling import EngineSampler

N = 6
TEMPLATE = "Question: {question}\nAnswer:"


class BaseEngine(FakeEngine):
    """The fake engine of a base model: no chat template; records whether each text was
    tokenized with the tokenizer's special prefix (BOS)."""

    def __init__(self) -> None:
        super().__init__(script)
        self.special: list[bool] = []

    async def apply_chat_template(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        raise ValueError("this model has no chat template")

    async def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        self.special.append(add_special_tokens)
        return await super().tokenize(text, add_special_tokens)


def script(prompt: str, index: int, spec: SamplingSpec) -> str:
    """Every third answer is right and plain, the others hedge and are wrong (as in
    test_train_fit), continuing the prompt's ``Answer:``."""
    a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
    return f" The answer is {a + b}." if index % 3 == 0 else f" Maybe {a + b + 1}?"


def _prompt_of(spec: SamplingSpec) -> str:
    """The text the fake engine was asked (its token ids are code points)."""
    assert not isinstance(spec.prompt, str)
    return "".join(chr(t) for t in spec.prompt)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("base")
    base = without_chat_template(tiny_lm(root / "chat"), root / "base")
    questions = root / "sums.jsonl"
    rows = [
        {"question": f"Calculate {a} + {b}.", "answer": a + b} for a in range(10) for b in range(4)
    ]
    questions.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root, base, questions


def _config(root: Path, model: Path, questions: Path, **changes: object) -> FitConfig:
    fields = dict(model=str(model), out=str(root / "out"), questions=str(questions), n=N,
                  max_tokens=32, subsets=20, mlp=False, select_at=(4,), name="sums",
                  objectives=("pairwise",), l2_grid=(1e-2,), prompt_template=TEMPLATE)  # fmt: skip
    return FitConfig(**{**fields, **changes})


@pytest.fixture(scope="module")
def fitted(setup: tuple[Path, Path, Path]) -> tuple[FitConfig, object, BaseEngine]:
    root, base, questions = setup
    engine = BaseEngine()
    config = _config(root, base, questions)
    return config, fit_reward(config, sampler=EngineSampler(engine)), engine


def test_the_copy_is_a_base_model(setup) -> None:
    from transformers import AutoTokenizer

    root, base, _ = setup
    assert AutoTokenizer.from_pretrained(root / "chat").chat_template is not None
    assert AutoTokenizer.from_pretrained(base).chat_template is None


def test_a_base_model_is_fitted_on_its_template_prompts(fitted, setup) -> None:
    config, report, engine = fitted
    _, _, questions = setup
    rows = read_questions(questions)
    wanted = [TEMPLATE.format(question=row.text) for row in rows]
    assert wanted[0] == "Question: Calculate 0 + 0.\nAnswer:"
    # asked as the raw text (no chat template), with the tokenizer's special prefix once
    assert sorted(_prompt_of(c) for c in engine.calls) == sorted(wanted)
    assert engine.special and all(engine.special)
    out = Path(config.out)
    journal = read_journal(out / "samples.jsonl")
    assert [r.prompt for r in journal] == wanted
    assert [r.question for r in journal] == [row.id for row in rows]
    assert report.heldout.within_auc.value > 0.9  # a reward, read on those prompts
    assert report.serve.startswith("winnow serve --model")
    assert json.loads((out / "report.json").read_text())["serve"] == report.serve
    sampling = json.loads((out / "fit.json").read_text())["sampling"]
    assert sampling["prompt_template"] == TEMPLATE
    meta = json.loads((out / "reward" / "probe.json").read_text())
    assert meta["config"]["prompt_template"] == TEMPLATE
    assert "asked as completion prompts" in meta["description"]
    card = (out / "reward" / "MODEL_CARD.md").read_text()
    assert f"completion prompt `{TEMPLATE!r}`" in card and "`/v1/completions`" in card
    assert "--prompt-template 'Question: {question}\\nAnswer:'" in card


def test_a_changed_template_on_a_rerun_is_refused(fitted, setup) -> None:
    config, _, _ = fitted
    root, base, questions = setup
    engine = BaseEngine()
    other = _config(root, base, questions, prompt_template="Q: {question}\nA:")
    with pytest.raises(ValueError, match=r"other settings.*prompt_template"):
        fit_reward(other, sampler=EngineSampler(engine))
    assert engine.calls == []
    again = fit_reward(config, sampler=EngineSampler(engine))  # the same template resumes
    assert engine.calls == [] and again.serve


def test_the_command_line_passes_the_template(fitted, setup, capsys) -> None:
    """As typed in a shell: ``\\n`` is the newline; the journal holds every question, so the
    run resumes (another template would be refused, no template would be for the base model)."""
    from winnow.cli import main

    config, report, _ = fitted
    _, base, questions = setup
    argv = ["train", "fit", "--model", str(base), "--questions", str(questions),
            "--out", config.out, "--n", str(N), "--max-tokens", "32", "--no-mlp",
            "--name", "sums", "--objectives", "pairwise"]  # fmt: skip
    assert main([*argv, "--prompt-template", r"Question: {question}\nAnswer:"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("\n{") + 1 :])["serve"] == report.serve
    with pytest.raises(SystemExit):
        main([*argv, "--prompt-template", "Answer:"])
    assert "has no {question}" in capsys.readouterr().err


def test_a_template_must_place_the_question_and_nothing_else() -> None:
    fields = dict(model="m", out="o", questions="q.jsonl")
    for bad, said in [
        ("Answer:", "has no {question}"),
        ("Question: {q}\nAnswer:", "has no {question}"),
        ("{question!r}", "has no {question}"),
        ("{question} {answer}", r"not \{answer\}"),
        ("{question} {", "Single '{'"),
    ]:
        with pytest.raises(ValidationError, match=said):
            FitConfig(**fields, prompt_template=bad)
    kept = FitConfig(**fields, prompt_template="{{x}} {question}\n")
    assert kept.prompt_template == "{{x}} {question}\n"
    assert template_prompt(kept.prompt_template, QuestionRow(question="1+1", answer="2")) == (
        "{x} 1+1\n"
    )
    assert unescape_option(r"a\nb\tc\\n\x") == "a\nb\tc\\n\\x"


def test_a_base_model_without_the_option_is_told_to_give_it(setup, tmp_path: Path) -> None:
    _, base, questions = setup
    engine = BaseEngine()
    config = _config(tmp_path, base, questions, prompt_template=None)
    with pytest.raises(ValueError) as raised:
        fit_reward(config, sampler=EngineSampler(engine))
    said = str(raised.value)
    assert f"the model at {base} has no chat template (a base model?)" in said
    assert "give --prompt-template 'Question: {question}\\nAnswer:'" in said
    assert engine.calls == [] and not (tmp_path / "out" / "samples.jsonl").exists()


def test_a_question_given_as_several_messages_is_refused(setup, tmp_path: Path) -> None:
    _, base, _ = setup
    one = QuestionRow(messages=({"role": "user", "content": "Calculate 1 + 2."},), answer="3")
    assert template_prompt(TEMPLATE, one) == "Question: Calculate 1 + 2.\nAnswer:"
    lines = [{"question": f"Calculate {a} + 1.", "answer": a + 1} for a in range(9)]
    lines.append(
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Calculate 9 + 1."}], "answer": 10}
    )  # fmt: skip
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    engine = BaseEngine()
    with pytest.raises(ValueError, match=r"'Calculate 9 \+ 1\.' is given as messages \(system"):
        fit_reward(_config(tmp_path, base, questions), sampler=EngineSampler(engine))
    assert engine.calls == [] and not (tmp_path / "out" / "samples.jsonl").exists()
