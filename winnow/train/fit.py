"""`winnow train fit`: from questions with answers to a reward the server loads, for any model.

::

    winnow train fit --model DIR --questions FILE.jsonl --out OUT [--base-url URL]

1. the questions (:mod:`winnow.train.questions`; or ``--tasks`` named sets) are split into
   training and held-out questions by their problem key (:mod:`winnow.train.problem_keys`), so
   two wordings of one problem are never on both sides;
2. the policy answers every question ``n`` times, through the in-process engine or a running
   OpenAI-compatible server of the same model (``--base-url``), journaled in ``OUT/samples.jsonl``:
   a re-run asks only what is missing (:mod:`winnow.train.sampling`);
3. the checker labels every answer (the verifier, or ``--checker module:function``);
4. the policy's own final hidden states at each answer are read with transformers
   (:mod:`winnow.train.features`, cached in ``OUT/features``);
5. a head is chosen by cross-validation by question and calibrated
   (:func:`winnow.train.outcome.select_head`) on the training questions;
6. it is measured ONCE on the held-out questions, with intervals (:mod:`winnow.train.heldout`);
7. its domain is fitted: the training prompts' states, a threshold at a quantile of the
   held-out prompts' distances (:mod:`winnow.train.domain`);
8. written out: ``OUT/reward/`` (``head.safetensors``, ``probe.json`` with the backbone's
   identity and every figure, ``domain/``, ``MODEL_CARD.md``), ``OUT/rewards.json`` (what
   ``winnow serve --model DIR --rewards-config OUT/rewards.json`` loads) and ``OUT/report.json``.

``OUT/fit.json`` records the settings; a re-run with other sampling settings (model, n,
max_tokens, temperature, seed, prompt template) into the same directory is refused rather than
mixing samples.

``--prompt-template TEXT`` asks each question as the completion prompt ``TEXT`` with the question
in it, not as a chat (a base model has no chat template: :mod:`winnow.train.prompting`); without it
a model that has no chat template is refused before anything is sampled.

``--seed-journal FILE`` imports answers sampled before (checked: :mod:`winnow.train.seeding`)
into the journal first, so only the questions it lacks are sampled.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from winnow.heads.identity import identity_of
from winnow.train.checkers import Checker, check_answers, label, load_checker
from winnow.train.heldout import Interval, SelectionFigures, selection_at, within_auc_interval
from winnow.train.problem_keys import LeakReport, leak_report, split_of_key
from winnow.train.prompting import check_template, require_chat_template, template_prompt
from winnow.train.questions import QuestionRow, read_questions, task_questions
from winnow.train.samples import QuestionSamples, read_journal
from winnow.train.sampling import Render, Sampler

REWARD_DIR, REWARDS_CONFIG, JOURNAL, SETTINGS, REPORT = (
    "reward", "rewards.json", "samples.jsonl", "fit.json", "report.json"
)  # fmt: skip


class FitConfig(BaseModel):
    """What `winnow train fit` is asked to do (its options; stored as ``OUT/fit.json``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The policy's model directory (what the server will serve).")
    out: str = Field(description="Output directory (samples journal, features, the reward).")
    questions: str | None = Field(None, description="A JSONL file of questions with answers.")
    tasks: tuple[str, ...] = Field((), description="Named task sets instead of a file.")
    per_task: int = Field(200, ge=1, description="Questions per named task set.")
    name: str = Field("fitted", pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="Reward name.")
    base_url: str | None = Field(None, description="An OpenAI-compatible server of the model.")
    served_model: str | None = Field(None, description="Its model name (default: its first).")
    checker: str | None = Field(None, description="module:function; default: the verifier.")
    n: int = Field(16, ge=2, le=512, description="Answers per question.")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, gt=0)
    seed: int = 0
    eval_fraction: float = Field(0.3, gt=0, lt=1, description="Of problem keys, held out.")
    select_at: tuple[int, ...] = Field((4, 8), description="N of the held-out selection figures.")
    subsets: int = Field(300, ge=1, description="Random N-subsets per question.")
    domain_quantile: float = Field(0.95, gt=0, le=1)
    concurrency: int = Field(4, ge=1, description="Questions sampled at once.")
    mlp: bool = Field(True, description="Also try a ReLU MLP head (slower).")
    objectives: tuple[Literal["listwise", "pairwise", "pointwise"], ...] = Field(
        ("listwise", "pairwise", "pointwise"), description="Linear heads' objectives tried."
    )
    l2_grid: tuple[float, ...] = Field((1e-4, 1e-3, 1e-2, 1e-1), min_length=1)
    max_model_len: int = Field(2048, ge=64, description="The in-process engine's context.")
    seed_journal: str | None = Field(
        None, description="A journal of answers sampled before, imported (checked) unsampled."
    )
    prompt_template: str | None = Field(
        None,
        description="Ask each question as this completion prompt ('{question}' in it), not as a "
        "chat through the model's chat template (a base model has none).",
    )

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _source(self) -> FitConfig:
        if (self.questions is None) == (not self.tasks):
            raise ValueError("give exactly one of --questions and --tasks")
        if not self.objectives and not self.mlp:
            raise ValueError("no head to fit: give --objectives or leave the MLP on")
        return self

    def sampling(self) -> dict[str, Any]:
        """What the journal's answers depend on: a re-run must not change it."""
        identity = identity_of(self.model)
        return {
            "model_config_sha256": identity.config_sha256,
            "model_weights_sha256": identity.weights_sha256,
            **self.model_dump(
                include={"n", "max_tokens", "temperature", "seed", "prompt_template"}
            ),
        }


