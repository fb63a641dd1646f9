"""One sample as its engine stream writes it (``n`` 1): the text, the tokens, the tap's scores
and the confidence records as they come, and how it finished. The strategies that run each
sample as its own stream (``speculative_rejection``, ``adaptive``'s ``race``) read their
deltas into it."""

from __future__ import annotations

from dataclasses import dataclass, field

from winnow.engine.base import Completion, CompletionDelta, TapScores
from winnow.engine.confidence import ConfidenceRecords
from winnow.rewards.base import Tapped


@dataclass(slots=True)
class Written:
    index: int
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    tap: dict[str, list[float | None]] = field(default_factory=dict)
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    unseen_tokens: int = 0  # generated, not in token_ids (a cut's sentinel)
    confidence: ConfidenceRecords | None = None  # on the last delta of a confidence stream

    def add(self, delta: CompletionDelta) -> None:
        self.text.append(delta.text)
        self.token_ids.extend(delta.token_ids)
        self.unseen_tokens += delta.unseen_tokens
        for head, scores in (delta.tap or {}).items():
            self.tap.setdefault(head, []).extend(scores)
        if delta.finish_reason is not None:
            self.finish_reason, self.stop_reason = delta.finish_reason, delta.stop_reason
        if delta.confidence is not None:
            self.confidence = delta.confidence

    def tapped(self, prompt_ids: tuple[int, ...], tokens: int | None = None) -> Tapped | None:
        """What the engine scored of its first ``tokens`` tokens (all by default)."""
        if not self.tap:
            return None
        cut = len(self.token_ids) if tokens is None else tokens
        return Tapped(
            prompt_ids, tuple(self.token_ids[:cut]), {h: s[: cut + 1] for h, s in self.tap.items()}
        )

    def completion(self) -> Completion:
        """What it wrote, as one engine call's completion (its tap one score per state: the
        prompt's last token's, then each token's, None where the engine wrote none)."""
        tap: TapScores | None = None
        if self.tap:
            width = len(self.token_ids) + 1
            tap = {h: (s + [None] * width)[:width] for h, s in self.tap.items()}
        return Completion(
            self.index,
            "".join(self.text),
            list(self.token_ids),
            self.finish_reason,  # type: ignore[arg-type]
            self.stop_reason,
            unseen_tokens=self.unseen_tokens,
            tap=tap,
            confidence=self.confidence,
        )
