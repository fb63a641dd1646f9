"""`winnow train value` from end to end: one VAS value model per reward.

1. Sample responses from the frozen policy through the engine (reasoning-gym problems of the
   train split, or a prompts file), several per prompt
   (:func:`winnow.train.samples.sample_answers`).
2. Reward each response with named rewards: any configured winnow reward (``default``,
   ``verifier``, ...) or ``brevity`` (``-tokens / max_tokens``). One value model per reward; the
   samples and features are shared.
3. Read the policy's final hidden state before every response token with transformers (the same
   float32 weights vLLM serves), so ``h_{t-1}`` and the token ``a_t`` give ``Q(h_{t-1}, a_t)`` =
   V of the state after token t.
4. Fit the head by TD(lambda) (:mod:`winnow.train.value`) and save it with what training
   measured (its model card: :func:`winnow.train.cards.value_card`).

Everything that took time is kept in a work directory (samples, features, the last epoch's
checkpoint with the optimiser state, all in safetensors/JSON), so an interrupted run resumes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from winnow.heads.value import save_value_model
from winnow.train.samples import is_right, sample_answers
from winnow.train.value import BREVITY, ValueConfig, fit_value_head, make_dataset


@dataclass(slots=True)
class Sample:
    """One sampled response: its tokens, rewards, and (once computed) the hidden states."""

    prompt_ids: list[int]
    response_ids: list[int]
    prompt: str
    response: str
    split: str  # "train" | "eval"
    answer: str | None = None
    correct: int | None = None
    rewards: dict[str, float] = field(default_factory=dict)


def _prompts(config: ValueConfig) -> list[tuple[str, list[dict[str, str]], str | None]]:
    """(split, messages, gold answer) of every prompt."""
    if config.prompts_file:
        rows = []
        lines = Path(config.prompts_file).read_text().splitlines()
        for i, line in enumerate(ln for ln in lines if ln.strip()):
            item = json.loads(line) if line.lstrip().startswith("{") else {"prompt": line}
            messages = item.get("messages") or [{"role": "user", "content": item["prompt"]}]
            rows.append(("eval" if i % 5 == 4 else "train", messages, item.get("answer")))
        return rows
    from winnow.train.tasks import problems

    rows = []
    for task in config.tasks:
        for p in problems(task, "train", config.train_questions, seed=config.seed):
            rows.append(("train", p.messages, p.answer))
        for p in problems(task, "eval", config.eval_questions, seed=config.seed + 1):
            rows.append(("eval", p.messages, p.answer))
    return rows


async def sample_responses(engine: Any, config: ValueConfig) -> list[Sample]:
    """Sample ``samples_per_question`` responses per prompt through the engine, concurrently."""
    prompts = _prompts(config)
    out: list[Sample] = []
    bar = tqdm(total=len(prompts) * config.samples_per_question, desc="sampling", unit="sample")
    limit = asyncio.Semaphore(16)

    async def one(index: int, split: str, messages: list[dict[str, str]], gold: str | None):
        async with limit:
            prompt, ids, generation = await sample_answers(
                engine, messages, n=config.samples_per_question, max_tokens=config.max_tokens,
                temperature=config.temperature, seed=config.seed * 100_003 + index,
            )  # fmt: skip
            for c in generation.completions:
                if not c.token_ids:
                    continue
                correct = None if gold is None else int(is_right(c.text, gold))
                out.append(
                    Sample(list(ids), list(c.token_ids), prompt, c.text, split, gold, correct)
                )
            bar.update(len(generation.completions))

    await asyncio.gather(*(one(i, *row) for i, row in enumerate(prompts)))
    bar.close()
    out.sort(key=lambda s: (s.split, s.prompt, s.response_ids))  # deterministic order
    return out


async def reward_samples(
    samples: Sequence[Sample],
    names: Sequence[str],
    model: str,
    max_tokens: int,
    last_hidden: torch.Tensor,
) -> None:
    """Fill ``sample.rewards[name]`` for every requested reward.

    An outcome probe on the policy itself that reads the response's last token (``position``
    "last") is scored from the state the feature pass already computed there (``last_hidden``),
    on the engine's own tokens, instead of in a second forward pass. A probe that reads
    elsewhere (the shipped ``default`` reads its final answer's last token) is scored as it is
    served, so the values learn the reward the server gives.
    """
    from winnow.rewards.base import OutcomeItem
    from winnow.rewards.probe import ProbeReward
    from winnow.rewards.registry import build_rewards, default_configs

    for s in samples:
        if BREVITY in names:
            s.rewards[BREVITY] = -len(s.response_ids) / max_tokens
    configured = [n for n in names if n != BREVITY]
    if not configured:
        return
    rewards = build_rewards(default_configs(True), default_model_dir=model)
    started = False
    try:
        for name in configured:
            reward = rewards.get(name)
            if (
                isinstance(reward, ProbeReward)
                and reward.reads_final_states_of(model)
                and reward.position == "last"
            ):
                scores = reward.score_states(last_hidden)
            else:
                if not started:
                    await rewards.start()
                    started = True
                items = [OutcomeItem(s.prompt, s.response, s.answer) for s in samples]
                scores = []
                for start in tqdm(range(0, len(items), 64), desc=f"reward {name}", unit="batch"):
                    scores += (await reward.score(items[start : start + 64])).scores
            for s, score in zip(samples, scores, strict=True):
                s.rewards[name] = float(score)
    finally:
        await rewards.shutdown()


def hidden_features(
    backbone: Any, samples: Sequence[Sample], eos_ids: Sequence[int] = (), chunk: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """The final hidden state before each response token, [sum of response lengths, H]; and
    per sample the one after its last text token (before a final EOS, else after the last
    token), [S, H]: what an outcome probe on the policy reads."""
    order = sorted(
        range(len(samples)), key=lambda i: len(samples[i].prompt_ids) + len(samples[i].response_ids)
    )
    parts: dict[int, torch.Tensor] = {}
    last: dict[int, torch.Tensor] = {}
    for start in tqdm(range(0, len(order), chunk), desc="hidden states", unit="batch"):
        group = order[start : start + chunk]
        seqs = [samples[i].prompt_ids + samples[i].response_ids for i in group]
        encoded = backbone.encode_sequences(seqs)
        for k, i in enumerate(group):
            p0, n = len(samples[i].prompt_ids), len(samples[i].response_ids)
            rows = encoded[k].hidden[p0 - 1 : p0 + n].clone()
            parts[i] = rows[:n]
            ends_with_eos = samples[i].response_ids[-1] in eos_ids
            last[i] = rows[n - 1] if ends_with_eos else rows[n]
    hidden = torch.cat([parts[i] for i in range(len(samples))])
    return hidden, torch.stack([last[i] for i in range(len(samples))])


def _save_samples(path: Path, samples: Sequence[Sample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(s) for s in samples]) + "\n")


def _load_samples(path: Path) -> list[Sample]:
    return [Sample(**row) for row in json.loads(path.read_text())]


async def train_values(
    engine_factory: Any, model: str, out_dir: Path, work_dir: Path, config: ValueConfig
) -> dict[str, Any]:
    """Sample (or reuse the work dir's samples), featurise, fit one head per reward, save."""
    from safetensors.torch import load_file, save_file

    from winnow.heads.value import output_embedding
    from winnow.rewards.backbone import Backbone
    from winnow.rewards.placement import TRAINING

    started = time.time()
    torch.manual_seed(config.seed)
    samples_path, features_path = work_dir / "samples.json", work_dir / "features.safetensors"
    if samples_path.exists():
        samples = _load_samples(samples_path)
    else:
        engine = engine_factory()
        await engine.start()
        try:
            samples = await sample_responses(engine, config)
        finally:
            await engine.shutdown()
        _save_samples(samples_path, samples)
    if features_path.exists():
        saved = load_file(str(features_path))
        hidden, last_hidden = saved["hidden"], saved["last"]
    else:
        backbone = Backbone(model, placement=TRAINING)
        eos_ids = _eos_ids(model)
        hidden, last_hidden = hidden_features(backbone, samples, eos_ids)
        save_file({"hidden": hidden.contiguous(), "last": last_hidden.contiguous()},
                  str(features_path))  # fmt: skip
    missing = [n for n in config.rewards if any(n not in s.rewards for s in samples)]
    if missing:
        await reward_samples(samples, missing, model, config.max_tokens, last_hidden)
        _save_samples(samples_path, samples)
    embedding = output_embedding(model)

    offsets = [0]
    for s in samples:
        offsets.append(offsets[-1] + len(s.response_ids))
    train_idx = [i for i, s in enumerate(samples) if s.split == "train"]
    held_idx = [i for i, s in enumerate(samples) if s.split == "eval"]

    def rows(idx: list[int]) -> torch.Tensor:
        return torch.cat([hidden[offsets[i] : offsets[i + 1]] for i in idx])

    summary: dict[str, Any] = {"config": asdict(config), "values": {}}
    for name in config.rewards:
        train_s = [samples[i] for i in train_idx]
        held_s = [samples[i] for i in held_idx]
        r = torch.tensor([s.rewards[name] for s in train_s], dtype=torch.float64)
        mean, std = float(r.mean()), max(float(r.std()), 1e-6)
        train = make_dataset(train_s, rows(train_idx), name, mean, std)
        held = make_dataset(held_s, rows(held_idx), name, mean, std)
        head, state = fit_value_head(
            train, held, embedding, config, work_dir / name / "checkpoint.safetensors",
            [s.correct for s in held_s], desc=f"value {name}",
        )  # fmt: skip
        meta = {
            "reward": name,
            "reward_mean": mean,
            "reward_std": std,
            "model": Path(model).name,
            "description": f"Q-head for the reward {name!r} (in units of its std on the "
            "policy's own samples), on the policy's final hidden state; TD(lambda) on samples "
            "of the frozen policy.",
            "data": {
                "train_samples": len(train_s),
                "train_positions": len(train.tokens),
                "heldout_samples": len(held_s),
                "train_reward_mean": mean,
                "train_reward_std": std,
                "train_accuracy": _mean([s.correct for s in train_s]),
            },
            "training": {
                "epochs": state["epoch"],
                "steps": state["step"],
                "loss_curve": [round(x, 5) for x in state["loss"]],
            },
            "heldout": state["heldout"][-1] if state["heldout"] else {},
            "heldout_by_epoch": state["heldout"],
            "config": asdict(config),
        }
        save_value_model(out_dir / name, head, meta)
        summary["values"][name] = {"heldout": meta["heldout"], "training": meta["training"]}
    summary["seconds"] = round(time.time() - started, 1)
    summary["samples"] = len(samples)
    return summary


def _eos_ids(model: str) -> list[int]:
    config = json.loads((Path(model) / "config.json").read_text())
    eos = config.get("eos_token_id")
    return [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]


def _mean(xs: Sequence[int | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None
