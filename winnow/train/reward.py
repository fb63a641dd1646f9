"""`winnow train reward`: train the default outcome and process probe heads, offline.

Outcome head: sample answers from the default model through the shared engine on reasoning-gym
arithmetic problems (train split), label each with the rule-based verifier, and fit a logistic
probe on the default model's own last-layer hidden state at the last token. Held-out AUC is
measured on fresh questions from the evaluation split.

Process head: gsm_symbolic worked solutions, one step per line, against corrupted copies (one
number in one step changed: steps before the change are correct, from it on wrong), plus the
model's own sampled answers (their last step labelled by the verifier). A logistic probe on the
hidden state at each step's last token. Step-level AUC on held-out problems.
"""

from __future__ import annotations

import asyncio
import json
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


def _jobs_outcome(backbone: Backbone, rows: Sequence[tuple[Problem, str, str]]) -> list[ProbeJob]:
    jobs = []
    for _, prompt, response in rows:
        ids, ends = backbone.encode_segments([prompt, response])
        jobs.append(ProbeJob(tuple(ids), (ends[-1],)))
    return jobs


def _jobs_process(
    backbone: Backbone, examples: Sequence[tuple[str, list[str], list[int]]]
) -> list[ProbeJob]:
    jobs = []
    for prompt, steps, _ in examples:
        ids, ends = backbone.encode_segments([prompt, *steps])
        jobs.append(ProbeJob(tuple(ids), tuple(ends[1:])))
    return jobs


async def _sample_all(
    engine: Any, config: TrainConfig
) -> tuple[list[tuple[Problem, str, str]], list[tuple[Problem, str, str]]]:
    train = [p for t in OUTCOME_TASKS for p in problems(t, "train", config.train_questions)]
    held = [p for t in OUTCOME_TASKS for p in problems(t, "eval", config.eval_questions, seed=1)]
    train_rows = await sample_answers(engine, train, config, "sampling train answers")
    held_rows = await sample_answers(engine, held, config, "sampling held-out answers")
    return train_rows, held_rows


async def train_default_reward(
    engine: Any, backbone: Backbone, out_dir: Path, config: TrainConfig
) -> dict[str, Any]:
    """Train both heads; write them under ``out_dir/default`` and ``out_dir/default_prm``.

    Feature extraction blocks the event loop; that is fine in this offline command.
    """
    started = time.time()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    train_rows, held_rows = await _sample_all(engine, config)
    y_train = torch.tensor([is_correct(p, r) for p, _, r in train_rows], dtype=torch.long)
    y_held = [int(is_correct(p, r)) for p, _, r in held_rows]

    x_train = features(backbone, _jobs_outcome(backbone, train_rows), "outcome features")
    x_held = features(backbone, _jobs_outcome(backbone, held_rows), "held-out features")
    l2, cv = choose_l2(x_train, y_train)
    w, b = fit_logistic(x_train, y_train, l2)
    held_scores = torch.sigmoid(x_held @ w + b).tolist()
    train_scores = torch.sigmoid(x_train @ w + b).tolist()
    outcome_metrics = {
        "train_samples": len(train_rows),
        "train_questions": len({p.question for p, _, _ in train_rows}),
        "train_accuracy_of_samples": float(y_train.float().mean()),
        "heldout_samples": len(held_rows),
        "heldout_questions": len({p.question for p, _, _ in held_rows}),
        "heldout_accuracy_of_samples": sum(y_held) / max(len(y_held), 1),
        "l2": l2,
        "cv_auc_by_l2": cv,
        "train_auc": auc(train_scores, y_train.tolist()),
        "heldout_auc": auc(held_scores, y_held),
    }
    save_head(
        out_dir / "default",
        {"weight": w, "bias": b},
        {
            "kind": "outcome",
            "layer": -1,
            "output": "sigmoid",
            "backbone": "default",
            "description": "P(correct) of a response: logistic probe on SmolLM2-135M's last "
            "hidden state at the last token, trained on verifier-labelled samples.",
            "metrics": outcome_metrics,
            "config": asdict(config),
        },
    )

    # process head: worked solutions + corruptions, and the model's own samples' last steps
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
    process_metrics = {
        "train_solutions": len(ex_train),
        "train_sampled_answers": len(sampled),
        "train_steps": int(py_train.numel()),
        "l2": pl2,
        "cv_auc_by_l2": pcv,
        "heldout_solutions": len(ex_held),
        "heldout_steps": len(py_held),
        "heldout_step_auc": auc(p_scores, py_held),
        "heldout_outcome_auc_of_last_step": auc(torch.sigmoid(x_held @ pw + pb).tolist(), y_held),
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
            "metrics": process_metrics,
            "config": asdict(config),
        },
    )
    summary = {
        "outcome": outcome_metrics,
        "process": process_metrics,
        "seconds": round(time.time() - started, 1),
    }
    (out_dir / "training-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cv(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v:.3f}" for k, v in metrics["cv_auc_by_l2"].items())


