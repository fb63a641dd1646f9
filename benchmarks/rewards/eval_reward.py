"""Judge a reward on stored answers: no generation, minutes instead of hours.

Re-scores every stored answer of the quality benchmark (``winnow/train/data/quality.rows.jsonl``:
200 evaluation-split problems x 32 answers, or any journal of the same shape) with a configured
reward, through the same reward runtime the server uses, and prints what the quality benchmark
prints: pooled and within-question AUC, and the accuracy of best / weighted_vote /
best_of_majority vs majority vote for N = 1..32 (nested first-N subsets) with paired bootstrap
intervals, plus the plot.

    python -m benchmarks rewards eval_reward --reward default
    python -m benchmarks rewards eval_reward --reward default --rewards-config my.json --out X

Answers are re-read with today's answer checker (groups and verdicts), so the figures of two
rewards computed with this script are comparable with each other, and with `quality run
--report-only` only as far as the checker has not changed.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.quality import run as quality  # the same tables and plot
from winnow.answers.groups import answers_and_groups
from winnow.train.tasks import messages as task_messages


def load_rows(path: Path, per_task: int = 100) -> list[dict[str, Any]]:
    """The journal's rows, each with its problem (gold answer) from the benchmark's problem list."""
    args = argparse.Namespace(tasks=["add_sub_1digit", "mul_1digit"], problems=2 * per_task)
    items = quality.problem_set(args)
    by_question = {p.question: p for p in items}
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            record["problem"] = by_question[record["question"]]
            rows.append(record)
    return rows


def candidates_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A journal row's candidates in sampling order."""
    return sorted(row["body"]["winnow"]["candidates"], key=lambda c: c["index"])


def stored_scores(rows: Sequence[dict[str, Any]]) -> list[list[float]]:
    """The scores a journal already holds (the reward of the run that wrote it)."""
    return [[c["score"] for c in candidates_of(r)] for r in rows]


def by_row(values: Sequence[float], sizes: Sequence[int]) -> list[list[float]]:
    """Flat scores (in row, then candidate order) cut into rows of ``sizes``."""
    out, at = [], 0
    for size in sizes:
        out.append(list(values[at : at + size]))
        at += size
    return out


def rescored(rows: Sequence[dict[str, Any]], scores: Sequence[Sequence[float]]) -> list[dict]:
    """Rows as the quality benchmark summarises them, with new scores and today's answer groups;
    the 'chosen' candidate is the best-scored one (what best_of_n would return)."""
    out = []
    for row, row_scores in zip(rows, scores, strict=True):
        body = copy.deepcopy(row["body"])
        cands = candidates_of({"body": body})
        answers, groups = answers_and_groups([c["text"] for c in cands])
        best = max(range(len(cands)), key=lambda i: _key(row_scores[i]))
        for i, c in enumerate(cands):
            c.update(score=row_scores[i], answer=answers[i], group=groups[i], chosen=i == best)
        body["winnow"]["candidates"] = cands
        out.append(
            {"i": row["i"], "problem": row["problem"], "body": body, "seconds": row["seconds"]}
        )
    return out


def _key(score: float) -> float:
    return float("-inf") if score != score else score  # NaN ranks last


async def score_rows(
    rows: Sequence[dict[str, Any]], reward_name: str, config_file: Path | None
) -> list[list[float]]:
    """Every stored answer scored by the configured reward, one reward call per problem."""
    from transformers import AutoTokenizer

    from winnow.models.default_model import build_default_model
    from winnow.rewards.base import ChatPrompt, OutcomeItem, ProcessItem, split_steps
    from winnow.rewards.registry import build_rewards, default_configs, load_configs
    from winnow.settings import default_data_dir

    model = str(build_default_model(default_data_dir()))
    configs = default_configs(True) + (load_configs(config_file) if config_file else [])
    rewards = build_rewards(configs, default_model_dir=model)
    reward = rewards.get(reward_name)
    await reward.start()
    tokenizer = AutoTokenizer.from_pretrained(model)
    out: list[list[float]] = []
    started = time.monotonic()
    try:
        for k, row in enumerate(rows):
            messages = task_messages(row["question"])
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            prompt = ChatPrompt(text, messages)
            cands = candidates_of(row)
            gold = row["problem"].answer
            if reward.info.kind == "process":
                items = [ProcessItem(prompt, split_steps(c["text"]), reference=gold) for c in cands]
                scored = await reward.score_steps(items)
                out.append([s[-1] if s else float("nan") for s in scored.scores])
            else:
                items = [OutcomeItem(prompt, c["text"], reference=gold) for c in cands]
                out.append(list((await reward.score(items)).scores))
            if (k + 1) % 20 == 0:
                rate = (k + 1) / (time.monotonic() - started)
                print(f"[eval] {k + 1}/{len(rows)} problems ({rate * 60:.1f}/min)", flush=True)
    finally:
        await reward.shutdown()
    return out


