"""`winnow train value`: fit VAS value models (Q-heads on the policy's own hidden state).

1. Sample responses from the frozen policy through the engine (reasoning-gym problems of the
   train split, or a prompts file), several per prompt.
2. Reward each response with named rewards: any configured winnow reward (``default``,
   ``verifier``, ...) or ``brevity`` (``-tokens / max_tokens``). One value model per reward; the
   samples and features are shared.
3. Read the policy's final hidden state before every response token with transformers (the same
   float32 weights vLLM serves), so ``h_{t-1}`` and the token ``a_t`` give ``Q(h_{t-1}, a_t)`` =
   V of the state after token t.
4. Fit the head (:class:`winnow.values.QHead`) by TD(lambda) (gamma 1, lambda 0.95, reward on
   the last token; targets recomputed from the current head every epoch, as in the paper) on
   standardised rewards, 0.5 * MSE, AdamW.

Everything that took time is kept in a work directory (samples, features, the last epoch's
checkpoint with the optimiser state, all in safetensors/JSON), so an interrupted run resumes.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from winnow.values import QHead, save_value_model, td_lambda_targets

BREVITY = "brevity"


@dataclass(frozen=True, slots=True)
class ValueConfig:
    rewards: tuple[str, ...] = ("default", BREVITY)
    tasks: tuple[str, ...] = ("add_sub_1digit", "mul_1digit")
    train_questions: int = 24  # per task
    eval_questions: int = 10  # per task, fresh questions for the held-out metrics
    samples_per_question: int = 4
    temperature: float = 0.7
    max_tokens: int = 96
    epochs: int = 10
    batch_positions: int = 512
    lr: float = 2e-1  # per Adam step and term, in reward std units (of 1e-2, 5e-2, 2e-1)
    weight_decay: float = 1e-2
    gamma: float = 1.0
    lam: float = 0.95
    seed: int = 0
    prompts_file: str | None = None


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


# ---- data ---------------------------------------------------------------------------------------


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
    from winnow.tasks import problems

    rows = []
    for task in config.tasks:
        for p in problems(task, "train", config.train_questions, seed=config.seed):
            rows.append(("train", p.messages, p.answer))
        for p in problems(task, "eval", config.eval_questions, seed=config.seed + 1):
            rows.append(("eval", p.messages, p.answer))
    return rows


async def sample_responses(engine: Any, config: ValueConfig) -> list[Sample]:
    """Sample ``samples_per_question`` responses per prompt through the engine, concurrently."""
    from winnow.answers import equivalent, extract_answer
    from winnow.engine.base import SamplingSpec

    prompts = _prompts(config)
    out: list[Sample] = []
    bar = tqdm(total=len(prompts) * config.samples_per_question, desc="sampling", unit="sample")
    limit = asyncio.Semaphore(16)

    async def one(index: int, split: str, messages: list[dict[str, str]], gold: str | None):
        async with limit:
            prompt = await engine.apply_chat_template(messages)
            ids = tuple(await engine.tokenize(prompt))
            spec = SamplingSpec(
                prompt=ids,
                n=config.samples_per_question,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                seed=config.seed * 100_003 + index,
            )
            generation = await engine.generate(spec)
            for c in generation.completions:
                if not c.token_ids:
                    continue
                correct = None
                if gold is not None:
                    answer = extract_answer(c.text)
                    correct = int(answer is not None and equivalent(answer, gold))
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

    An outcome probe on the policy itself (``default``) reads the hidden state after the last
    text token, which the feature pass has already computed (``last_hidden``): it is scored
    from there, on the engine's own tokens, instead of in a second forward pass.
    """
    from winnow.kernels.dispatch import reward_head
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
                and reward.info.kind == "outcome"
                and reward.layer == -1
                and reward.backbone.model_dir == model
            ):
                rows = torch.arange(len(samples))
                raw = reward_head(last_hidden, rows, reward.head).reshape(-1)
                scores = (torch.sigmoid(raw) if reward.meta.get("output", "sigmoid") == "sigmoid"
                          else raw).tolist()  # fmt: skip
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


# ---- fitting ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Dataset:
    """Flattened positions of a set of samples: hidden state, token, owning sample, return."""

    hidden: torch.Tensor  # [N, H]
    tokens: torch.Tensor  # [N]
    offsets: list[int]  # sample i owns rows offsets[i]:offsets[i+1]
    rewards: torch.Tensor  # [S], standardised

    def values(self, head: QHead, embedding: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [
                    head.q(self.hidden[s : s + 8192], self.tokens[s : s + 8192], embedding)
                    for s in range(0, len(self.tokens), 8192)
                ]
            )

    def targets(self, head: QHead, embedding: torch.Tensor, gamma: float, lam: float):
        v = self.values(head, embedding)
        parts = []
        for i in range(len(self.offsets) - 1):
            a, b = self.offsets[i], self.offsets[i + 1]
            parts.append(td_lambda_targets(v[a:b], float(self.rewards[i]), gamma, lam))
        return torch.cat(parts).float()