def write_model_card(out_dir: Path) -> Path:
    """A model card for the shipped heads, from what training measured."""
    outcome = json.loads((out_dir / "default" / "probe.json").read_text())
    process = json.loads((out_dir / "default_prm" / "probe.json").read_text())
    summary = json.loads((out_dir / "training-summary.json").read_text())
    om, pm, cfg = outcome["metrics"], process["metrics"], outcome["config"]
    lines = [
        "# Default rewards: `default` (outcome) and `default_prm` (process)",
        "",
        "Logistic probes on SmolLM2-135M-Instruct's own last-layer hidden state (576 floats, after",
        "the final norm), shipped as `head.safetensors` + `probe.json`. Trained by",
        f"`winnow train reward` (seed {cfg['seed']}) in {summary['seconds']:.0f} s on a 2-core "
        "CPU; no downloaded data:",
        "reasoning-gym generates the problems, the model itself the answers, the rule-based",
        "verifier the labels. Questions are split by a hash of their text (`winnow/tasks.py`): the",
        "held-out and benchmark questions never appear in training.",
        "",
        "## `default` — P(answer correct)",
        "",
        f"- Data: {om['train_samples']} sampled answers to {om['train_questions']} questions "
        f"(basic_arithmetic, 2 one-digit terms, + and -, and *), {cfg['samples_per_question']} "
        f"samples each at temperature {cfg['temperature']}, max {cfg['max_tokens']} tokens; "
        f"{om['train_accuracy_of_samples'] * 100:.0f}% of them correct.",
        f"- Features: hidden state at the last token of prompt + response. L2 {om['l2']:g} chosen "
        f"by 5-fold cross-validation on the training set (CV AUC by L2: {_cv(om)}).",
        f"- **Held-out AUC: {om['heldout_auc']:.3f}** on {om['heldout_samples']} answers to "
        f"{om['heldout_questions']} fresh questions ({om['heldout_accuracy_of_samples'] * 100:.0f}%"
        f" correct); training AUC {om['train_auc']:.3f}.",
        "",
        "## `default_prm` — P(steps so far correct)",
        "",
        f"- Data: {pm['train_solutions']} gsm_symbolic worked solutions and corrupted copies (one "
        "number changed in one step: steps before it labelled correct, from it on wrong), plus "
        f"the {pm['train_sampled_answers']} sampled arithmetic answers above as one-step "
        f"solutions labelled by the verifier: {pm['train_steps']} labelled steps.",
        f"- Features: hidden state at the last token of each step (steps end with a blank line). "
        f"L2 {pm['l2']:g} by cross-validation (CV AUC by L2: {_cv(pm)}).",
        f"- **Held-out step AUC: {pm['heldout_step_auc']:.3f}** over {pm['heldout_steps']} steps "
        f"of {pm['heldout_solutions']} held-out solutions and corruptions; as an outcome reward on"
        f" the held-out arithmetic answers (last step) AUC "
        f"{pm['heldout_outcome_auc_of_last_step']:.3f}.",
        "",
        "## Limits",
        "",
        "- Trained for one model (SmolLM2-135M-Instruct, the embedded default) and short",
        "  arithmetic; it reads that model's hidden states, so it cannot score another model's",
        "  prompts meaningfully, and it knows nothing of other domains.",
        "- The process head's corruptions are synthetic (a changed number); real reasoning errors",
        "  of other kinds are not in its data, and its step-level AUC is modest.",
        "- The L2 grid's strongest value won cross-validation for both heads: a wider grid (or",
        "  more data) may do better.",
    ]
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
