"""Where a reward applies: a distance from the prompt states it was trained on.

A probe trained on one family of questions can be blind on another (within-question AUC at chance
one step away from its training questions), and nothing in its scores says so. Its directory may
therefore hold a *domain head* in ``domain/``: statistics of the policy's final hidden state at
the last prompt token of its training questions, and a distance threshold calibrated on held-out
questions of the same family. A request whose prompt state lies further than the threshold is out
of the reward's domain, and a selection that trusts the reward can fall back to the vote.

The distance is the mean absolute value of the whitened state,
``mean_i |((h - mu) W)_i|`` with ``W = Sigma^-1/2`` (Sigma the training states' covariance,
shrunk towards a multiple of the identity, Ledoit-Wolf), an L1 Mahalanobis distance (about 0.8
for a state drawn from the training distribution). It is chosen over the L2 one because it is a
ReLU head: ``|z| = relu(z) + relu(-z)``, so the domain head is stored as a probe MLP
(``w1 = [W, -W]``, ``b1 = [-mu W, mu W]``, ``w2 = 1 / H``), and the engine's reward tap computes
it on the states it already has (its score at the prompt's last token, ``tap[domain][0]``)
exactly as the reward's own backbone does when it re-encodes the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from winnow.heads.probe import PROBE_META, head_scorer, load_head, save_head
from winnow.kernels.heads import RewardHead

DOMAIN_DIR = "domain"
"""The domain head's directory inside a probe directory."""


class DomainMeta(BaseModel):
    """The domain head's ``probe.json`` (read by the engine's tap as any probe's: a raw output
    read at the last prompt token's final state)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "domain"
    layer: int = -1
    output: str = "raw"
    position: str = "prompt"
    threshold: float = Field(description="Largest distance still in the domain.")
    quantile: float = Field(gt=0, le=1, description="Of the held-out distances, the threshold.")
    calibrated_on: str = Field(description="'held-out' questions, or 'train' when none were.")
    train_prompts: int
    held_prompts: int
    shrinkage: float = Field(description="Weight of the identity in the covariance.")
    distances: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Quantiles of the distances, 'train' and 'held-out'."
    )
    description: str = ""


class DomainVerdict(BaseModel):
    """A prompt's distance from a reward's training prompts, and whether it is in its domain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distance: float
    threshold: float
    in_domain: bool


class DomainHead:
    """A loaded domain head: distances of states, and verdicts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        head, meta = load_head(directory)
        self.head: RewardHead = head
        self.meta = DomainMeta.model_validate(meta)
        self._scorer = head_scorer(head, sigmoid=False)

    @property
    def tap_head(self) -> str:
        """How the engine's tap names this head (its resolved directory)."""
        return str(self.directory.resolve())

    def scorer(self, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The distances of ``hidden``'s ``rows``, in float32 whatever the states' dtype (the
        whitening amplifies small directions: bfloat16 would move the calibrated distances)."""
        return self._scorer(hidden.float(), rows)

    def distances(self, states: torch.Tensor) -> list[float]:
        """The distance of every row of ``states`` ``[N, H]`` (final hidden states)."""
        rows = torch.arange(states.shape[0], device=states.device)
        return self.scorer(states, rows).reshape(-1).float().tolist()

    def verdict(self, distance: float) -> DomainVerdict:
        threshold = self.meta.threshold
        return DomainVerdict(
            distance=distance, threshold=threshold, in_domain=bool(distance <= threshold)
        )


def load_domain(probe_directory: Path) -> DomainHead | None:
    """The domain head of a probe directory; None when it has none."""
    directory = probe_directory / DOMAIN_DIR
    if not (directory / PROBE_META).exists():
        return None
    return DomainHead(directory)


def domain_tensors(mean: torch.Tensor, whitening: torch.Tensor) -> dict[str, torch.Tensor]:
    """The MLP tensors whose output is ``mean_i |((h - mean) @ whitening)_i|``."""
    width = whitening.shape[1]
    shift = mean @ whitening
    return {
        "w1": torch.cat([whitening, -whitening], 1).float().contiguous(),
        "b1": torch.cat([-shift, shift]).float().contiguous(),
        "w2": torch.full((2 * width,), 1.0 / width),
        "b2": torch.zeros(1),
    }


def save_domain(
    probe_directory: Path, mean: torch.Tensor, whitening: torch.Tensor, meta: DomainMeta
) -> Path:
    directory = probe_directory / DOMAIN_DIR
    save_head(directory, domain_tensors(mean, whitening), meta.model_dump())
    return directory


def read_domain_meta(probe_directory: Path) -> DomainMeta | None:
    path = probe_directory / DOMAIN_DIR / PROBE_META
    return DomainMeta.model_validate(json.loads(path.read_text())) if path.exists() else None
