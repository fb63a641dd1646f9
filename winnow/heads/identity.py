"""Which model a probe head reads: the backbone identity recorded in its ``probe.json``.

A probe head is a function of one model's hidden states; on another model's states it returns
numbers that mean nothing, and when the hidden sizes happen to match nothing fails loudly. So a
head directory records the identity of the backbone it was trained on (``"identity"`` in
``probe.json``), and the server compares it with the model it serves (:func:`mismatch`).

The identity is the model directory's name (informative only: directories get renamed), a hash
of its ``config.json`` (the architecture; keys that change with the saving library's version or
the storage dtype are left out, see :data:`VOLATILE`), its hidden size, and a fingerprint of its
weight files (a fine-tune or the base model of an instruct model has the same config but other
states): a hash of each ``*.safetensors`` file's size and 16 spaced 64 KiB slices, cheap on a
model of any size.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

VOLATILE = frozenset(
    {
        "transformers_version",
        "_name_or_path",
        "_model_name_or_path",
        "_commit_hash",
        "torch_dtype",
        "dtype",
        "use_cache",
    }
)
"""config.json keys left out of the hash: they change with the library or the storage dtype,
not with what the model computes."""
_SLICES, _SLICE = 16, 64 * 1024


class BackboneIdentity(BaseModel):
    """What a probe head records of the model whose states it was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The model directory's name (informative).")
    config_sha256: str = Field(description="sha256 of config.json without the VOLATILE keys.")
    hidden_size: int = Field(ge=1)
    weights_sha256: str | None = Field(
        None, description="Fingerprint of the weight files (sizes and spaced slices)."
    )


def config_hash(config: dict[str, object]) -> str:
    kept = {k: v for k, v in config.items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def hidden_size_of(config: dict[str, object]) -> int:
    """The hidden size, also of configs that nest it (multimodal ``text_config``)."""
    for source in (config, config.get("text_config")):
        if isinstance(source, dict):
            for key in ("hidden_size", "n_embd", "d_model"):
                value = source.get(key)
                if isinstance(value, int):
                    return value
    raise ValueError("config.json names no hidden size")


def weights_fingerprint(model_dir: Path) -> str | None:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as f:
            for k in range(_SLICES):
                f.seek(max(0, size - _SLICE) * k // max(_SLICES - 1, 1))
                digest.update(f.read(_SLICE))
    return digest.hexdigest()


def identity_of(model_dir: str | os.PathLike[str]) -> BackboneIdentity:
    """The identity of the model in ``model_dir`` (``ValueError`` if it has no config.json)."""
    directory = Path(model_dir)
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{directory} is not a model directory: {exc}") from None
    return BackboneIdentity(
        name=directory.resolve().name,
        config_sha256=config_hash(config),
        hidden_size=hidden_size_of(config),
        weights_sha256=weights_fingerprint(directory),
    )


def mismatch(recorded: BackboneIdentity, served: BackboneIdentity) -> str | None:
    """Why a head trained on ``recorded`` cannot read ``served``'s states; None if it can."""
    if recorded.hidden_size != served.hidden_size:
        return f"hidden size {recorded.hidden_size}, the model's is {served.hidden_size}"
    if recorded.config_sha256 != served.config_sha256:
        return "another architecture (config.json differs)"
    if (
        recorded.weights_sha256 is not None
        and served.weights_sha256 is not None
        and recorded.weights_sha256 != served.weights_sha256
    ):
        return "other weights (same architecture: a fine-tune, a base or instruct sibling?)"
    return None
