"""Model cards: the ``MODEL_CARD.md`` shipped beside trained heads, written from the metrics their
training stored with them (``probe.json``, ``value.json``), so a card never disagrees with its
head. One card for the reward heads (`winnow train reward` and `winnow train prm` rewrite it),
one for the VAS value models (`winnow train value`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from winnow.train.outcome import WHERE_READ


def _write(out_dir: Path, lines: list[str]) -> Path:
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


_OBJECTIVE = {"mlp": "pairwise, a ReLU MLP head (64 hidden; its L2 is the weight decay)"}
_PROCESS_OBJECTIVE = {
    "mlp": "pointwise, a ReLU MLP head (128 hidden; its L2 is the weight decay)",
}


def reward_card(out_dir: Path) -> Path | None:
    """The model card of the shipped reward heads, from their probe.json metrics; None (no card)
    when ``out_dir`` does not hold both heads (a trainer's ``--out`` elsewhere writes one)."""
    if not all((out_dir / name / "probe.json").exists() for name in ("default", "default_prm")):
        return None
    outcome = json.loads((out_dir / "default" / "probe.json").read_text())
    process = json.loads((out_dir / "default_prm" / "probe.json").read_text())
    om, pm = outcome["metrics"], process["metrics"]
    ph = pm["heldout"]
    cv = ", ".join(f"{k}: {v:.3f}" for k, v in om["cv_within_auc"].items())
    curve = ", ".join(f"{k}: {v:.3f}" for k, v in om.get("learning_curve", {}).items())
    single_share = pm["train_single_step_answers"] / max(
        pm["train_single_step_answers"] + pm["train_solutions"], 1
    )
    lines = [
        "# Default rewards: `default` (outcome) and `default_prm` (process)",
        "",
        "Small heads on SmolLM2-135M-Instruct's own final-layer hidden state (576 floats, after",
        f"the final norm; `default` reads it at {WHERE_READ[om.get('feature', 'last')]}), shipped",
        "as `head.safetensors` + `probe.json`. No downloaded data:",
        "reasoning-gym generates the problems, the model itself the answers, the rule-based",
        "verifier the labels. Questions are split by a hash of their text",
        "(`winnow/train/tasks.py`): the held-out and benchmark questions never appear in training.",
        "",
        "## `default` — P(answer correct), trained to rank answers to one question",
        "",
        f"- Data: `winnow train samples`: {om['train_samples']} answers to "
        f"{om['train_questions']} training-split questions (basic_arithmetic, 2 one-digit terms, "
        "+/- and *), 32 per question at temperature 0.7, max 96 tokens; "
        f"{om['train_accuracy_of_samples'] * 100:.0f}% correct; "
        f"{om['train_questions_with_both']} questions have both right and wrong answers.",
        f"- Objective: **{_OBJECTIVE.get(om['objective'], om['objective'])}** on the state at "
        f"**{om.get('feature', 'last')}** "
        f"(chosen with L2 {om['l2']:g} by 5-fold "
        "cross-validation that splits questions, on within-question AUC; by position/objective@L2: "
        f"{cv}), then Platt scaling on the pooled training answers (monotone: the ranking is "
        "unchanged, the output is a probability).",
        f"- **Held-out within-question AUC: {om.get('heldout_within_auc', float('nan')):.3f}** "
        f"(mean over the {om.get('heldout_questions_with_both', 0)} benchmark problems with both "
        f"right and wrong answers, of {om.get('heldout_samples', 0)} stored answers); pooled "
        f"AUC {om.get('heldout_pooled_auc', float('nan')):.3f}; training within-question AUC "
        f"{om['train_within_auc']:.3f}.",
        f"- Learning curve (held-out within-question AUC by training questions): {curve}.",
        "- Trained by `winnow train samples` (engine, journaled, resumable) then "
        "`winnow train reward`; other features and objectives compared in "
        "`benchmarks/results/reward_lab.md`.",
        "",
        "## `default_prm` — P(the solution so far still reaches the answer) (`winnow train prm`)",
        "",
        f"- Data: `winnow train steps`: {pm['train_solutions']} multi-step answers of the policy "
        f"to {pm['train_questions']} training-split questions, cut into steps as tree search "
        f"writes them; each intermediate step labelled by {pm['rollouts_per_step']:.0f} rollouts "
        "from its prefix (the fraction that reach the gold answer, Math-Shepherd), the last step "
        f"by the verifier; plus {pm['train_single_step_answers']} single-step answers (verdict): "
        f"{pm['train_steps']} steps, {pm['train_intermediate_steps']} intermediate.",
        f"- Objective: **{_PROCESS_OBJECTIVE.get(pm['objective'], pm['objective'])}** on the "
        f"state at **{pm['position']}** (`last`: the "
        "step's last token; `answer`: the last token of the result the step states), L2 "
        f"{pm['l2']:g}, chosen by 5-fold cross-validation that splits questions, on step AUC ("
        + ", ".join(f"{k}: {v:.3f}" for k, v in pm["cv_step_auc"].items())
        + "), then Platt scaling.",
        f"- **Held-out step AUC: {ph['step_auc']:.3f}** over {ph['steps']} steps of the "
        f"{pm['heldout_questions']} benchmark questions' own answers (evaluation split; labels "
        "by rollouts as above, a step good when any rollout reaches the answer); within question "
        f"{ph['within_question_step_auc']:.3f}; intermediate steps alone "
        f"{ph['intermediate_step_auc']:.3f} ({ph['intermediate_steps']} steps); Spearman with "
        f"the rollouts' success rate {ph['soft_label_spearman']:.3f}.",
        "",
        "## Limits",
        "",
        "- Trained for one model (SmolLM2-135M-Instruct, the embedded default) and short",
        "  arithmetic; it reads that model's hidden states, so it cannot score another model's",
        "  prompts meaningfully, and it knows nothing of other domains.",
        f"- Most answers to these questions are one step ({single_share:.0%} of the process",
        "  head's training answers): it sees few long solutions, and its labels come from "
        f"{pm['rollouts_per_step']:.0f}",
        "  rollouts each (a coarse estimate).",
        "  Its within-question step AUC mixes depths: a step's depth alone scores 0.71 there",
        "  (early steps keep rollouts that reach the answer, a wrong last step has none), so the",
        "  head is chosen on pooled step AUC. Against the head it replaced, on the same",
        "  held-out labels: `python benchmarks/rewards/eval_prm.py --git REV`",
        "  (`benchmarks/results/prm_eval.md`).",
        "- `default` ranks answers to one question; it was not trained to tell easy questions",
        "  from hard ones, so its pooled AUC (across questions) is lower than the first",
        f"  default's ({om.get('heldout_pooled_auc', float('nan')):.3f} vs 0.797 on the same "
        "answers): compare its scores within a question (best-of-N, votes), not across them.",
        *curve_limit(om.get("learning_curve", {})),
        "- Other heads and features on the same answers: `benchmarks/results/reward_lab.md`.",
    ]
    return _write(out_dir, lines)


FLAT = 0.01
"""A doubling of the training questions that moves held-out AUC less than this is "flat"."""


def curve_limit(curve: dict[str, float]) -> list[str]:
    """The card's line on what more data would buy, read off the learning curve's last step."""
    points = sorted((int(k), v) for k, v in curve.items())
    if len(points) < 2:
        return []
    (a, va), (b, vb) = points[-2:]
    if vb - va < FLAT:
        return [
            f"- The held-out curve is flat from {a} to {b} training questions ({va:.3f} to "
            f"{vb:.3f}): more answers of this policy to the same kind of question are not the "
            "next gain."
        ]
    return [
        f"- The held-out curve still rises from {a} to {b} training questions ({va:.3f} to "
        f"{vb:.3f}): more training questions should help."
    ]


def value_card(out_dir: Path, names: Sequence[str]) -> Path:
    """MODEL_CARD.md for the value models under ``out_dir``, from what training measured."""
    lines = [
        "# VAS value models",
        "",
        "Q-heads on SmolLM2-135M-Instruct's own final hidden state (see `winnow/heads/value.py`):",
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
    return _write(out_dir, lines)
