"""Entry points of `winnow train ...` (offline jobs that use the engine in-process)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from winnow.rewards.registry import ASSETS  # where the shipped reward heads live
from winnow.settings import default_data_dir
from winnow.train.datasets import TRAIN_JOURNAL as SAMPLES_JOURNAL


def train_reward(
    out_dir: Path | None, journal: Path | None, max_questions: int | None, seed: int
) -> dict:
    """The default outcome head from the samples journal (no engine: features by transformers)."""
    from winnow.models.default_model import build_default_model
    from winnow.train.cards import reward_card
    from winnow.train.outcome import train_outcome_head

    model = str(build_default_model(default_data_dir()))
    target = out_dir or ASSETS
    metrics = train_outcome_head(
        model, target, journal or SAMPLES_JOURNAL, max_questions=max_questions, seed=seed
    )
    reward_card(target)
    print(json.dumps(metrics, indent=2))
    return metrics


def train_fit(args: Any) -> dict:
    """`winnow train fit`: questions with answers -> a reward the server loads for the model."""
    from pydantic import ValidationError

    from winnow.train.fit import FitConfig, fit_reward

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else ()
    source = args.questions.stem if args.questions else "-".join(tasks)
    out = args.out or default_data_dir() / "rewards" / f"{Path(args.model).name}-{source}"
    try:
        config = FitConfig(
            model=str(args.model), out=str(out),
            questions=str(args.questions) if args.questions else None, tasks=tasks,
            per_task=args.per_task, name=args.name, base_url=args.base_url,
            served_model=args.served_model, checker=args.checker, n=args.n,
            max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
            eval_fraction=args.eval_fraction, domain_quantile=args.domain_quantile,
            concurrency=args.concurrency, mlp=args.mlp,
            seed_journal=str(args.seed_journal) if args.seed_journal else None,
            prompt_template=_template(args.prompt_template),
            objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        )  # fmt: skip
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(problems) from None
    report = fit_reward(config, api_key=args.api_key)
    summary = {
        "reward": report.reward_dir,
        "card": report.card,
        "heldout_within_auc": str(report.heldout.within_auc),
        "selection": {
            f"N={s.n}": f"best_of_n {s.best_of_n:.3f} vs majority {s.majority:.3f}, gain "
            f"{s.best_of_n_gain}"
            for s in report.heldout.selection
        },
        "serve": report.serve,
    }
    print(json.dumps(summary, indent=2))
    return summary


def _template(option: str | None) -> str | None:
    """``--prompt-template`` as typed on a shell: ``\\n`` is a newline (winnow.train.prompting)."""
    from winnow.train.prompting import unescape_option

    return None if option is None else unescape_option(option)


def train_prm(out_dir: Path | None) -> dict:
    """The default process head from the Monte-Carlo step journals (`winnow train steps`; no
    engine: features by transformers)."""
    from winnow.models.default_model import build_default_model
    from winnow.rewards.backbone import Backbone
    from winnow.rewards.placement import TRAINING
    from winnow.train import datasets
    from winnow.train.cards import reward_card
    from winnow.train.features import FeatureReader, extract
    from winnow.train.process import journal_features, train_process_head
    from winnow.train.steplabels import BENCH_STEP_JOURNAL, STEP_JOURNAL, read_steps

    model = str(build_default_model(default_data_dir()))
    target = out_dir or ASSETS
    train, held = read_steps(STEP_JOURNAL), read_steps(BENCH_STEP_JOURNAL)
    if not train or not held:
        raise SystemExit("run `winnow train steps` and `winnow train steps --bench` first")
    labelled = {q.question for q in train}
    samples = [q for q in datasets.train_rows() if q.question in labelled]
    features = extract(FeatureReader(model), samples, datasets.feature_dir())
    backbone = Backbone(model, placement=TRAINING)
    journals = {"train": STEP_JOURNAL, "held": BENCH_STEP_JOURNAL}
    metrics = train_process_head(
        backbone,
        train,
        held,
        target,
        singles=(samples, features),
        features=lambda which, position: journal_features(
            which, journals[which], position, lambda: backbone
        ),
    )
    reward_card(target)
    print(json.dumps(metrics, indent=2))
    return metrics


def train_value(
    rewards: list[str] | None,
    out_dir: Path | None,
    work_dir: Path | None,
    prompts: Path | None,
    quick: bool,
    seed: int,
    fresh: bool,
) -> dict:
    """Train one VAS value model per reward; reuse (resume from) the work dir unless ``fresh``."""
    import shutil

    from winnow.engine.vllm_local import VllmEngine
    from winnow.heads.value import ASSETS as VALUE_ASSETS
    from winnow.models.default_model import build_default_model
    from winnow.train.cards import value_card
    from winnow.train.value import ValueConfig
    from winnow.train.value_run import train_values

    data_dir = default_data_dir()
    model = str(build_default_model(data_dir))
    fields: dict = {"seed": seed, "prompts_file": str(prompts) if prompts else None}
    if rewards:
        fields["rewards"] = tuple(rewards)
    if quick:
        fields.update(train_questions=4, eval_questions=2, samples_per_question=2, epochs=2)
    config = ValueConfig(**fields)
    target = out_dir or VALUE_ASSETS
    work = work_dir or data_dir / "train-value" / ("quick" if quick else f"seed{seed}")
    if fresh and work.exists():
        shutil.rmtree(work)

    def engine() -> VllmEngine:
        return VllmEngine(
            model, engine_args={"max_model_len": 2048}, cache_dir=data_dir / "cache", kv_cache_gib=1
        )

    summary = asyncio.run(train_values(engine, model, target, work, config))
    value_card(target, list(config.rewards))
    print(json.dumps(summary, indent=2))
    return summary


def collect_samples(args: Any) -> None:
    """`winnow train samples`: N answers to every training-split question, journaled."""
    from winnow.models.default_model import build_default_model
    from winnow.train.datasets import TASKS
    from winnow.train.samples import sample_questions, train_questions

    data_dir = default_data_dir()
    model = str(build_default_model(data_dir))
    items = train_questions(TASKS, args.per_task, seed=args.seed)
    journal = args.journal or SAMPLES_JOURNAL
    print(f"[samples] {len(items)} training questions, n={args.n} -> {journal}", flush=True)

    _run_with_engine(
        model,
        lambda engine: sample_questions(
            engine, items, journal, n=args.n, max_tokens=args.max_tokens,
            temperature=args.temperature, seed=args.seed,
        ),
    )  # fmt: skip


def collect_step_labels(args: Any) -> None:
    """`winnow train steps`: Monte-Carlo labels for the steps of the policy's own solutions."""
    from winnow.models.default_model import build_default_model
    from winnow.train import datasets
    from winnow.train.steplabels import BENCH_STEP_JOURNAL, STEP_JOURNAL, roll_out

    data_dir = default_data_dir()
    model = str(build_default_model(data_dir))
    sources = datasets.bench_rows() if args.bench else datasets.train_rows()
    sources = sources[: args.max_questions] if args.max_questions else sources
    journal = args.journal or (BENCH_STEP_JOURNAL if args.bench else STEP_JOURNAL)
    print(f"[steps] {len(sources)} questions, k={args.k} -> {journal}", flush=True)

    _run_with_engine(
        model,
        lambda engine: roll_out(
            engine, sources, journal, split="eval" if args.bench else "train",
            per_question=args.per_question, k=args.k, seed=args.seed,
        ),
    )  # fmt: skip


def _run_with_engine(model: str, job: Callable[[Any], Awaitable[Any]]) -> None:
    """Run a journaled engine job on the in-process engine. SIGTERM cancels it, so the engine's
    processes are shut down, not orphaned; what is in the journal stays for the next run."""
    from winnow.engine.vllm_local import VllmEngine

    async def run() -> None:
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        engine = VllmEngine(
            model, engine_args={"max_model_len": 2048}, cache_dir=default_data_dir() / "cache"
        )
        await engine.start()
        try:
            await job(engine)
        finally:
            await engine.shutdown()

    asyncio.run(run())