class HeldOut(BaseModel):
    """The figures of a fitted reward on its held-out questions (measured once)."""

    model_config = ConfigDict(extra="forbid")

    questions: int
    samples: int
    accuracy_of_samples: float
    questions_with_both: int
    within_auc: Interval
    pooled_auc: float | None
    selection: list[SelectionFigures]
    leak: LeakReport


class FitReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reward_dir: str
    rewards_config: str
    card: str
    train_questions: int
    train_samples: int
    train_accuracy_of_samples: float
    train_questions_with_both: int
    feature: str
    objective: str
    l2: float
    cv_within_auc: dict[str, float]
    heldout: HeldOut
    domain_threshold: float
    serve: str


def load_rows(config: FitConfig) -> list[QuestionRow]:
    if config.questions is not None:
        return read_questions(Path(config.questions))
    return task_questions(config.tasks, config.per_task, seed=config.seed)


def split_rows(
    rows: Sequence[QuestionRow], eval_fraction: float
) -> tuple[list[QuestionRow], list[QuestionRow]]:
    """(training, held-out) questions, by problem key."""
    train, held = [], []
    for row in rows:
        (held if split_of_key(row.key, eval_fraction) == "eval" else train).append(row)
    return train, held


def _settings_file(out: Path, config: FitConfig) -> None:
    """Write ``fit.json``; refuse a run whose sampling differs from the journal's (what was
    imported into the journal, ``seeded_from``, stays recorded)."""
    path = out / SETTINGS
    sampling = config.sampling()
    if path.exists() and (out / JOURNAL).exists():
        before = json.loads(path.read_text()).get("sampling", {})
        changed = {k: (before.get(k), v) for k, v in sampling.items() if before.get(k) != v}
        if changed:
            raise ValueError(
                f"{out / JOURNAL} was sampled with other settings ({changed}): run with the "
                "same ones to resume, or give another --out"
            )
        if "seeded_from" in before:
            sampling["seeded_from"] = before["seeded_from"]
    path.write_text(
        json.dumps({"config": config.model_dump(), "sampling": sampling}, indent=2) + "\n"
    )


