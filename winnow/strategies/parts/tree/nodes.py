"""The trace of one search (when the client asks for it): a node per child written, its score
and its fate (kept, pruned, finished).

A beam knows only its node's id (``Beam.node``); the nodes live here, so an untraced search, or
a node left out of a full trace, costs a beam nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from winnow.protocol.trace import Trace, TraceNode, finite
from winnow.strategies.parts.selection import Aggregation, Reading
from winnow.strategies.parts.steps import Beam


@dataclass
class Nodes:
    """Every expansion of one search as a trace node; inert when ``trace`` is None."""

    trace: Trace | None = None
    _nodes: dict[int, TraceNode] = field(default_factory=dict)

    def record(self, parent: Beam, child: Beam, tokens: int, round_: int) -> None:
        """A new node in the trace for ``child``, a child of ``parent``."""
        if self.trace is None:
            return
        step = child.steps[-1] if child.steps else ""
        node = TraceNode(
            id=len(self._nodes) + self.trace.dropped,
            parent=parent.node,
            round=round_,
            subtree=child.subtree,
            text=self.trace.text(step),
            chars=len(step),
            tokens=tokens,
            partial=child.partial,
            status="pruned",
        )
        child.node = node.id
        if self.trace.add(self.trace.nodes, node):
            self._nodes[node.id] = node

    def node(self, beam: Beam) -> TraceNode | None:
        """The trace's node of ``beam``'s last step (None untraced, or left out: list full)."""
        return None if beam.node is None else self._nodes.get(beam.node)

    def mark(
        self,
        children: Sequence[Beam],
        kept: Sequence[Beam],
        aggregation: Aggregation,
        reading: Reading,
    ) -> None:
        """Each child's fate this round, with the score it was judged by."""
        going_on = {id(b) for b in kept}
        for child in children:
            node = self.node(child)
            if node is None:
                continue
            node.score = finite(child.score(aggregation, reading))
            node.status = (
                "finished" if child.finished else "kept" if id(child) in going_on else "pruned"
            )

    def continued(self, before: Beam, done: Beam) -> None:
        """Early rejection: a kept child wrote the rest of its step; its node shows all of it."""
        done.node = before.node
        node = self.node(done)
        if node is None or self.trace is None:
            return
        step = done.steps[-1] if done.steps else ""
        node.text, node.chars, node.tokens = self.trace.text(step), len(step), done.step_ids
        if done.finished:
            node.status = "finished"
