"""The engine side of a search round: the children every planned parent samples, and (early
rejection) the rest of the step each kept partial child writes.

Beams are token ids, so every call is a continuation that hits vLLM's prefix cache; all calls of
a round go to the engine together (:func:`~winnow.strategies.parts.steps.generate_all`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from winnow.engine.base import Completion, SamplingSpec
from winnow.metering.engine import MeteredEngine
from winnow.strategies.base import GenerationRequest
from winnow.strategies.parts.steps import (
    Beam,
    generate_all,
    has_final_answer,
    step_text,
    straddling,
    tokens_covering,
)
from winnow.strategies.parts.tree.nodes import Nodes
from winnow.strategies.parts.tree.params import TreeSearchParams


@dataclass
class Expander:
    """Writes the steps of one request's search, and counts them."""

    request: GenerationRequest
    engine: MeteredEngine
    params: TreeSearchParams
    nodes: Nodes
    tap: tuple[str, ...] = ()  # probe heads the engine scores as it writes (the reward tap)
    expansions: int = 0  # children sampled
    continuations: int = 0  # early rejection: survivors that finished their step
    _calls: int = 0

    def _seed(self) -> int | None:
        """Each engine call its own seed (equal seeds would give equal DVTS subtrees)."""
        self._calls += 1
        if self.request.spec.seed is None:
            return None
        return (self.request.spec.seed + 7919 * self._calls) % 2**31

    def _spec(self, beam: Beam, n: int, max_tokens: int, last: bool) -> SamplingSpec:
        prompt = self.request.spec.prompt
        assert isinstance(prompt, tuple)
        stop = self.request.spec.stop if last else (self.params.delimiter, *self.request.spec.stop)
        return self.request.spec.replace(
            prompt=(*prompt, *beam.ids),
            n=n,
            max_tokens=max_tokens,
            temperature=self.params.effective_temperature(self.request),
            stop=stop,
            include_stop_str_in_output=True,
            seed=self._seed(),
            tap=self.tap,
        )

    def _remaining(self, beam: Beam) -> int:
        return self.request.spec.max_tokens - len(beam.ids)

    def _settle(self, beam: Beam, completion: Completion, capped_partial: bool) -> None:
        """Decide whether ``beam`` (just extended by ``completion``) finished, is partial, or
        goes on with a new step."""
        beam.partial = False
        reason = completion.finish_reason
        if self._remaining(beam) <= 0:
            beam.finish_reason = "length"
        elif reason == "stop" and completion.stop_reason != self.params.delimiter:
            beam.finish_reason = "stop"  # EOS, or a stop string / token of the request
        elif reason == "abort":
            beam.finish_reason = "abort"
        elif reason == "length" and capped_partial:
            beam.partial = True  # early rejection: the step is not written to its end yet
        elif self.params.stop_at_answer and beam.steps and has_final_answer(beam.steps[-1]):
            beam.finish_reason = "stop"
        beam.scored = False

    async def expand(self, plan: Sequence[tuple[Beam, int]], last: bool, round_: int) -> list[Beam]:
        """Sample children of every planned parent at once; each writes one step (or its first
        ``partial_tokens`` tokens)."""
        specs, caps = [], []
        part = self.params.partial_tokens
        for parent, count in plan:
            remaining = self._remaining(parent)
            cap = remaining if last else min(self.params.step_tokens, remaining)
            partial = part is not None and part < cap
            specs.append(self._spec(parent, count, part if partial and part else cap, last))
            caps.append(partial)
        generations = await generate_all(self.engine, specs)
        children = []
        for (parent, _), partial, generation in zip(plan, caps, generations, strict=True):
            for completion in generation.completions:
                text = await step_text(
                    self.engine, completion, self.params.delimiter, self.request.spec.stop
                )
                child = parent.extend(completion, text, new_step=True)
                self._settle(child, completion, partial)
                self.nodes.record(parent, child, len(completion.token_ids), round_)
                children.append(child)
        self.expansions += len(children)
        return children

    async def finish_steps(self, beams: Sequence[Beam], last: bool) -> list[Beam]:
        """Early rejection: the survivors write the rest of their step."""
        specs = []
        for beam in beams:
            remaining = self._remaining(beam)
            cap = remaining if last else min(self.params.step_tokens - beam.step_ids, remaining)
            specs.append(self._spec(beam, 1, max(cap, 1), last))
        generations = await generate_all(self.engine, specs)
        out = []
        for beam, generation in zip(beams, generations, strict=True):
            (completion,) = generation.completions
            text = await step_text(
                self.engine, completion, self.params.delimiter, self.request.spec.stop
            )
            done = beam.extend(completion, text, new_step=False)
            completion = await self._cut_straddling(beam, done, completion)
            self._settle(done, completion, capped_partial=False)
            self.nodes.continued(beam, done)
            out.append(done)
        self.continuations += len(out)
        return out

    async def _cut_straddling(self, before: Beam, done: Beam, completion: Completion) -> Completion:
        """A step end (or a stop string of the request) that began in the partial step and
        ends in its continuation got past the engine, which saw only the continuation: end the
        step there, as if the engine had stopped it."""
        start = len(before.steps[-1]) if before.steps else 0
        step = done.steps[-1] if done.steps else ""
        hit = straddling(step, (self.params.delimiter, *self.request.spec.stop), start)
        if hit is None:
            return completion
        at, mark = hit
        keep = mark == self.params.delimiter  # a step keeps its end; a request stop is dropped
        step_ids = done.ids[len(done.ids) - done.step_ids :]
        kept = await tokens_covering(self.engine, step_ids, at + len(mark) * keep)
        cut = len(step_ids) - len(kept)
        if cut:
            done.ids = done.ids[:-cut]
            done.logprobs = done.logprobs[: len(done.ids)] if done.logprobs else done.logprobs
        done.step_ids = len(kept)
        # a kept step end says what its ids say (a token may reach past it), as step_text does
        decoded = await self.engine.detokenize(kept) if keep else ""
        done.steps[-1] = (
            decoded if keep and step.startswith(decoded) else step[: at + len(mark) * keep]
        )
        return Completion(completion.index, "", [], "stop", mark)
