"""A fitted reward on question families it was and was not trained on: `auto` vs majority (#31).

A reward fitted by `winnow train fit` (a probe with a domain) is applied to the answers of other
`winnow train fit` runs of the same model (their journals and cached features: another family of
questions). Per family and N, over random N-subsets of each question's answers:

* ``best``: the reward's top-scored answer; ``majority``: the most frequent final answer;
* ``auto``: what `best_of_n`'s default ``selection: "auto"`` picks: ``best`` where the reward's
  domain head puts the question's prompt inside its domain, ``majority`` outside it;
* paired differences with the vote, bootstrapped over questions, and the within-question AUC.

On the reward's own run only its held-out questions are used (the in-domain row); on another
run every question whose problem key is not one of the reward's training questions' keys (the
others are counted and left out). The domain verdict is the served one: the domain head on the
prompt's last final state, tokenized as the served probe tokenizes a prompt. Scores are the head
on the cached features (the same states the engine's tap reads; ``tests/engine`` compares them).

    python -m benchmarks rewards cross_family --reward RUN_A/reward \\
        --family three_term=RUN_A --family products=RUN_B --family default_tasks=RUN_C --n 8

A family whose features are not all cached has the missing ones computed (the policy in
transformers, about 17 CPU-seconds per question of 32 answers); ``--limit K`` takes its first K
questions (in the journal's order) instead, ``--cached-only`` only those already read (a run
still reading its features is measured on the part it has).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import common
from winnow.train.heldout import bootstrap_mean, question_selection, within_auc_interval

FIGURES = ("best", "majority", "weighted_vote", "pass")


def _run_rows(run: Path) -> tuple[Any, list[Any], list[Any]]:
    """A fit run's settings, training rows and held-out rows (split as the fit split them); read
    once per run (a task set's questions are generated again on each read)."""
    return _read_run(run.resolve())


@functools.cache
def _read_run(run: Path) -> tuple[Any, list[Any], list[Any]]:
    from winnow.train.fit import FitConfig, load_rows, split_rows

    settings = json.loads((run / "fit.json").read_text())["config"]
    config = FitConfig.model_validate({**settings, "out": str(run)})
    train, held = split_rows(load_rows(config), config.eval_fraction)
    return config, train, held


def family_questions(reward_run: Path, run: Path) -> tuple[list[Any], int]:
    """The questions of ``run`` the reward of ``reward_run`` is measured on, and how many were
    left out for sharing a problem key with its training questions."""
    _, reward_train, _ = _run_rows(reward_run)
    if run.resolve() == reward_run.resolve():
        return _run_rows(run)[2], 0
    _, train, held = _run_rows(run)
    seen = {row.key for row in reward_train}
    rows = [row for row in (*train, *held) if row.key not in seen]
    return rows, len(train) + len(held) - len(rows)


def evaluate(
    reward_dir: Path,
    run: Path,
    ns: list[int],
    *,
    reader: Any,
    subsets: int,
    seed: int,
    limit: int | None,
    cached_only: bool = False,
) -> dict[str, Any]:
    from winnow.answers.groups import answers_and_groups
    from winnow.heads.domain import load_domain
    from winnow.heads.probe import has_sigmoid, head_scorer, load_head
    from winnow.train.checkers import load_checker
    from winnow.train.features import cache_key, extract
    from winnow.train.fit import _labels
    from winnow.train.samples import read_journal

    rows, shared = family_questions(reward_dir.parent, run)
    config = _run_rows(run)[0]
    journal = {r.question: r for r in read_journal(run / "samples.jsonl")}
    records = [journal[row.id] for row in rows if row.id in journal]
    if cached_only:  # the questions whose features another run already read
        records = [r for r in records if (run / "features" / f"{cache_key(r)}.pt").exists()]
    records = records[:limit]
    labels = _labels(load_checker(config.checker), records)
    head, meta = load_head(reward_dir)
    domain = load_domain(reward_dir)
    if domain is None:
        raise SystemExit(f"{reward_dir} has no domain/ (fit it with `winnow train fit`)")
    x = extract(reader, records, run / "features")[meta["position"]].float()
    flat = head_scorer(head, has_sigmoid(meta))(x, torch.arange(len(x))).reshape(-1).tolist()
    scores, start = [], 0
    for row in labels:
        scores.append(flat[start : start + len(row)])
        start += len(row)
    states = reader.prompt_states([r.prompt for r in records])
    verdicts = [domain.verdict(d) for d in domain.distances(states)]
    inside = np.array([v.in_domain for v in verdicts])
    groups = [answers_and_groups([s.text for s in r.samples])[1] for r in records]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "run": common.shown(run),
        "questions": len(records),
        "left_out_sharing_a_training_key": shared,
        "in_domain_fraction": float(inside.mean()),
        "accuracy_of_samples": float(np.mean([v for row in labels for v in row])),
        "within_auc": within_auc_interval(scores, labels, seed=seed).model_dump(),
        "selection": [],
    }
    for n in ns:
        table = np.array(
            [
                question_selection(s, y, g, n, subsets, rng)
                for s, y, g in zip(scores, labels, groups, strict=True)
            ]
        ).reshape(-1, 4)
        best, majority = table[:, 0], table[:, 1]
        auto = np.where(inside, best, majority)
        out["selection"].append(
            {
                "n": n,
                **{k: float(v) for k, v in zip(FIGURES, table.mean(0), strict=True)},
                "auto": float(auto.mean()),
                "best_gain": bootstrap_mean(best - majority, seed=seed).model_dump(),
                "auto_gain": bootstrap_mean(auto - majority, seed=seed).model_dump(),
            }
        )
    return out


