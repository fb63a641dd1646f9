"""Fitting a reward's domain (:mod:`winnow.heads.domain`): the statistics of its training
questions' prompt states, and the distance threshold calibrated on held-out questions."""

from __future__ import annotations

from pathlib import Path

import torch

from winnow.heads.domain import DomainHead, DomainMeta, save_domain

QUANTILES = (0.5, 0.9, 0.95, 0.99, 1.0)


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mean, covariance shrunk towards ``m I``, shrinkage) of the rows of ``x`` [n, p]: the
    Ledoit-Wolf estimate, well conditioned with fewer rows than columns."""
    x = x.double()
    n, p = x.shape
    mean = x.mean(0)
    xc = x - mean
    s = xc.T @ xc / n
    m = float(torch.trace(s)) / p
    target = m * torch.eye(p, dtype=s.dtype)
    d2 = float(((s - target) ** 2).sum())
    norms = (xc * xc).sum(1)
    b2_sum = float((norms**2).sum() - 2 * ((xc @ s) * xc).sum() + n * (s * s).sum())
    b2 = min(b2_sum / n**2, d2)
    shrink = b2 / d2 if d2 > 0 else 1.0
    return mean, shrink * target + (1 - shrink) * s, shrink


def whitening(covariance: torch.Tensor) -> torch.Tensor:
    """``covariance^-1/2`` (symmetric), eigenvalues floored for safety."""
    values, vectors = torch.linalg.eigh(covariance)
    floor = max(float(values.max()) * 1e-9, 1e-12)
    return (vectors * values.clamp_min(floor).rsqrt()) @ vectors.T


def fit_domain(
    out_dir: Path,
    train_states: torch.Tensor,
    held_states: torch.Tensor | None,
    *,
    quantile: float = 0.95,
) -> DomainHead:
    """Fit and save the domain head of the probe in ``out_dir``: statistics of ``train_states``
    (one prompt state per training question, [Q, H]), the threshold the ``quantile`` of the
    held-out questions' distances (of the training ones' when there are no held-out ones: an
    optimistic threshold, marked ``calibrated_on: train``)."""
    if train_states.shape[0] < 2:
        raise ValueError("a domain needs the prompt states of at least two training questions")
    mean, covariance, shrink = ledoit_wolf(train_states)
    w = whitening(covariance)
    train_d = _distance(train_states, mean, w)
    held = held_states is not None and held_states.shape[0] > 0
    calibration = _distance(held_states, mean, w) if held else train_d  # type: ignore[arg-type]
    stats = {"train": _quantiles(train_d)}
    if held:
        stats["held-out"] = _quantiles(calibration)
    meta = DomainMeta(
        threshold=float(torch.quantile(calibration, quantile)),
        quantile=quantile,
        calibrated_on="held-out" if held else "train",
        train_prompts=int(train_states.shape[0]),
        held_prompts=int(held_states.shape[0]) if held else 0,  # type: ignore[union-attr]
        shrinkage=round(shrink, 6),
        distances=stats,
        description="Mean absolute whitened distance of the prompt's last-token final hidden "
        "state from the training questions' (Ledoit-Wolf covariance); in the domain up to "
        f"the {quantile:g} quantile of the held-out questions' distances.",
    )
    return DomainHead(save_domain(out_dir, mean.float(), w.float(), meta))


def _distance(states: torch.Tensor, mean: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """What the domain head computes, in double precision."""
    return ((states.double() - mean) @ w).abs().mean(1)


def _quantiles(d: torch.Tensor) -> dict[str, float]:
    return {f"q{q:g}": round(float(torch.quantile(d, q)), 4) for q in QUANTILES}
