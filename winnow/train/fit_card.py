"""The model card of a reward trained by `winnow train fit`: ``MODEL_CARD.md`` beside the head,
written from its ``probe.json`` (and its domain head's), so the card never disagrees with it."""

from __future__ import annotations

import json
from pathlib import Path

from winnow.heads.domain import read_domain_meta
from winnow.heads.probe import PROBE_META
from winnow.train.prompting import shell_form


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _signed(interval: dict[str, float]) -> str:
    return (
        f"{interval['value'] * 100:+.1f} [{interval['low'] * 100:+.1f}, "
        f"{interval['high'] * 100:+.1f}] points"
    )


def _source_option(cfg: dict[str, object]) -> str:
    if cfg["questions"]:
        return f"--questions {cfg['questions']}"
    return "--tasks " + ",".join(cfg["tasks"])  # type: ignore[arg-type]


def _prompts(cfg: dict[str, object]) -> list[str]:
    """The card's line on how questions were asked, when not as chats: a reward fitted on
    completion prompts reads requests sent the same way, no others."""
    template = cfg.get("prompt_template")
    if not template:
        return []
    return [
        f"- Prompts: each question was asked as the completion prompt `{template!r}` with the "
        "question in it (`--prompt-template`), not as a chat through a chat template. Requests "
        "must send the same text as a completion prompt (`/v1/completions`, `prompt` = the "
        "template with the question in it) for this card's figures and domain to apply; a chat "
        "request is another prompt than the ones the reward was fitted and measured on."
    ]


def fit_card(reward_dir: Path) -> Path:
    meta = json.loads((reward_dir / PROBE_META).read_text())
    m, h, cfg, ident = meta["metrics"], meta["heldout"], meta["config"], meta["identity"]
    domain = read_domain_meta(reward_dir)
    auc = h["within_auc"]
    source = cfg["questions"] or "task sets " + ", ".join(cfg["tasks"])
    lines = [
        f"# Reward `{cfg['name']}`: P(answer correct) for {ident['name']}",
        "",
        meta["description"],
        "",
        f"- Model: `{meta['backbone']}` (hidden size {ident['hidden_size']}, config sha256 "
        f"`{ident['config_sha256'][:12]}`, weights `{(ident.get('weights_sha256') or '-')[:12]}`"
        "); the server refuses this reward on any other model.",
        f"- Questions: `{source}`, split by problem key (a group, an arithmetic expression "
        "without brackets or double negation and in no particular order, or normalized text), "
        f"{cfg['eval_fraction']:.0%} "
        f"of keys held out: {m['train_questions']} training and {h['questions']} held-out "
        f"questions; {h['leak']['shared']} held-out questions share a key with a training one.",
        f"- Answers: {cfg['n']} per question at temperature {cfg['temperature']}, max "
        f"{cfg['max_tokens']} tokens"
        + (
            f" (the answers `{cfg['seed_journal']}` held were imported from it, not sampled by "
            "this fit: prompts, answers, n and max_tokens checked; temperature and seed as "
            "declared)"
            if cfg.get("seed_journal")
            else ""
        )
        + f"; labels by `{cfg['checker'] or 'the verifier'}`; "
        f"{_pct(m['train_accuracy_of_samples'])} of training answers right, "
        f"{m['train_questions_with_both']} training questions with right and wrong answers.",
        *_prompts(cfg),
        f"- Head: {m['objective']} objective at `{m['feature']}`, L2 {m['l2']:g}, chosen by "
        f"5-fold cross-validation by question among {len(m['cv_within_auc'])} variants "
        "(feature x objective x L2, each one's figure in `probe.json` `metrics.cv_within_auc`) on "
        f"within-question AUC (best {max(m['cv_within_auc'].values()):.3f}), then "
        "Platt-calibrated; the held-out questions below took no part in the choice.",
        "",
        "## Held-out figures (measured once, on questions nothing was chosen on)",
        "",
        f"- **Within-question AUC: {auc['value']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]** "
        f"(95% bootstrap interval over the {auc['questions']} held-out questions with right and "
        f"wrong answers); pooled AUC "
        + (f"{h['pooled_auc']:.3f}" if h["pooled_auc"] is not None else "n/a")
        + f"; {_pct(h['accuracy_of_samples'])} of held-out answers right.",
        "",
        "| N | best_of_n | majority | weighted_vote | pass@N | best_of_n - majority | "
        "weighted_vote - majority |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in h["selection"]:
        lines.append(
            f"| {s['n']} | {_pct(s['best_of_n'])} | {_pct(s['majority'])} | "
            f"{_pct(s['weighted_vote'])} | {_pct(s['pass_at_n'])} | "
            f"{_signed(s['best_of_n_gain'])} | {_signed(s['weighted_vote_gain'])} |"
        )
    subsets = h["selection"][0]["subsets"] if h["selection"] else 0
    lines += [
        "",
        f"Accuracies are means over questions of the mean over {subsets} random N-subsets of "
        "each question's answers (ties count as the mean over the tied choices); gains carry a "
        "95% paired bootstrap interval over questions.",
        "",
    ]
    if domain is not None:
        lines += [
            "## Where it applies",
            "",
            f"- The prompt's last-token state is compared with the {domain.train_prompts} "
            "training prompts' (mean absolute whitened distance); a request is in the domain up "
            f"to **{domain.threshold:.3f}**, the {domain.quantile:g} quantile of the "
            f"{domain.held_prompts or domain.train_prompts} {domain.calibrated_on} prompts' "
            "distances. Quantiles: "
            + "; ".join(
                f"{side} " + ", ".join(f"{k} {v:.3f}" for k, v in q.items())
                for side, q in domain.distances.items()
            )
            + ".",
            "- Scores carry the verdict per prompt; out of the domain, trust the vote over the "
            "best score.",
            "",
        ]
    lines += [
        "## Limits",
        "",
        "- Measured on held-out questions of the same source: on other kinds of question it "
        "may be blind; the domain check is a guard, not a measurement.",
        "- One model: it reads this model's hidden states and means nothing on another's.",
        "",
        f"Trained by `winnow train fit --model {meta['backbone']} "
        + (
            f"--questions {cfg['questions']}"
            if cfg["questions"]
            else f"--tasks {','.join(cfg['tasks'])}"
        )
        + f" --n {cfg['n']}"
        + (
            f" --prompt-template {shell_form(cfg['prompt_template'])}"
            if cfg.get("prompt_template")
            else ""
        )
        + (f" --seed-journal {cfg['seed_journal']}" if cfg.get("seed_journal") else "")
        + "`.",
    ]
    path = reward_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
