"""A scripted process reward and fake-engine scripts for tree_search (from
tests/unit/test_tree_search.py, also used by the trace and playground tests): every step written
by the fake carries a tag "vNN" and :class:`StepTags` scores that step NN/100, so which beams
survive is known in advance. BEAM and LONG are step tables by depth (LONG's steps are long enough
for early rejection to cut them)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from winnow.engine.base import SamplingSpec
from winnow.rewards.base import OutcomeItem, ProcessItem, Reward, RewardInfo, Scored, StepScored

TAG = re.compile(r"v(\d\d)")


class StepTags(Reward):
    """Scores each step by its "vNN" tag (NN/100; 0 without a tag); records every call."""

    def __init__(self, name: str = "prm", kind: str = "process") -> None:
        scale = "probability in [0, 1]: the vNN tag"
        self._info = RewardInfo(name, kind, "test", scale)  # type: ignore[arg-type]
        self.calls: list[list[ProcessItem]] = []
        self.outcome_calls: list[list[OutcomeItem]] = []

    @property
    def info(self) -> RewardInfo:
        return self._info

    @staticmethod
    def tag(text: str) -> float:
        found = TAG.findall(text)
        return int(found[-1]) / 100 if found else 0.0

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        self.calls.append(list(items))
        return StepScored([[self.tag(s) for s in i.steps] for i in items], tokens=len(items))

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        if self.info.kind == "process":
            return await super().score(items)
        self.outcome_calls.append(list(items))
        return Scored([self.tag(i.response) for i in items], tokens=len(items))


def generated(prompt: str) -> str:
    return prompt.split("<assistant>", 1)[1]


def depth_of(prompt: str) -> int:
    return generated(prompt).count("\n\n")


def scripted(table: dict[int, Sequence[str]], counter: bool = False):
    """Depth d -> texts of the children (by completion index, or by a running count)."""
    seen: dict[int, int] = {}

    def script(prompt: str, index: int, spec: SamplingSpec) -> str:
        d = depth_of(prompt)
        if counter:
            k = seen.get(d, 0)
            seen[d] = k + 1
            return table[d][k % len(table[d])]
        return table[d][index % len(table[d])]

    return script


def continuing(table: dict[int, Sequence[str]]):
    """Like :func:`scripted`, but a prompt that ends inside a step (early rejection) gets the
    rest of the table's step that starts that way."""
    steps = [t for texts in table.values() for t in texts]
    base = scripted(table)

    def script(prompt: str, index: int, spec: SamplingSpec) -> str:
        tail = generated(prompt).rsplit("\n\n", 1)[-1]
        if tail:
            return next(t[len(tail) :] for t in steps if t.startswith(tail))
        return base(prompt, index, spec)

    return script


BEAM = {
    0: ["a v90\n\n", "b v10\n\n", "c v50\n\n", "d v70\n\n"],
    1: ["e v60\n\n", "f v80\n\n"],
    2: ["The answer is 4. v55", "The answer is 5. v95"],
}


LONG = {
    0: ["p v20 first step\n\n", "q v90 second one\n\n", "r v70 third st\n\n", "s v10 fourth\n\n"],
    1: ["The answer is 3. v50", "The answer is 8. v60"],
}
