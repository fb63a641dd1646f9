"""Helpers for tests on the fake engine."""

from __future__ import annotations

from pathlib import Path

import pytest


def placeholder_value_models(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """The vas strategy names value models; the fake engine applies none, so when winnow ships
    none (yet) a placeholder ``default`` stands in through ``$WINNOW_VALUES_DIR``."""
    from winnow.heads.value import available

    if "default" in available():
        return
    (root / "default").mkdir(parents=True, exist_ok=True)
    (root / "default" / "value.json").write_text("{}")
    monkeypatch.setenv("WINNOW_VALUES_DIR", str(root))
