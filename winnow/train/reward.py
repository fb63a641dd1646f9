"""`winnow train prm`: the default process reward head (`default_prm`), offline.

(The default outcome head is trained by :mod:`winnow.train.outcome`, `winnow train reward`.)

Process head: gsm_symbolic worked solutions, one step per line, against corrupted copies (one
number in one step changed: steps before the change are correct, from it on wrong), plus the
model's own sampled arithmetic answers (their one step labelled by the verifier), sampled through
the shared engine. A logistic probe on the hidden state at each step's last token. Step-level AUC
on held-out problems.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from winnow.answers import equivalent, extract_answer
from winnow.rewards.backbone import Backbone, ProbeJob
from winnow.rewards.base import STEP_DELIMITER
from winnow.rewards.probe import save_head
from winnow.tasks import Problem, problems

OUTCOME_TASKS = ("add_sub_1digit", "mul_1digit")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    train_questions: int = 80  # per task
    eval_questions: int = 40  # per task, fresh questions for the held-out AUC
    samples_per_question: int = 4
    temperature: float = 0.7
    max_tokens: int = 96
    process_problems: int = 160
    process_eval_problems: int = 60
    seed: int = 0


# ---- data ---------------------------------------------------------------------------------------


async def sample_answers(
    engine: Any, items: Sequence[Problem], config: TrainConfig, desc: str
) -> list[tuple[Problem, str, str]]:
    """(problem, rendered prompt, response) for every sample, through the engine, concurrently."""
    from winnow.engine.base import SamplingSpec

    out: list[tuple[Problem, str, str]] = []
    bar = tqdm(total=len(items) * config.samples_per_question, desc=desc, unit="sample")
    limit = asyncio.Semaphore(16)

    async def one(index: int, problem: Problem) -> None:
        async with limit:
            prompt = await engine.apply_chat_template(problem.messages)
            spec = SamplingSpec(
                prompt=tuple(await engine.tokenize(prompt)),
                n=config.samples_per_question,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                seed=config.seed * 100_003 + index,
            )
            generation = await engine.generate(spec)
            for c in generation.completions:
                out.append((problem, prompt, c.text))
            bar.update(len(generation.completions))

    await asyncio.gather(*(one(i, p) for i, p in enumerate(items)))
    bar.close()
    out.sort(key=lambda row: (row[0].question, row[2]))  # deterministic order
    return out


def is_correct(problem: Problem, response: str) -> bool:
    answer = extract_answer(response)
    return answer is not None and equivalent(answer, problem.answer)


def corrupt_step(step: str, rng: random.Random) -> str | None:
    """Change one number of a step (the result of an equation when there is one)."""
    numbers = list(re.finditer(r"\d+(?:\.\d+)?", step))
    if not numbers:
        return None
    target = numbers[-1]
    value = float(target.group())
    delta = rng.choice([-3, -2, -1, 1, 2, 3, 10]) * (1 if value < 50 else rng.choice([1, 5, 10]))
    new = value + delta if value + delta >= 0 else value + abs(delta)
    text = str(int(new)) if "." not in target.group() else f"{new:.2f}"
    return step[: target.start()] + text + step[target.end() :]


def process_examples(
    items: Sequence[Problem], prompts: dict[str, str], rng: random.Random
) -> list[tuple[str, list[str], list[int]]]:
    """(prompt, steps, step labels): each worked solution, and one corrupted copy of it."""
    examples = []
    for problem in items:
        if not problem.solution:
            continue
        lines = [ln.strip() for ln in problem.solution.splitlines() if ln.strip()]
        steps = [ln + STEP_DELIMITER for ln in lines]
        prompt = prompts[problem.question]
        examples.append((prompt, steps, [1] * len(steps)))
        at = rng.randrange(len(steps))
        bad = corrupt_step(steps[at], rng)
        if bad is not None and bad != steps[at]:
            wrong = [*steps[:at], bad, *steps[at + 1 :]]
            examples.append((prompt, wrong, [1] * at + [0] * (len(steps) - at)))
    return examples


# ---- fitting ------------------------------------------------------------------------------------


def features(
    backbone: Backbone, jobs: Sequence[ProbeJob], desc: str, chunk: int = 32
) -> torch.Tensor:
    """Hidden states at every probed position, in job order: [sum(len(positions)), H]."""
    rows: list[torch.Tensor] = []
    for start in tqdm(range(0, len(jobs), chunk), desc=desc, unit="batch"):
        part = jobs[start : start + chunk]
        encoded = backbone.encode_sequences([j.ids for j in part])
        rows.extend(e.hidden[list(j.positions)].clone() for e, j in zip(encoded, part, strict=True))
    return torch.cat(rows) if rows else torch.empty(0, backbone.hidden_size)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression on standardised features, folded back to raw inputs."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    pos = y.float().mean().clamp(1e-3, 1 - 1e-3)
    weight = torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos))  # balance the classes
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = z @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y.float(), weight=weight
        )
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    raw_w = (w / std).detach()
    raw_b = (b - (w * mean / std).sum()).detach()
    return raw_w, raw_b.reshape(1)


def choose_l2(
    x: torch.Tensor, y: torch.Tensor, grid: Sequence[float] = (1e-3, 1e-2, 1e-1), folds: int = 5
) -> tuple[float, dict[str, float]]:
    """Pick the L2 strength by k-fold cross-validated AUC on the training set only."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    results: dict[str, float] = {}
    for l2 in grid:
        scores: list[float] = []
        labels: list[int] = []
        for k in range(folds):
            test = order[k::folds]
            mask = torch.ones(len(y), dtype=torch.bool)
            mask[test] = False
            w, b = fit_logistic(x[mask], y[mask], l2)
            scores += (x[test] @ w + b).tolist()
            labels += y[test].tolist()
        results[str(l2)] = auc(scores, labels)
    best = max(grid, key=lambda l2: results[str(l2)])
    return best, results


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (probability a positive outranks a negative; ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# ---- the whole run ------------------------------------------------------------------------------


def _jobs_process(
    backbone: Backbone, examples: Sequence[tuple[str, list[str], list[int]]]
) -> list[ProbeJob]:
    jobs = []
    for prompt, steps, _ in examples:
        ids, ends = backbone.encode_segments([prompt, *steps])
        jobs.append(ProbeJob(tuple(ids), tuple(ends[1:])))
    return jobs


async def train_process_head(
    engine: Any, backbone: Backbone, out_dir: Path, config: TrainConfig
) -> dict[str, Any]:
    """Train the process head; write it under ``out_dir/default_prm``.

    Feature extraction blocks the event loop; that is fine in this offline command.
    """
    started = time.time()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    train = [p for t in OUTCOME_TASKS for p in problems(t, "train", config.train_questions)]
    train_rows = await sample_answers(engine, train, config, "sampling train answers")
    gsm_train = problems("gsm_symbolic", "train", config.process_problems)
    gsm_held = problems("gsm_symbolic", "eval", config.process_eval_problems, seed=1)
    prompts = {
        p.question: await engine.apply_chat_template(p.messages) for p in [*gsm_train, *gsm_held]
    }
    ex_train = process_examples(gsm_train, prompts, rng)
    ex_held = process_examples(gsm_held, prompts, rng)
    sampled = [
        (prompt, [response], [int(is_correct(p, response))]) for p, prompt, response in train_rows
    ]
    px_train = features(backbone, _jobs_process(backbone, ex_train + sampled), "step features")
    py_train = torch.tensor([y for _, _, ys in ex_train + sampled for y in ys], dtype=torch.long)
    px_held = features(backbone, _jobs_process(backbone, ex_held), "held-out step features")
    py_held = [y for _, _, ys in ex_held for y in ys]
    pl2, pcv = choose_l2(px_train, py_train)
    pw, pb = fit_logistic(px_train, py_train, pl2)
    p_scores = torch.sigmoid(px_held @ pw + pb).tolist()
    metrics = {
        "train_solutions": len(ex_train),
        "train_sampled_answers": len(sampled),
        "train_steps": int(py_train.numel()),
        "l2": pl2,
        "cv_auc_by_l2": pcv,
        "heldout_solutions": len(ex_held),
        "heldout_steps": len(py_held),
        "heldout_step_auc": auc(p_scores, py_held),
        "seconds": round(time.time() - started, 1),
    }
    save_head(
        out_dir / "default_prm",
        {"weight": pw, "bias": pb},
        {
            "kind": "process",
            "layer": -1,
            "output": "sigmoid",
            "backbone": "default",
            "step_delimiter": STEP_DELIMITER,
            "description": "P(step correct so far): logistic probe on SmolLM2-135M's last hidden "
            "state at each step's last token; gsm_symbolic solutions vs corrupted copies plus "
            "verifier-labelled samples.",
            "metrics": metrics,
            "config": asdict(config),
        },
    )
    return metrics
