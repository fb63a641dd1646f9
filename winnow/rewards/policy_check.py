"""At start-up, a probe reward is refused unless its head was trained on the served model.

A probe reads the policy's own hidden states (through its backbone, or the engine's tap), so its
head must have been trained on that model: :func:`check_probe` compares the backbone identity the
head recorded (:mod:`winnow.heads.identity`) with the served model's, and with the configured
backbone's when that is another directory.

Heads trained before identities were recorded (no ``"identity"`` in ``probe.json``) are accepted,
with a warning, only where they can be right: on the embedded default model, whose states every
shipped head was trained on, with the head's input width equal to its hidden size. Anywhere else
they are refused like a mismatch. A configuration may waive the check (``allow_other_policy``):
the probe then scores another model's answers with its own backbone, and its card's figures do
not describe what it does there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from winnow.heads.identity import BackboneIdentity, identity_of, mismatch
from winnow.rewards.configs import RewardConfigError

log = logging.getLogger("winnow.rewards")


@dataclass(frozen=True, slots=True)
class Policy:
    """The served model, as the server knows it: its directory (None when it has none here, a
    remote backend without ``--model``) and whether it is the embedded default model."""

    model_dir: str | None
    is_default: bool = False


def train_hint(model_dir: str | None) -> str:
    """The commands that train a probe for ``model_dir`` and serve it."""
    model = model_dir or "MODEL_DIR"
    return (
        f"train one for it: `winnow train fit --model {model} --questions QUESTIONS.jsonl "
        f"--out OUT_DIR`, then `winnow serve --model {model} --rewards-config "
        "OUT_DIR/rewards.json`"
    )


def check_probe(
    name: str,
    directory: Path,
    meta: dict[str, object],
    head_width: int,
    policy: Policy,
    backbone_dir: str | None = None,
) -> None:
    """Raise :class:`RewardConfigError` (saying how to train a fitting probe) unless the head in
    ``directory`` (``meta``: its probe.json; ``head_width``: its input features) reads the served
    model's states; ``backbone_dir``: the configured backbone, when it is not the policy's."""
    if policy.model_dir is None or not (Path(policy.model_dir) / "config.json").exists():
        log.warning(
            "reward %r: the served model has no local directory, so the probe's backbone is not "
            "checked against it",
            name,
        )
        return
    served = identity_of(policy.model_dir)
    raw = meta.get("identity")
    if raw is None:
        _legacy(name, directory, head_width, policy, served)
    else:
        recorded = BackboneIdentity.model_validate(raw)
        why = mismatch(recorded, served)
        if why is not None:
            raise RewardConfigError(
                f"reward {name!r}: the probe in {directory} was trained on {recorded.name!r}, "
                f"not on the served model {served.name!r} ({why}); {train_hint(policy.model_dir)}"
            )
    same = backbone_dir is None or Path(backbone_dir).resolve() == Path(policy.model_dir).resolve()
    if backbone_dir is not None and not same:
        other = identity_of(backbone_dir)
        why = mismatch(served, other)
        if why is not None:
            raise RewardConfigError(
                f"reward {name!r}: its backbone {backbone_dir} is not the served model "
                f"{served.name!r} ({why}): the probe would read another model's states; "
                "leave 'backbone' unset (the served model) or set 'allow_other_policy'"
            )


def _legacy(
    name: str, directory: Path, width: int, policy: Policy, served: BackboneIdentity
) -> None:
    if policy.is_default and width == served.hidden_size:
        log.warning(
            "reward %r: the probe in %s records no backbone identity; accepted because the "
            "served model is the default one and its hidden size (%d) fits (re-train it with "
            "`winnow train fit` to record one)",
            name,
            directory,
            width,
        )
        return
    raise RewardConfigError(
        f"reward {name!r}: the probe in {directory} records no backbone identity (trained "
        f"before winnow recorded one, for the default model) and the served model "
        f"{served.name!r} is not the default one; {train_hint(policy.model_dir)}"
    )
