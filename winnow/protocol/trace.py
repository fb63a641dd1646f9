"""The trace of a search: what a strategy drew, how the reward scored it, what it kept.

Opt-in per request (strategy parameter ``trace: true``) and bounded: at most
:data:`MAX_ENTRIES` entries per list and :data:`MAX_TEXT_CHARS` characters per text (a longer
text keeps its head and its tail, where the final answer is, around a marker); the trace says
its limits and how much it left out. One shape for every strategy; each fills the lists that
describe it:

* selection strategies (``best_of_n``, ``best_of_majority``, ``adaptive``): ``candidates``,
  ``groups`` (equal final answers, with their vote) and, for ``adaptive``, ``waves``;
* ``cards``: ``segments``, every candidate segment with its score, the threshold tau at that
  point and whether it was accepted, rejected, or forced in after ``max_rejections``;
* ``tree_search``: ``nodes``, every expansion with its round, parent, score and fate (kept,
  pruned, finished; with early rejection ``partial`` marks a score of a partial step), and the
  finished beams as ``candidates`` (each names its ``node``).

``winner`` lists the returned choices: candidate indices (selection, tree search) or chain
indices (cards).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

MAX_ENTRIES = 512
"""The most entries a trace keeps per list (candidates, groups, segments, nodes, waves)."""
MAX_TEXT_CHARS = 400
"""The most characters a trace keeps of one text."""
CUT_MARK = " […] "

TRACE_DESCRIPTION = (
    "Add a bounded trace of the search to the response's winnow.trace (candidates, scores, "
    f"groups, segments or tree nodes; at most {MAX_ENTRIES} entries per list and "
    f"{MAX_TEXT_CHARS} characters per text)."
)


def clip_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text``, or its head and tail around :data:`CUT_MARK` when longer than ``limit``."""
    if len(text) <= limit:
        return text
    room = max(limit - len(CUT_MARK), 2)
    head = (room * 3) // 5
    return text[:head] + CUT_MARK + text[len(text) - (room - head) :]


def finite(x: float | None) -> float | None:
    """A score as JSON can carry it: NaN (unscored) and infinities become None."""
    if x is None or math.isnan(x) or math.isinf(x):
        return None
    return float(x)


class TraceLimits(BaseModel):
    max_entries: int = Field(MAX_ENTRIES, description="Entries kept per list at most.")
    max_text_chars: int = Field(
        MAX_TEXT_CHARS,
        description="Characters kept per text at most; a longer text keeps its head and tail "
        f"around {CUT_MARK.strip()!r}, and its entry's `chars` says its full length.",
    )


MAX_CURVE = 4096
"""Token confidences kept per candidate in a trace at most."""


class CandidateConfidence(BaseModel):
    """A candidate's token confidence, as the engine recorded it (strategy ``confidence``)."""

    window: int = Field(description="Tokens per group of the group confidence.")
    lowest_group: float | None = None
    bottom_10: float | None = None
    tail: float | None = None
    mean: float | None = None
    weight: float | None = Field(None, description="Its weight in the vote; null: no vote.")
    cut: int | None = Field(
        None, description="The token where the engine ended it for low confidence; null: not."
    )
    threshold: float | None = Field(None, description="The threshold it was sampled under.")
    curve: list[float | None] = Field(
        default_factory=list,
        description="Token confidence at each position (the first MAX_CURVE); the playground "
        "draws its sliding-window mean.",
    )


class TraceCandidate(BaseModel):
    """A sampled answer (selection) or a finished beam (tree search)."""

    index: int
    text: str
    chars: int = Field(description="Length of the full text.")
    tokens: int
    finish_reason: str | None = None
    score: float | None = Field(None, description="On the reward's scale; null: unscored.")
    answer: str | None = Field(None, description="Its final answer; null: none parsed.")
    group: int | None = Field(None, description="Its answer group (equal answers share one).")
    chosen: bool = False
    wave: int | None = Field(None, description="adaptive: the wave that drew it (from 0).")
    node: int | None = Field(None, description="tree_search: the node of its last step.")
    confidence: CandidateConfidence | None = None


