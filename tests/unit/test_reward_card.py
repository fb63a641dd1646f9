"""The reward heads' model card is written from the shipped heads' own metrics, and a trainer's
``--out`` directory holding only one head gets no card instead of a crash after training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from winnow.rewards.registry import ASSETS
from winnow.train.cards import curve_limit, reward_card


def test_card_from_the_shipped_heads_states_their_held_out_figures(tmp_path: Path) -> None:
    for name in ("default", "default_prm"):
        shutil.copytree(ASSETS / name, tmp_path / name)
    card = reward_card(tmp_path)
    assert card is not None
    text = card.read_text()
    outcome = json.loads((ASSETS / "default" / "probe.json").read_text())["metrics"]
    assert f"Held-out within-question AUC: {outcome['heldout_within_auc']:.3f}" in text
    assert f"{outcome['train_samples']} answers to {outcome['train_questions']}" in text


def test_one_head_alone_gets_no_card(tmp_path: Path) -> None:
    shutil.copytree(ASSETS / "default", tmp_path / "default")
    assert reward_card(tmp_path) is None
    assert not (tmp_path / "MODEL_CARD.md").exists()


def test_the_limits_line_follows_the_learning_curve() -> None:
    flat = curve_limit({"100": 0.76, "800": 0.806, "400": 0.803})
    assert flat and "flat from 400 to 800" in flat[0]
    rising = curve_limit({"100": 0.70, "200": 0.75})
    assert rising and "still rises from 100 to 200" in rising[0]
    assert curve_limit({"100": 0.7}) == []
