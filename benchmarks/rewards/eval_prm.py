"""Judge process rewards on Monte-Carlo step labels: no generation, minutes.

Scores every step of the held-out step journal (`winnow train steps --bench`: the benchmark
questions' own multi-step answers, each intermediate step labelled by 8 rollouts from its prefix,
the last step by the verifier) with process-probe heads, through the served scoring path
(:class:`winnow.rewards.probe.ProbeReward`), and prints the step AUC against Math-Shepherd's hard
labels (a step is good when any rollout from it reaches the gold answer): pooled, within
question, on intermediate steps alone, on last steps alone, and the Spearman correlation with the
rollouts' success rate.

    python -m benchmarks rewards eval_prm                  # the shipped default_prm
    python -m benchmarks rewards eval_prm --git a5d36be    # ... and the head at a commit
    python -m benchmarks rewards eval_prm --head DIR --head DIR2
    python -m benchmarks rewards eval_prm --head winnow/assets/rewards/default   # an outcome head

An outcome head scores each step as tree search scores prefixes with it: the text up to and
including that step, as a response of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from winnow.models.default_model import build_default_model
from winnow.rewards.backbone import Backbone
from winnow.rewards.base import OutcomeItem, ProcessItem
from winnow.rewards.probe import ProbeReward
from winnow.rewards.registry import ASSETS
from winnow.settings import default_data_dir
from winnow.train import process, ranking
from winnow.train.steplabels import BENCH_STEP_JOURNAL, read_steps

SHIPPED = "winnow/assets/rewards/default_prm"


def head_at(rev: str, into: Path) -> Path:
    """The default_prm head directory as committed at ``rev`` (git show), copied into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("head.safetensors", "probe.json"):
        blob = subprocess.run(["git", "show", f"{rev}:{SHIPPED}/{name}"], cwd=common.ROOT,
                              check=True, capture_output=True).stdout  # fmt: skip
        (into / name).write_bytes(blob)
    return into


async def score(directory: Path, backbone: Backbone, items: list[ProcessItem]) -> torch.Tensor:
    reward = ProbeReward("candidate", directory, backbone)
    await reward.start()
    try:
        if reward.info.kind == "process":
            scored = await reward.score_steps(items)
            return torch.tensor([s for row in scored.scores for s in row])
        prefixes = [
            OutcomeItem(i.prompt, "".join(i.steps[: k + 1]))
            for i in items
            for k in range(len(i.steps))
        ]
        return torch.tensor((await reward.score(prefixes)).scores)
    finally:
        await reward.shutdown()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--head", type=Path, action="append", default=[], help="a probe directory")
    p.add_argument("--git", action="append", default=[], help="default_prm as of a commit")
    p.add_argument("--journal", type=Path, default=BENCH_STEP_JOURNAL)
    p.add_argument("--out", type=Path, default=common.results_dir("rewards") / "prm_eval")
    args = p.parse_args(argv)
    started = time.monotonic()
    held = read_steps(args.journal)
    rows = process.step_rows(held)
    items = [ProcessItem(prompt, tuple(steps)) for _, prompt, steps, _, _ in rows]
    labels = process.step_labels(rows)
    inter = labels.intermediate
    heads: dict[str, Path] = {"shipped default_prm": ASSETS / "default_prm"}
    tmp = Path(tempfile.mkdtemp())
    for rev in args.git:
        heads[f"default_prm @ {rev}"] = head_at(rev, tmp / rev)
    for directory in args.head:
        heads[str(directory)] = directory
    backbone = Backbone(build_default_model(default_data_dir()))
    results: dict[str, Any] = {
        "journal": common.shown(args.journal),
        "questions": len(held),
        "solutions": len(rows),
        "heads": {},
    }  # fmt: skip
    for name, directory in heads.items():
        s = asyncio.run(score(directory, backbone, items))
        last = ~inter
        m = process.measures(s, labels)
        m["last_step_auc"] = ranking.auc(s[last].tolist(), labels.hard[last].tolist())
        meta = json.loads((directory / "probe.json").read_text())
        m["description"] = meta.get("description", "")
        results["heads"][name] = m
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()
                                      if isinstance(v, float)), flush=True)  # fmt: skip
    results["seconds"] = round(time.monotonic() - started, 1)
    results["command"] = common.command(__file__)
    common.save(args.out, results, report(results), script=__file__, argv=argv)


def report(results: dict[str, Any]) -> str:
    first = next(iter(results["heads"].values()))
    lines = [
        "# Process rewards on Monte-Carlo step labels (held out)",
        "",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s)",
        "",
        f"{results['solutions']} multi-step answers to {results['questions']} benchmark questions "
        f"(evaluation split, never trained on; `{results['journal']}`), {first['steps']} steps, "
        f"{first['intermediate_steps']} of them intermediate. Label: a step is good when any of "
        "its 8 rollouts reaches the gold answer (Math-Shepherd's hard estimate), a last step when "
        "the verifier accepts the answer. Scored through the served path (`ProbeReward`).",
        "",
        "| head | step AUC | within question | intermediate steps | last steps | Spearman vs "
        "rollout success |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results["heads"].items():
        lines.append(
            f"| {name} | {m['step_auc']:.3f} | {m['within_question_step_auc']:.3f} | "
            f"{m['intermediate_step_auc']:.3f} | {m['last_step_auc']:.3f} | "
            f"{m['soft_label_spearman']:.3f} |"
        )
    lines += ["", "Heads:", ""]
    lines += [f"- {name}: {m['description']}" for name, m in results["heads"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