def _seed(out: Path, config: FitConfig, rows: Sequence[QuestionRow]) -> None:
    """Import ``--seed-journal``'s answers to ``rows`` into the journal; record the import in
    ``fit.json``'s ``sampling.seeded_from``."""
    from winnow.train.seeding import seed_journal

    assert config.seed_journal is not None
    seeded = seed_journal(
        rows, Path(config.seed_journal), out / JOURNAL, model=config.model, n=config.n,
        max_tokens=config.max_tokens, prompt_template=config.prompt_template,
    )  # fmt: skip
    print(
        f"[fit] --seed-journal: {seeded.imported} questions imported, {seeded.already} already "
        f"in the journal, {seeded.missing} to sample",
        flush=True,
    )
    if seeded.imported:
        data = json.loads((out / SETTINGS).read_text())
        data["sampling"].setdefault("seeded_from", []).append(seeded.model_dump())
        (out / SETTINGS).write_text(json.dumps(data, indent=2) + "\n")


def _check_prompts(config: FitConfig, rows: Sequence[QuestionRow]) -> None:
    """Every question can be asked as this fit asks it (before anything is sampled or written):
    as the prompt template's completion prompt, or as a chat the model's template renders."""
    if config.prompt_template is None:
        require_chat_template(config.model)
        return
    for row in rows:
        template_prompt(config.prompt_template, row)


def fit_reward(
    config: FitConfig, *, sampler: Sampler | None = None, api_key: str | None = None
) -> FitReport:
    """Run every step (see the module's docstring); ``sampler`` replaces the in-process engine
    or ``--base-url`` (tests)."""
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(config)
    _check_prompts(config, rows)
    checker = load_checker(config.checker)
    if config.checker is None:
        check_answers([row.answer for row in rows])
    train_rows, held_rows = split_rows(rows, config.eval_fraction)
    if len(train_rows) < 5 or not held_rows:
        raise ValueError(
            f"{len(rows)} questions give {len(train_rows)} training and {len(held_rows)} held-out "
            "ones: at least 5 and 1 are needed (more questions, or another --eval-fraction)"
        )
    _settings_file(out, config)
    if config.seed_journal is not None:
        _seed(out, config, rows)
    print(
        f"[fit] {len(rows)} questions: {len(train_rows)} training, {len(held_rows)} held out "
        f"(by problem key), n={config.n}",
        flush=True,
    )
    records = sample_all(config, rows, out / JOURNAL, sampler, api_key)
    by_id = {row.id: record for row, record in zip(rows, records, strict=True)}
    return _fit(config, out, checker, train_rows, held_rows, by_id)


def sample_all(
    config: FitConfig,
    rows: Sequence[QuestionRow],
    journal: Path,
    sampler: Sampler | None,
    api_key: str | None,
) -> list[QuestionSamples]:
    """Every question's record, sampling only those the journal lacks (no engine is started,
    no server asked, when it has them all)."""
    from winnow.train.sampling import sample_journaled

    done = {r.question for r in read_journal(journal)}
    if all(row.id in done for row in rows):
        kept = {r.question: r for r in read_journal(journal)}
        return [kept[row.id] for row in rows]
    settings = dict(
        n=config.n, max_tokens=config.max_tokens, temperature=config.temperature,
        seed=config.seed, concurrency=config.concurrency, template=config.prompt_template,
    )  # fmt: skip
    if sampler is not None:
        return asyncio.run(sample_journaled(sampler, rows, journal, **settings))  # type: ignore[arg-type]
    if config.base_url is not None:
        return asyncio.run(_sample_http(config, rows, journal, api_key, settings))
    return asyncio.run(_sample_in_process(config, rows, journal, settings))


