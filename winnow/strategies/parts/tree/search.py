"""One request's search: the rounds, each one reward call over every new prefix, and the beams
that go on (top N/M in beam mode, each subtree's best in DVTS) or leave finished."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from winnow.metering.engine import MeteredEngine
from winnow.protocol.trace import Trace
from winnow.strategies.base import GenerationRequest, Rewards
from winnow.strategies.parts.selection import Reading, as_is
from winnow.strategies.parts.steps import Beam, score_beams
from winnow.strategies.parts.tree.expand import Expander
from winnow.strategies.parts.tree.nodes import Nodes
from winnow.strategies.parts.tree.params import TreeSearchParams


@dataclass
class Search:
    """One request's search state and its figures."""

    request: GenerationRequest
    engine: MeteredEngine
    rewards: Rewards
    params: TreeSearchParams
    kind: str
    reading: Reading = as_is  # the reward's scores as probabilities (prod, weighted vote)
    tap: tuple[str, ...] = ()  # probe heads the engine scores while it writes the steps
    finished: list[Beam] = field(default_factory=list)
    pending: list[Beam] = field(default_factory=list)  # finished, not yet scored as they are
    rounds: int = 0
    pruned: int = 0  # children dropped (not finished, not kept)
    survivors: list[int] = field(default_factory=list)
    reward_calls: int = 0
    nodes: Nodes = field(init=False)  # every expansion, when the client asks for a trace
    expander: Expander = field(init=False)  # the engine calls, and their counts

    def __post_init__(self) -> None:
        self.nodes = Nodes(Trace(strategy="tree_search") if self.params.trace else None)
        self.expander = Expander(self.request, self.engine, self.params, self.nodes, self.tap)

    @property
    def early_rejection(self) -> bool:
        return self.params.partial_tokens is not None

    async def _score(self, beams: Sequence[Beam]) -> None:
        beams = [*beams, *self.pending]
        self.pending = []
        if beams:
            await score_beams(
                beams,
                self.request.prompt_text,
                self.rewards,
                self.params.reward,
                self.kind,
                self.params.reference,
                self.prompt_ids,
            )
            self.reward_calls += 1

    @property
    def prompt_ids(self) -> tuple[int, ...]:
        prompt = self.request.spec.prompt
        return prompt if isinstance(prompt, tuple) else ()

    def _rank(self, beams: Sequence[Beam]) -> list[Beam]:
        agg = self.params.aggregation
        order = {id(b): i for i, b in enumerate(beams)}

        def key(b: Beam) -> tuple[float, int]:
            score = b.score(agg, self.reading)
            return (-(score if score is not None else -math.inf), order[id(b)])

        return sorted(beams, key=key)

    def _keep(self, children: Sequence[Beam]) -> list[Beam]:
        """The children that go on: top N/M (beam) or each subtree's best (DVTS)."""
        alive = [c for c in children if not c.finished]
        if self.params.mode == "beam":
            kept = self._rank(alive)[: self.params.kept]
        else:
            kept = []
            for subtree in sorted({c.subtree for c in children}):
                best = self._rank([c for c in children if c.subtree == subtree])[0]
                if not best.finished:
                    kept.append(best)
        self.pruned += len(alive) - len(kept)
        return kept

    def _plan(self, parents: Sequence[Beam]) -> list[tuple[Beam, int]]:
        n, width = self.params.n, self.params.beam_width
        if self.params.mode == "dvts":
            return [(p, width) for p in parents]
        share, extra = divmod(n, len(parents))  # refill to N children, as search-and-learn
        return [(p, share + (i < extra)) for i, p in enumerate(parents)]

    def _leave(self, beams: Sequence[Beam]) -> None:
        for beam in beams:
            if beam.finished:
                self.finished.append(beam)
                if not beam.scored:
                    self.pending.append(beam)

    async def run(self) -> None:
        params = self.params
        if params.mode == "beam":
            parents = [Beam()]
        else:
            parents = [Beam(subtree=i) for i in range(params.kept)]
        for depth in range(params.max_depth):
            last = depth == params.max_depth - 1
            self.rounds += 1
            children = await self.expander.expand(self._plan(parents), last, self.rounds - 1)
            await self._score(children)
            self._leave(children)
            kept = self._keep(children)
            self.nodes.mark(children, kept, params.aggregation, self.reading)
            partial = [b for b in kept if b.partial]
            if partial:
                done = await self.expander.finish_steps(partial, last)
                kept = [b for b in kept if not b.partial] + done
                self._leave(done)
            parents = [b for b in kept if not b.finished]
            self.survivors.append(len(parents))
            if not parents or (params.mode == "beam" and len(self.finished) >= params.n):
                break
        await self._score([])  # beams that finished after their last score