def _signed(iv: dict[str, float]) -> str:
    return f"{iv['value'] * 100:+.1f} [{iv['low'] * 100:+.1f}, {iv['high'] * 100:+.1f}]"


def table(reward: str, families: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, fam in families.items():
        auc = fam["within_auc"]
        for sel in fam["selection"]:
            rows.append(
                [
                    name, fam["questions"], f"{fam['in_domain_fraction']:.0%}",
                    f"{auc['value']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]", sel["n"],
                    f"{sel['majority']:.1%}", f"{sel['best']:.1%}", f"{sel['auto']:.1%}",
                    _signed(sel["best_gain"]), _signed(sel["auto_gain"]), f"{sel['pass']:.1%}",
                ]
            )  # fmt: skip
    head = ["family", "questions", "in domain", "within-question AUC", "N", "majority",
            "best", "auto", "best - majority", "auto - majority", "pass@N"]  # fmt: skip
    return "\n".join([f"reward: {reward}", "", *common.md_table(head, rows)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reward", type=Path, required=True, help="a fitted reward dir (RUN/reward)")
    p.add_argument("--family", action="append", required=True, metavar="NAME=RUN_DIR",
                   help="a `winnow train fit` output directory of the same model")  # fmt: skip
    p.add_argument("--n", type=int, action="append", help="N of the selection (default 4, 8)")
    p.add_argument("--subsets", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="at most this many questions per family")
    p.add_argument("--cached-only", action="store_true", help="only questions already read")
    p.add_argument("--out", type=Path, help="a JSON file of the figures (and .md beside it)")
    args = p.parse_args(argv)
    from winnow.train.features import FeatureReader

    reward = args.reward.resolve()
    meta = json.loads((reward / "probe.json").read_text())
    reader = FeatureReader(meta["backbone"])
    families = {}
    for spec in args.family:
        name, _, run = spec.partition("=")
        families[name] = evaluate(
            reward, Path(run).expanduser(), args.n or [4, 8], reader=reader,
            subsets=args.subsets, seed=args.seed, limit=args.limit, cached_only=args.cached_only,
        )  # fmt: skip
    text = table(common.shown(reward), families)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"reward": common.shown(reward), "families": families,
                   "machine": common.machine_info()}  # fmt: skip
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")
        common.record([args.out, args.out.with_suffix(".md")], script=__file__, argv=argv,
                      wall_s=common.wall_seconds())  # fmt: skip


if __name__ == "__main__":
    main()