def make_dataset(
    samples: Sequence[Sample], hidden: torch.Tensor, reward: str, mean: float, std: float
) -> Dataset:
    offsets = [0]
    for s in samples:
        offsets.append(offsets[-1] + len(s.response_ids))
    tokens = torch.tensor([t for s in samples for t in s.response_ids], dtype=torch.long)
    r = torch.tensor([(s.rewards[reward] - mean) / std for s in samples], dtype=torch.float64)
    return Dataset(hidden, tokens, offsets, r)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = torch.tensor(list(x), dtype=torch.float64), torch.tensor(list(y), dtype=torch.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def heldout_metrics(
    data: Dataset, head: QHead, embedding: torch.Tensor, correct: Sequence[int | None]
) -> dict[str, Any]:
    """How well V at a fraction of the response predicts the final reward (and correctness)."""
    from winnow.train.ranking import auc

    v = data.values(head, embedding)
    out: dict[str, Any] = {}
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        preds = []
        for i in range(len(data.offsets) - 1):
            a, b = data.offsets[i], data.offsets[i + 1]
            preds.append(float(v[a + min(b - a - 1, int(frac * (b - a)))]))
        out[f"corr_at_{frac:g}"] = pearson(preds, data.rewards.tolist())
        labelled = [(p, c) for p, c in zip(preds, correct, strict=False) if c is not None]
        if labelled:
            scores, labels = [p for p, _ in labelled], [c for _, c in labelled]
            out[f"auc_correct_at_{frac:g}"] = auc(scores, labels)
    lengths = torch.tensor([b - a for a, b in zip(data.offsets, data.offsets[1:], strict=False)])
    returns = torch.repeat_interleave(data.rewards.float(), lengths)
    out["mse_vs_return"] = float(((v - returns) ** 2).mean())
    return out


def _save_checkpoint(path: Path, head: QHead, opt: torch.optim.Optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"head.{k}": v.detach().clone() for k, v in head.tensors().items()}
    names = list(head.tensors())
    for name, param in zip(names, head.parameters(), strict=True):
        st = opt.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                tensors[f"adam.{name}.{key}"] = st[key].clone()
        if "step" in st:
            step = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
            tensors[f"adam.{name}.step"] = step
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(state, indent=2) + "\n")


def _load_checkpoint(path: Path, head: QHead, opt: torch.optim.Optimizer) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    names = list(head.tensors())
    with torch.no_grad():
        for name, param in zip(names, head.parameters(), strict=True):
            param.copy_(tensors[f"head.{name}"])
            if f"adam.{name}.exp_avg" in tensors:
                opt.state[param] = {
                    "step": torch.tensor(float(tensors[f"adam.{name}.step"][0])),
                    "exp_avg": tensors[f"adam.{name}.exp_avg"],
                    "exp_avg_sq": tensors[f"adam.{name}.exp_avg_sq"],
                }
    return dict(json.loads(path.with_suffix(".json").read_text()))


def param_groups(
    head: QHead, hidden: torch.Tensor, embedding: torch.Tensor, lr: float
) -> list[dict[str, Any]]:
    """One learning rate per tensor, so that one Adam step moves Q by about ``lr`` through
    each term. Adam steps every entry by ~lr whatever its gradient's scale, so an entry of ``W``
    (which multiplies ``e_a`` and ``h``, L1 norms ~30 and ~900 on SmolLM2) would otherwise move
    Q by lr * |e|_1 * |h|_1 at once: the fit diverged at lr 1e-3 with one shared rate."""
    sh = float(hidden.abs().mean()) * hidden.shape[1]  # typical |h|_1
    se = float(embedding.abs().mean()) * embedding.shape[1]  # typical |e_a|_1
    return [
        {"params": [head.W], "lr": lr / (sh * se)},
        {"params": [head.c], "lr": lr / se},
        {"params": [head.b], "lr": lr},
        {"params": [head.w], "lr": lr / sh},
        {"params": [head.w0], "lr": lr},
    ]


