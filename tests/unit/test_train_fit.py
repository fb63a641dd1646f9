"""`winnow train fit` end to end (#31) on a tiny random model and the scripted fake engine: from a
questions file to a reward directory with identity, domain and card, and a rewards config the
server builds for that model (and refuses for another); re-runs resume from the journal."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from tests.support.tiny_lm import tiny_lm
from winnow.engine.base import SamplingSpec
from winnow.engine.fake import FakeEngine
from winnow.rewards.base import OutcomeItem
from winnow.rewards.configs import RewardConfigError
from winnow.rewards.policy_check import Policy
from winnow.rewards.registry import build_rewards, load_configs
from winnow.train.fit import FitConfig, fit_reward, split_rows
from winnow.train.questions import read_questions
from winnow.train.sampling import EngineSampler

N = 6


def script(prompt: str, index: int, spec: SamplingSpec) -> str:
    """Every third answer is right and says so plainly; the others hedge and are wrong: a
    difference the head can read off the answer's last state."""
    a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
    return f"The answer is {a + b}." if index % 3 == 0 else f"Maybe {a + b + 1}?"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("fit")
    model = tiny_lm(root / "model")
    questions = root / "sums.jsonl"
    rows = [
        {"question": f"Calculate {a} + {b}.", "answer": a + b} for a in range(10) for b in range(4)
    ]
    rows.append({"question": "Calculate ( 3 + 2 ).", "answer": 5})  # a spelling of 3 + 2
    questions.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root, model, questions


def _config(root: Path, model: Path, questions: Path, **changes: object) -> FitConfig:
    fields = dict(model=str(model), out=str(root / "out"), questions=str(questions), n=N,
                  max_tokens=32, subsets=20, mlp=False, select_at=(4,), name="sums",
                  objectives=("pairwise",), l2_grid=(1e-2,))  # fmt: skip
    return FitConfig(**{**fields, **changes})


@pytest.fixture(scope="module")
def fitted(setup: tuple[Path, Path, Path]) -> tuple[FitConfig, object, FakeEngine]:
    root, model, questions = setup
    engine = FakeEngine(script)
    config = _config(root, model, questions)
    report = fit_reward(config, sampler=EngineSampler(engine))
    return config, report, engine


def test_the_split_keeps_spellings_of_one_problem_together(setup) -> None:
    _, _, questions = setup
    rows = read_questions(questions)
    train, held = split_rows(rows, 0.3)
    sides = {r.text: ("train" if r in train else "eval") for r in rows}
    assert sides["Calculate ( 3 + 2 )."] == sides["Calculate 3 + 2."]
    assert 5 < len(held) < 20


def test_fit_writes_a_reward_with_identity_heldout_figures_domain_and_card(fitted) -> None:
    config, report, engine = fitted
    assert len(engine.calls) == 41 and engine.calls[0].n == N
    out = Path(config.out)
    meta = json.loads((out / "reward" / "probe.json").read_text())
    assert meta["identity"]["name"] == "model" and meta["identity"]["hidden_size"] == 32
    assert meta["kind"] == "outcome" and meta["output"] == "sigmoid"
    held = report.heldout
    assert held.leak.shared == 0 and held.questions + report.train_questions == 41
    # the hedged wrong answers are easy to tell from the plain right ones
    assert held.within_auc.value > 0.9 and held.within_auc.low <= held.within_auc.value
    (at4, at6) = held.selection
    assert (at4.n, at6.n) == (4, 6)
    assert at6.best_of_n > 0.9 and at6.majority == 0.0  # the wrong answers agree
    assert at6.best_of_n_gain.low > 0
    assert (out / "reward" / "domain" / "probe.json").exists()
    card = (out / "reward" / "MODEL_CARD.md").read_text()
    assert f"{held.within_auc.value:.3f}" in card and "best_of_n - majority" in card
    assert "Where it applies" in card and "winnow train fit" in card
    assert json.loads((out / "report.json").read_text())["serve"].startswith("winnow serve")
    settings = json.loads((out / "fit.json").read_text())
    assert settings["sampling"]["n"] == N and "api_key" not in settings["config"]


def test_the_rewards_config_is_served_on_its_model_only(fitted, setup) -> None:
    _, report, _ = fitted
    root, model, _ = setup
    configs = load_configs(report.rewards_config)
    assert [c.name for c in configs] == ["sums", "verifier"]
    rewards = build_rewards(configs, default_model_dir=None, policy=Policy(str(model)))
    reward = rewards.get("sums")
    asyncio.run(reward.start())
    prompt = "<user>Calculate 2 + 2.<assistant>"
    scored = asyncio.run(
        reward.score([OutcomeItem(prompt, "The answer is 4."), OutcomeItem(prompt, "Maybe 7?")])
    )
    assert scored.scores[0] > scored.scores[1]
    assert scored.domain is not None and scored.domain[0].threshold == report.domain_threshold
    other = tiny_lm(root / "other", seed=9)
    with pytest.raises(RewardConfigError, match="winnow train fit --model"):
        build_rewards(configs, default_model_dir=None, policy=Policy(str(other)))


def test_a_rerun_resumes_from_the_journal_and_other_sampling_is_refused(fitted, setup) -> None:
    config, report, _ = fitted
    root, model, questions = setup
    engine = FakeEngine(script)
    again = fit_reward(config, sampler=EngineSampler(engine))
    assert engine.calls == []  # every question was in the journal
    assert again.heldout.within_auc == report.heldout.within_auc
    with pytest.raises(ValueError, match="other settings"):
        fit_reward(_config(root, model, questions, n=N + 1), sampler=EngineSampler(engine))


def test_the_command_line_runs_the_same_fit(fitted, setup, capsys) -> None:
    """`winnow train fit` on a journal that holds every question: no engine is started."""
    from winnow.cli import main

    config, report, _ = fitted
    _, model, questions = setup
    argv = ["train", "fit", "--model", str(model), "--questions", str(questions),
            "--out", config.out, "--n", str(N), "--max-tokens", "32", "--no-mlp",
            "--name", "sums", "--objectives", "pairwise"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("\n{") + 1 :])
    assert printed["serve"] == report.serve and "heldout_within_auc" in printed
    with pytest.raises(SystemExit):
        main(["train", "fit", "--model", str(model), "--out", config.out])  # no questions


def test_too_few_questions_or_nothing_to_rank_is_said(tmp_path: Path, setup) -> None:
    _, model, _ = setup
    few = tmp_path / "few.jsonl"
    few.write_text('{"question": "Calculate 1 + 1.", "answer": 2}\n')
    with pytest.raises(ValueError, match="at least 5"):
        fit_reward(_config(tmp_path, model, few), sampler=EngineSampler(FakeEngine(script)))
    many = tmp_path / "many.jsonl"
    many.write_text(
        "\n".join(json.dumps({"question": f"Calculate {a} + 9.", "answer": -1}) for a in range(30))
    )
    with pytest.raises(ValueError, match="nothing to learn to rank"):
        fit_reward(_config(tmp_path, model, many), sampler=EngineSampler(FakeEngine(script)))