def score_rows_from_features(
    rows: Sequence[dict[str, Any]], reward_name: str, head_dir: Path | None = None
) -> list[list[float]]:
    """The same scores for an outcome probe on the final layer (at the position it reads), from the
    feature cache of `winnow train reward` (``winnow/train/features.py``) instead of a new
    forward pass: equal to the reward runtime's scores within ~2e-6 (checked on the stored
    scores of the previous default), and seconds instead of half an hour on 2 cores.
    ``head_dir``: a head not (yet) shipped, e.g. `winnow train reward --out DIR`'s DIR/default."""
    import torch

    from winnow.kernels.dispatch import reward_head
    from winnow.models.default_model import build_default_model
    from winnow.rewards.probe import load_head
    from winnow.rewards.registry import ASSETS
    from winnow.settings import default_data_dir
    from winnow.train import datasets
    from winnow.train.features import FeatureReader, extract

    head, meta = load_head(head_dir or ASSETS / reward_name)
    if meta.get("kind") != "outcome" or int(meta.get("layer", -1)) != -1:
        raise SystemExit(f"--features reads outcome probes on the last layer; {reward_name} is not")
    bench = datasets.bench_rows()
    assert [q.question for q in bench] == [r["question"] for r in rows]
    reader = FeatureReader(build_default_model(default_data_dir()))
    x = extract(reader, bench, datasets.feature_dir())[str(meta.get("position", "last"))]
    scores = reward_head(x, torch.arange(x.shape[0]), head).reshape(-1)  # as ProbeReward does
    if meta.get("output", "sigmoid") == "sigmoid":
        scores = torch.sigmoid(scores)
    return by_row(scores.tolist(), [len(q.samples) for q in bench])


def evaluate(
    rows: Sequence[dict[str, Any]], scores: Sequence[Sequence[float]], label: str, out: Path
) -> dict[str, Any]:
    """The quality benchmark's summary, tables and plot for ``scores``; written to ``out``."""
    args = argparse.Namespace(
        tasks=["add_sub_1digit", "mul_1digit"], problems=len(rows), n=32, reward=label,
        concurrency=1, rescored_offline=True,
    )  # fmt: skip
    new_rows = rescored(rows, scores)
    summary = quality.summarise(new_rows, args, wall=0.0)
    summary["command"] = common.command(__file__)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".rescored.jsonl").open("w") as f:  # the quality journal's shape
        for row in sorted(new_rows, key=lambda r: r["i"]):
            record = {"i": row["i"], "question": row["problem"].question, "body": row["body"]}
            f.write(json.dumps({**record, "seconds": row["seconds"]}) + "\n")
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    quality.report(summary, out)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reward", default="default", help="a configured reward's name")
    p.add_argument("--rewards-config", type=Path, default=None, help="extra rewards (JSON list)")
    p.add_argument("--rows", type=Path, default=common.QUALITY_ROWS)
    p.add_argument(
        "--out", type=Path, default=None, help="default: results/rewards/reward_eval_<name>"
    )
    p.add_argument(
        "--features",
        action="store_true",
        help="shipped outcome probes only: score from the training feature cache (seconds)",
    )
    p.add_argument(
        "--head-dir",
        type=Path,
        default=None,
        help="with --features: read this head directory instead of the shipped reward's",
    )
    p.add_argument(
        "--stored",
        action="store_true",
        help="no reward: the scores stored in the journal (the reward of that run), re-judged",
    )
    args = p.parse_args(argv)
    if args.head_dir and not args.features:
        p.error("--head-dir reads a head from the feature cache: it needs --features")
    rows = load_rows(args.rows)
    if args.stored:
        scores = stored_scores(rows)
    elif args.features:
        scores = score_rows_from_features(rows, args.reward, args.head_dir)
    else:
        scores = asyncio.run(score_rows(rows, args.reward, args.rewards_config))
    out = args.out or common.results_dir("rewards") / f"reward_eval_{args.reward}"
    summary = evaluate(rows, scores, args.reward, out)
    print(out.with_suffix(".md").read_text())
    print(json.dumps(summary["reward_auc"]))
    written = [out.with_suffix(s) for s in (".json", ".md", ".png", ".rescored.jsonl")]
    common.record(written, script=__file__, argv=argv)


if __name__ == "__main__":
    main()