class TraceGroup(BaseModel):
    """Candidates with equal final answers."""

    id: int
    answer: str | None
    members: list[int] = Field(description="Candidate indices.")
    count: int
    vote: float | None = Field(
        None, description="Members' scores read as probabilities, summed (weighted vote)."
    )
    mean: float | None = Field(None, description="vote / count (best_of_majority's rank).")
    passed: bool | None = Field(
        None, description="best_of_majority: the group passed the frequency filter."
    )
    winner: bool = False


class TraceWave(BaseModel):
    """adaptive: one wave of samples and the stopping rule's verdict after it."""

    index: int
    size: int
    drawn: int = Field(description="Answers drawn so far, this wave included.")
    leader: int | None = Field(None, description="The leading answer group.")
    confidence: float | None = None
    share: float | None = None
    stop: bool = Field(description="Sampling ended after this wave.")
    reason: str | None = Field(
        None, description="Why: confident, wave_agreed, accepted (the rule), max_n, budget."
    )


class TraceSegment(BaseModel):
    """cards: one candidate segment and the decision on it."""

    chain: int = Field(description="Which of the n answers it would extend.")
    position: int = Field(description="Which segment of that answer it proposes (from 0).")
    attempt: int = Field(description="Its attempt at that position (from 0).")
    start: int = Field(description="Tokens of the answer before it.")
    tokens: int = Field(description="Tokens it adds to the answer.")
    generated: int = Field(description="Tokens the engine generated for it (with any sentinel).")
    text: str
    chars: int
    score: float | None = Field(None, description="On the scale tau is on (log-odds, or raw).")
    tau: float = Field(description="The threshold at start + tokens.")
    outcome: Literal["accepted", "rejected", "forced"] = Field(
        description="accepted; rejected; forced: rejected, then taken as the best candidate "
        "after max_rejections rejections in a row."
    )


class TraceNode(BaseModel):
    """tree_search: one expansion (a child writing one step)."""

    id: int
    parent: int | None = Field(None, description="null: a child of the prompt.")
    round: int
    subtree: int = Field(0, description="DVTS: its independent subtree.")
    text: str = Field(description="The step it wrote.")
    chars: int
    tokens: int
    score: float | None = Field(None, description="Its beam's score when kept or pruned.")
    partial: bool = Field(
        False, description="Early rejection: that score was of its first partial_tokens only."
    )
    status: Literal["kept", "pruned", "finished"]
    final: bool = Field(False, description="One of the finished beams (a candidate).")
    chosen: bool = False


class Trace(BaseModel):
    """What a search did, for one prompt."""

    strategy: str
    prompt: int = Field(0, description="Which prompt of the request (completions).")
    selection: str | None = None
    candidates: list[TraceCandidate] = Field(default_factory=list)
    groups: list[TraceGroup] = Field(default_factory=list)
    waves: list[TraceWave] = Field(default_factory=list)
    segments: list[TraceSegment] = Field(default_factory=list)
    nodes: list[TraceNode] = Field(default_factory=list)
    winner: list[int] = Field(
        default_factory=list,
        description="The returned choices: candidate indices (chains for cards), in order.",
    )
    threshold: float | None = Field(
        None, description="deepconf / adaptive rule confidence: the warm-up threshold."
    )
    r0: float | None = Field(None, description="cards: tau's start.")
    r_star: float | None = Field(None, description="cards: tau's end.")
    limits: TraceLimits = Field(default_factory=TraceLimits)
    dropped: int = Field(0, description="Entries left out because a list was full.")
    clipped: int = Field(0, description="Texts cut to max_text_chars.")

    def add(self, entries: list, entry: BaseModel) -> bool:  # type: ignore[type-arg]
        """Append ``entry`` to one of this trace's lists unless that list is full."""
        if len(entries) >= self.limits.max_entries:
            self.dropped += 1
            return False
        entries.append(entry)
        return True

    def text(self, text: str) -> str:
        clipped = clip_text(text, self.limits.max_text_chars)
        if clipped is not text:
            self.clipped += 1
        return clipped