def _chat_render(model: str) -> Render:
    """The model directory's chat template: what a server of the model renders a chat with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)

    def render(messages: list[dict[str, str]]) -> str:
        return str(
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )

    return render


async def _sample_http(
    config: FitConfig,
    rows: Sequence[QuestionRow],
    journal: Path,
    api_key: str | None,
    settings: dict[str, Any],
) -> list[QuestionSamples]:
    from winnow.train.sampling import HttpSampler, sample_journaled

    # a completion prompt is sent and journaled as is; a chat as the model's template renders it
    render = None if config.prompt_template is not None else _chat_render(config.model)
    assert config.base_url is not None
    sampler = HttpSampler(config.base_url, render, model=config.served_model, api_key=api_key)
    try:
        return await sample_journaled(sampler, rows, journal, **settings)
    finally:
        await sampler.close()


async def _sample_in_process(
    config: FitConfig, rows: Sequence[QuestionRow], journal: Path, settings: dict[str, Any]
) -> list[QuestionSamples]:
    """The policy in this process (vLLM); SIGTERM cancels the run so the engine's processes are
    shut down, not orphaned; what is in the journal stays for the next run."""
    from winnow.engine.vllm_local import VllmEngine
    from winnow.settings import default_data_dir
    from winnow.train.sampling import EngineSampler, sample_journaled

    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    engine = VllmEngine(
        config.model,
        engine_args={"max_model_len": config.max_model_len},
        cache_dir=default_data_dir() / "cache",
    )
    await engine.start()
    try:
        return await sample_journaled(EngineSampler(engine), rows, journal, **settings)
    finally:
        await engine.shutdown()


def _labels(checker: Checker, records: Sequence[QuestionSamples]) -> list[list[int]]:
    return [[label(checker, s.text, r.gold) for s in r.samples] for r in records]


def _flat(labels: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor([v for row in labels for v in row], dtype=torch.long)
    qid = torch.tensor([q for q, row in enumerate(labels) for _ in row], dtype=torch.long)
    return y, qid


def _fit(
    config: FitConfig,
    out: Path,
    checker: Checker,
    train_rows: list[QuestionRow],
    held_rows: list[QuestionRow],
    by_id: dict[str, QuestionSamples],
) -> FitReport:
    from winnow.answers.groups import answers_and_groups
    from winnow.train.features import FeatureReader, extract
    from winnow.train.outcome import select_head
    from winnow.train.ranking import auc, within_auc

    train, held = [by_id[r.id] for r in train_rows], [by_id[r.id] for r in held_rows]
    train_labels, held_labels = _labels(checker, train), _labels(checker, held)
    y, qid = _flat(train_labels)
    both = within_auc(y.float(), y, qid)[1]
    if both < 2:
        raise ValueError(
            f"only {both} training questions have both right and wrong answers "
            f"({float(y.float().mean()):.0%} of the answers are right): nothing to learn to rank; "
            "ask questions the model sometimes gets right, or sample more answers (--n)"
        )
    reader = FeatureReader(config.model)
    print(f"[fit] features of {len(train) + len(held)} questions' answers", flush=True)
    features = extract(reader, train, out / "features")
    chosen = select_head(
        features, y, qid, mlp=config.mlp, objectives=config.objectives, grid=config.l2_grid
    )
    x = features[chosen.feature].float()
    train_p = torch.sigmoid(chosen.head(x))

    held_x = extract(reader, held, out / "features")[chosen.feature].float()
    held_p = torch.sigmoid(chosen.head(held_x)).tolist()
    scores, start = [], 0
    for row in held_labels:
        scores.append(held_p[start : start + len(row)])
        start += len(row)
    groups = [answers_and_groups([s.text for s in r.samples])[1] for r in held]
    hy, _ = _flat(held_labels)
    heldout = HeldOut(
        questions=len(held),
        samples=len(hy),
        accuracy_of_samples=float(hy.float().mean()),
        questions_with_both=sum(len(set(row)) > 1 for row in held_labels),
        within_auc=within_auc_interval(scores, held_labels, seed=config.seed),
        pooled_auc=auc(held_p, hy.tolist()),
        selection=[
            selection_at(scores, held_labels, groups, k, subsets=config.subsets, seed=config.seed)
            for k in sorted({k for k in (*config.select_at, config.n) if 2 <= k <= config.n})
        ],
        leak=leak_report(
            [(r.text, r.group) for r in held_rows], [(r.text, r.group) for r in train_rows]
        ),
    )
    reward_dir = out / REWARD_DIR
    if reward_dir.exists():
        shutil.rmtree(reward_dir)  # a domain or card of an earlier fit must not survive
    meta = _meta(config, chosen, train, y, train_p, both, heldout)
    from winnow.heads.probe import save_head

    save_head(reward_dir, chosen.head.tensors(), meta)
    from winnow.train.domain import fit_domain

    domain = fit_domain(
        reward_dir,
        reader.prompt_states([r.prompt for r in train]),
        reader.prompt_states([r.prompt for r in held]),
        quantile=config.domain_quantile,
    )
    from winnow.train.fit_card import fit_card

    card = fit_card(reward_dir)
    rewards_config = write_rewards_config(out, config.name, reward_dir, config.model)
    serve = f"winnow serve --model {config.model} --rewards-config {rewards_config}"
    report = FitReport(
        reward_dir=str(reward_dir),
        rewards_config=str(rewards_config),
        card=str(card),
        train_questions=len(train),
        train_samples=len(y),
        train_accuracy_of_samples=float(y.float().mean()),
        train_questions_with_both=both,
        feature=chosen.feature,
        objective=chosen.objective,
        l2=chosen.l2,
        cv_within_auc=chosen.cv,
        heldout=heldout,
        domain_threshold=domain.meta.threshold,
        serve=serve,
    )
    (out / REPORT).write_text(report.model_dump_json(indent=2) + "\n")
    return report


def _meta(
    config: FitConfig,
    chosen: Any,
    train: list[QuestionSamples],
    y: torch.Tensor,
    train_p: torch.Tensor,
    both: int,
    heldout: HeldOut,
) -> dict[str, Any]:
    from winnow.train.outcome import WHERE_READ

    identity = identity_of(config.model)
    kind = "a ReLU MLP head (64 hidden)" if chosen.objective == "mlp" else "a linear head"
    objective = "pairwise" if chosen.objective == "mlp" else chosen.objective
    r_star = float(torch.quantile(train_p, 0.75))
    source = config.questions or f"task sets {', '.join(config.tasks)}"
    return {
        "kind": "outcome",
        "layer": -1,
        "position": chosen.feature,
        "output": "sigmoid",
        "backbone": str(Path(config.model).resolve()),
        "identity": identity.model_dump(),
        "description": f"P(correct) of a response: {kind} on {identity.name}'s final hidden "
        f"state at {WHERE_READ[chosen.feature]}, trained by `winnow train fit` on its answers "
        f"to {Path(source).name if config.questions else source}{_asked(config)} ({objective} "
        "objective over each question's checker-labelled answers), then Platt-calibrated.",
        "metrics": {
            "train_questions": len(train),
            "train_samples": len(y),
            "train_accuracy_of_samples": float(y.float().mean()),
            "train_questions_with_both": both,
            "feature": chosen.feature,
            "objective": chosen.objective,
            "l2": chosen.l2,
            "cv_within_auc": chosen.cv,
        },
        "heldout": heldout.model_dump(),
        "config": config.model_dump(exclude={"out"}),
        "calibration": {
            "r_star": round(r_star, 3),
            "r_star_log_odds": round(float(torch.logit(torch.tensor(r_star))), 3),
            "quantile": 0.75,
            "samples": len(y),
            "source": "75th percentile of this reward on its training samples",
        },
    }


def _asked(config: FitConfig) -> str:
    """How the questions were asked, said when not as chats."""
    if config.prompt_template is None:
        return ""
    return f" asked as completion prompts {config.prompt_template!r}"


def write_rewards_config(out: Path, name: str, reward_dir: Path, model: str) -> Path:
    """``OUT/rewards.json``: the fitted probe (on the model's states) and the verifier, in the
    format ``winnow serve --rewards-config`` reads (validated by it here)."""
    from winnow.rewards.configs import RewardConfigList

    configs = [
        {"name": name, "backend": "probe", "path": str(reward_dir.resolve()),
         "backbone": str(Path(model).resolve())},
        {"name": "verifier", "backend": "verifier"},
    ]  # fmt: skip
    if name == "verifier":
        configs.pop()
    RewardConfigList.validate_python(configs)
    path = out / REWARDS_CONFIG
    path.write_text(json.dumps(configs, indent=2) + "\n")
    return path