def fit_value_head(
    train: Dataset,
    held: Dataset | None,
    embedding: torch.Tensor,
    config: ValueConfig,
    checkpoint: Path | None = None,
    held_correct: Sequence[int | None] = (),
    desc: str = "fit",
) -> tuple[QHead, dict[str, Any]]:
    """TD(lambda) fitting; resumes from ``checkpoint`` (after its last finished epoch)."""
    hidden, vocab = train.hidden.shape[1], embedding.shape[0]
    head = QHead.zeros(hidden, vocab)
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        param_groups(head, train.hidden, embedding, config.lr), weight_decay=config.weight_decay
    )
    state: dict[str, Any] = {"epoch": 0, "step": 0, "loss": [], "heldout": []}
    if checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, head, opt)
    steps_per_epoch = max(1, math.ceil(len(train.tokens) / config.batch_positions))
    bar = tqdm(total=config.epochs * steps_per_epoch, initial=state["step"], desc=desc, unit="step")
    for epoch in range(state["epoch"], config.epochs):
        targets = train.targets(head, embedding, config.gamma, config.lam)
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train.tokens), generator=g)
        losses = []
        for s in range(0, len(order), config.batch_positions):
            idx = order[s : s + config.batch_positions]
            q = head.q(train.hidden[idx], train.tokens[idx], embedding)
            loss = 0.5 * ((q - targets[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            state["step"] += 1
            bar.update(1)
        state["loss"].append(sum(losses) / len(losses))
        if held is not None:
            state["heldout"].append(heldout_metrics(held, head, embedding, held_correct))
        state["epoch"] = epoch + 1
        bar.set_postfix(loss=f"{state['loss'][-1]:.4f}")
        if checkpoint is not None:
            _save_checkpoint(checkpoint, head, opt, state)
    bar.close()
    for p in head.parameters():
        p.requires_grad_(False)
    return head, state


# ---- the whole run ------------------------------------------------------------------------------


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

    from winnow.rewards.backbone import Backbone
    from winnow.values import output_embedding

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
        backbone = Backbone(model)
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


def write_model_card(out_dir: Path, names: Sequence[str]) -> Path:
    """MODEL_CARD.md for the value models under ``out_dir``, from what training measured."""
    lines = [
        "# VAS value models",
        "",
        "Q-heads on SmolLM2-135M-Instruct's own final hidden state (see `winnow/values.py`):",
        "`Q(h, a) = e_a . (W h + c) + b_a + w . h + w0`, `e_a` the tied output embedding. Trained",
        "by `winnow train value` with TD(lambda) (gamma 1, lambda 0.95, reward on the last token)",
        "on responses sampled from the frozen policy (reasoning-gym arithmetic, train split);",
        "Q is in units of the reward's standard deviation on those samples.",
        "Held-out: fresh questions (eval split). `corr_at_f` is the Pearson correlation between",
        "the predicted value after a fraction f of the response and the response's final reward;",
        "`auc_correct_at_f` the AUC of that value for verifier correctness.",
        "",
    ]
    for name in names:
        meta = json.loads((out_dir / name / "value.json").read_text())
        d, t, h, cfg = meta["data"], meta["training"], meta["heldout"], meta["config"]
        lines += [
            f"## `{name}` (reward `{meta['reward']}`)",
            "",
            f"- Data: {d['train_samples']} responses ({d['train_positions']} token positions), "
            f"{cfg['samples_per_question']} per question at temperature {cfg['temperature']}, "
            f"max {cfg['max_tokens']} tokens; reward mean {d['train_reward_mean']:.3f}, std "
            f"{d['train_reward_std']:.3f}; held-out {d['heldout_samples']} responses.",
            f"- Fit: {t['epochs']} epochs, {t['steps']} AdamW steps (lr {cfg['lr']}, weight decay "
            f"{cfg['weight_decay']}, {cfg['batch_positions']} positions per step), seed "
            f"{cfg['seed']}.",
            f"- Loss by epoch: {', '.join(f'{x:.4f}' for x in t['loss_curve'])}",
            "- Held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in h.items()),
            "",
        ]
    lines += [
        "## Limits",
        "",
        "- One policy (the embedded default); the head reads that model's hidden states and",
        "  cannot guide another model.",
        "- Small data (a few hundred responses, minutes on 2 CPU cores): the token-dependent part",
        "  of Q, the only part VAS uses, is learned from one sampled token per position.",
        "- The learning rate (2e-1 per tensor-scaled step) was chosen among 1e-2, 5e-2 and 2e-1",
        "  by the held-out figures of `default` above, so those are slightly optimistic.",
        "- The probe reward `default` is read on the engine's own tokens (the feature pass), not",
        "  on re-tokenised text as `POST /v1/rewards` does; the two agree up to tokenisation.",
    ]
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
