"""Which layer of the policy knows whether a partial solution still reaches the answer?

A feature ablation for the process reward (issue: PRM held-out step AUC 0.75): the shipped
``default_prm`` reads the final layer. This reads every ``--every``-th layer of SmolLM2-135M (or
of another causal LM, ``--model DIR``) at the positions the served probe reads
(:func:`winnow.rewards.probe.process_positions`, position ``answer`` as shipped, or ``last``) on
the Monte-Carlo step journals, fits the shipped objective
(pointwise logistic regression on the soft step values, L2 chosen by question-split CV) per
layer, and prints the cross-validated step AUC on the training questions next to the held-out
step AUC on the benchmark questions (never used to choose anything). The multi-step solutions
only: no single-step answers (their features exist only for the final layer), so the final
layer's figure here is not the shipped head's. ``--mlp`` also fits the MLP pointwise head of
:mod:`benchmarks.rewards.prm_heads` (hyper-parameters by the same CV) on the layer the training
CV picks.

    python -m benchmarks rewards prm_layers             # 429 s; results/rewards/prm_layers.md
    python -m benchmarks rewards prm_layers --position last
    python -m benchmarks rewards prm_layers --model ~/.cache/winnow/models/gemma-3-270m \
        --out benchmarks/results/rewards/prm_layers_gemma --mlp --threads 1   # gemma_model
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.rewards import prm_heads
from winnow.models.default_model import build_default_model
from winnow.rewards.backbone import Backbone
from winnow.rewards.probe import process_positions
from winnow.settings import default_data_dir
from winnow.train import process, ranking
from winnow.train.steplabels import BENCH_STEP_JOURNAL, STEP_JOURNAL, read_steps

Rows = list[tuple[int, str, list[str], list[float], list[bool]]]


@torch.inference_mode()
def layer_states(backbone: Backbone, rows: Rows, position: str, layers: list[int]) -> torch.Tensor:
    """[layers, steps, hidden]: the hidden state of each chosen layer (0: embeddings; the last:
    after the final norm, what the served probe reads) at every step's probe position."""
    from tqdm import tqdm

    backbone.load()
    trunk, pad = backbone.model.model, backbone.tokenizer.pad_token_id or 0
    out: list[torch.Tensor] = []
    for start in tqdm(range(0, len(rows), 16), desc=f"states ({position})", unit="batch"):
        jobs = [process_positions(backbone, r[1], r[2], position) for r in rows[start : start + 16]]
        width = max(len(j.ids) for j in jobs)
        ids = torch.full((len(jobs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for b, j in enumerate(jobs):
            ids[b, : len(j.ids)] = torch.tensor(j.ids)
            mask[b, : len(j.ids)] = 1
        hidden = trunk(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for b, j in enumerate(jobs):
            at = list(j.positions)
            out.append(torch.stack([hidden[li][b, at] for li in layers], dim=0))
    return torch.cat(out, dim=1).float()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--position", choices=process.POSITIONS, default="answer")
    p.add_argument("--every", type=int, default=3, help="every k-th layer (and the last)")
    p.add_argument("--out", type=Path, default=common.results_dir("rewards") / "prm_layers")
    p.add_argument("--model", type=Path, help="a causal LM directory (default: the policy)")
    p.add_argument("--mlp", action="store_true", help="also an MLP head on the best-CV layer")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.monotonic()
    backbone = Backbone(args.model or build_default_model(default_data_dir()))
    backbone.load()
    loaded = time.monotonic() - started
    depth = backbone.model.config.num_hidden_layers
    layers = sorted({*range(args.every, depth, args.every), depth})
    sets, featurize = {}, {}
    for name, journal in (("train", STEP_JOURNAL), ("held", BENCH_STEP_JOURNAL)):
        rows = process.step_rows(read_steps(journal))
        t0 = time.monotonic()
        sets[name] = (
            layer_states(backbone, rows, args.position, layers),
            process.step_labels(rows),
        )
        featurize[name] = round(time.monotonic() - t0, 1)
    results: dict[str, Any] = {"position": args.position, "layers": {}}
    if args.model:
        results["model"] = str(args.model.expanduser().resolve().name)
    for k, layer in enumerate(layers):
        train, held = (
            dataclasses.replace(labels, x=states[k])
            for states, labels in (sets["train"], sets["held"])
        )
        cv = {g: process.cross_validate(train, "pointwise", g) for g in process.GRID}
        l2 = max(cv, key=cv.__getitem__)
        head = process.fit(train, "pointwise", l2)
        scores = head(held.x)
        m = process.measures(scores, held)
        final = ~held.intermediate  # each solution's last step: is its answer right?
        m["final_step_auc"] = ranking.auc(scores[final].tolist(), held.hard[final].tolist())
        results["layers"][layer] = {"l2": l2, "cv_step_auc": cv[l2], **m}
        print(f"layer {layer:2d}: cv {cv[l2]:.3f}  held-out step AUC {m['step_auc']:.3f}  "
              f"intermediate {m['intermediate_step_auc']:.3f}", flush=True)  # fmt: skip
    results["train_steps"] = len(sets["train"][1])
    results["held_steps"] = len(sets["held"][1])
    steps = results["train_steps"] + results["held_steps"]
    results["load_seconds"] = round(loaded, 1)
    results["featurize_seconds"] = featurize
    results["featurize_seconds_per_1000_steps"] = round(1000 * sum(featurize.values()) / steps, 1)
    if args.mlp:
        best = max(results["layers"], key=lambda k: results["layers"][k]["cv_step_auc"])
        k = layers.index(best)
        train, held = (
            dataclasses.replace(labels, x=states[k])
            for states, labels in (sets["train"], sets["held"])
        )
        results["mlp"] = {"layer": best, **mlp_head(train, held)}
    results["seconds"] = round(time.monotonic() - started, 1)
    results["command"] = common.command(__file__)
    model = f" of `{results['model']}`" if "model" in results else ""
    lines = [
        f"# Process reward: which layer{model}? (feature ablation)",
        "",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s). Position "
        f"`{args.position}`; pointwise logistic head per layer, L2 by question-split CV on the "
        f"{results['train_steps']} training steps; held out: {results['held_steps']} steps of the "
        "benchmark questions (never used to choose). Multi-step solutions only.",
        "",
        "| layer | L2 | CV step AUC (train) | held-out step AUC | within question | "
        "intermediate steps |",
        "|---|---|---|---|---|---|",
    ]
    for layer, m in results["layers"].items():
        lines.append(
            f"| {layer} | {m['l2']:g} | {m['cv_step_auc']:.3f} | {m['step_auc']:.3f} | "
            f"{m['within_question_step_auc']:.3f} | {m['intermediate_step_auc']:.3f} |"
        )
    if args.model:
        lines += [
            "",
            f"Model load {results['load_seconds']:.0f} s; featurizing (one forward pass per "
            f"solution, {len(layers)} layers kept, {torch.get_num_threads()} torch thread(s)): "
            f"train {featurize['train']:.0f} s, held out {featurize['held']:.0f} s, "
            f"{results['featurize_seconds_per_1000_steps']:.0f} s per 1,000 steps.",
        ]
    if "mlp" in results:
        m = results["mlp"]
        seeds = m["heldout_step_auc_seeds"]
        lines += [
            "",
            f"MLP pointwise head on layer {m['layer']} (best CV above), {m['chosen']} by CV: "
            f"CV step AUC {m['cv_step_auc']:.3f}, held-out step AUC {m['step_auc']:.3f} "
            f"(seeds {min(seeds):.3f}-{max(seeds):.3f}), within question "
            f"{m['within_question_step_auc']:.3f}, intermediate steps "
            f"{m['intermediate_step_auc']:.3f} ({m['seconds']:.0f} s).",
        ]
    common.save(args.out, results, "\n".join(lines) + "\n", script=__file__, argv=argv)


def mlp_head(train: process.StepSet, held: process.StepSet) -> dict[str, Any]:
    """:mod:`benchmarks.rewards.prm_heads`' MLP pointwise head, width and decay by question-split
    CV (the grid of its published run), held-out step AUC of seed 0 and the range over three
    seeds."""
    t0 = time.monotonic()
    configs = prm_heads.heads(hidden=(64, 128), decays=(0.1, 1.0))["mlp-pointwise"]
    cv = {cfg: prm_heads.cross_validate(train, fit) for cfg, fit in configs.items()}
    best = max(cv, key=cv.__getitem__)
    fit = configs[best]
    m = process.measures(fit(train, 0)(held.x).detach(), held)
    seeds = [m["step_auc"], *(prm_heads.heldout_auc(fit, train, held, s) for s in (1, 2))]
    print(f"mlp {best}: cv {cv[best]:.3f}  held-out {m['step_auc']:.3f} "
          f"(seeds {min(seeds):.3f}-{max(seeds):.3f})", flush=True)  # fmt: skip
    seconds = round(time.monotonic() - t0, 1)
    return {"chosen": best, "cv_step_auc": cv[best], "cv": cv, **m,
            "heldout_step_auc_seeds": seeds, "seconds": seconds}  # fmt: skip


if __name__ == "__main__":
    main()
