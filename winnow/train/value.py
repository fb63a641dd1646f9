"""VAS value models (Q-heads on the policy's own hidden state, :class:`winnow.heads.value.QHead`):
what `winnow train value` is configured with, and how a head is fitted.

The fit is TD(lambda) (gamma 1, lambda 0.95, the reward on the last token; targets recomputed
from the current head every epoch, as in the paper) on standardised rewards, 0.5 * MSE, AdamW
with one learning rate per tensor (:func:`param_groups`). Every epoch ends with a checkpoint
(the head and the optimiser state), so an interrupted fit resumes. The run around it (sampling,
rewards, hidden states, saving) is :mod:`winnow.train.value_run`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from winnow.heads.value import QHead, td_lambda_targets

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
    samples: Sequence[Any], hidden: torch.Tensor, reward: str, mean: float, std: float
) -> Dataset:
    """The positions of ``samples`` (each with ``response_ids`` and ``rewards``) and their
    rows of ``hidden``, the reward standardised by ``mean`` and ``std``."""
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
