"""Tree search over steps with a process reward: beam search, DVTS, early rejection.

As in HF search-and-learn (beam search and DVTS) and "PRMs as partial reward models" (early
rejection). A step is the text up to the delimiter ("\\n\\n", kept in the text); the round at
``max_depth`` runs to the end.

* ``beam``: round 0 samples N first steps (one engine call, n=N). Every round, all prefixes are
  scored in ONE reward call; finished beams leave the search; the top N/M of the others survive
  and are expanded back to N children (M each; more each when fewer than N/M are left, as
  search-and-learn refills its N beams). The search ends when N beams have finished, none is
  left, or at ``max_depth``.
* ``dvts``: N/M independent subtrees; each round every subtree samples M next steps and keeps its
  best; a subtree ends when its best child is finished (EOS, length, or a final answer).
* ``partial_tokens`` (early rejection): each child first writes only ``partial_tokens`` tokens of
  its step; these are scored as PARTIAL steps; the top 1/M (N/M in beam mode, one per subtree in
  DVTS) survive and finish their step; the rest are dropped. A child's partial generation is an
  engine call of its own that has already ended when it is scored, so a rejected child holds no
  engine request (its KV blocks are free, or kept only as prefix cache) and costs no more tokens.

Our choices where the papers leave room:

* Beams are token ids (prompt ids + generated ids): every expansion is a continuation that hits
  vLLM's prefix cache. All expansions of a round go to the engine together (one call per parent,
  n = its children), in a TaskGroup: a cancelled request cancels (aborts) every call in flight.
* Every finished child becomes a candidate, in both modes (search-and-learn's DVTS keeps only the
  last round's children; a complete, scored answer is too good to drop).
* ``stop_at_answer``: a step that states its final answer ("The answer is ...", ``\\boxed{}``,
  ``####``) finishes its beam, in both modes (DVTS's rule, applied to beam search too).
* A step cut at ``step_tokens`` ends there and the beam goes on with a new step; a beam ends at
  the request's ``max_tokens`` in total.
* Outcome rewards are accepted too: each prefix is scored as a response of its own (the text so
  far), as CARDS scores its prefixes; the aggregation runs over those prefix scores. Finished
  beams whose last step was scored as partial are re-scored complete in the next reward call.
* ``prod`` multiplies the steps' probabilities and ``weighted_vote`` sums probabilities (a
  logit-scale reward through a sigmoid: :func:`~winnow.strategies.selection.probability_reading`);
  a beam with an unscored (NaN) step it aggregates ranks last.
* ``final_reward``: the process reward prunes, and an outcome reward (``default``, trained on
  whole answers, ranks them better than a PRM's last step does) re-scores the finished beams for
  the final pick; its scores replace the aggregated step scores in the pick and the candidates
  (measured: `benchmarks/results/compare_strategies.md`).
* The client's ``n`` choices come back. Plain beam search always finishes at least N beams;
  DVTS and early rejection at least N/M, so ``n`` may not exceed that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from winnow.answer_groups import answers_and_groups_async
from winnow.engine.base import Completion, SamplingSpec
from winnow.protocol.trace import TRACE_DESCRIPTION, Trace, TraceNode, finite
from winnow.rewards.base import OutcomeItem
from winnow.strategies.base import (
    GenerationRequest,
    MeteredEngine,
    Rewards,
    StrategyParams,
    StrategyResult,
)
from winnow.strategies.registry import StrategyError, register
from winnow.strategies.selection import (
    Aggregation,
    Candidate,
    Reading,
    aggregated_reading,
    as_choices,
    as_is,
    candidate_report,
    pick_by_groups,
    probability_reading,
    rank_best,
    selection_trace,
)
from winnow.strategies.steps import (
    Beam,
    generate_all,
    has_final_answer,
    score_beams,
    step_text,
    straddling,
    tokens_covering,
)


class TreeSearchParams(StrategyParams):
    n: int = Field(4, ge=1, le=1024, description="Beams (N): children sampled per round.")
    beam_width: int = Field(4, ge=1, le=1024, description="M: children per kept beam.")
    mode: Literal["beam", "dvts"] = Field("beam", description="Beam search or DVTS.")
    max_depth: int = Field(40, ge=1, le=1000, description="Rounds; the last runs to the end.")
    step_tokens: int = Field(256, ge=1, description="At most this many tokens per step.")
    delimiter: str = Field("\n\n", min_length=1, description="Ends a step (kept in the text).")
    aggregation: Aggregation = Field(
        "last",
        description="Step scores -> a beam's score: the last, the lowest, or the product of the "
        "steps' probabilities (prod; a logit-scale reward through a sigmoid).",
    )
    selection: Literal["best", "weighted_vote"] = Field(
        "best",
        description="Final pick among finished beams: best score, or weighted vote (beams' "
        "scores read as probabilities, summed per final answer).",
    )
    reward: str | dict[str, float] = Field(
        "default_prm",
        description="A process reward (or an outcome reward, scored on prefixes); name or weights.",
    )
    final_reward: str | dict[str, float] | None = Field(
        None,
        description="Re-score the finished beams with this outcome reward (name or weights) and "
        "pick by it; the search's reward still prunes. None: pick by the search's reward.",
    )
    reference: str | None = Field(None, description="Gold answer, for the verifier reward.")
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="Sampling temperature; default: the request's."
    )
    partial_tokens: int | None = Field(
        None, ge=1, description="Early rejection: score children after this many tokens."
    )
    stop_at_answer: bool = Field(True, description="A step stating a final answer ends a beam.")
    return_candidates: bool = Field(False, description="Add every finished beam to the response.")
    trace: bool = Field(False, description=TRACE_DESCRIPTION)

    @property
    def kept(self) -> int:
        """Beams that survive a round (N/M)."""
        return max(self.n // self.beam_width, 1)

    def candidates(self) -> int:
        return self.n

    def guaranteed(self) -> int:
        """Finished beams the search always returns at least."""
        if self.mode == "beam" and self.partial_tokens is None:
            return self.n
        return self.kept

    def token_budget(self, request: GenerationRequest) -> int:
        """Upper bound: every round samples N children of at most one step each (the last round
        up to ``max_tokens``); with early rejection N partial children and N/M finished steps.
        A round adds at least one token to every beam, so there are at most ``max_tokens``."""
        total = request.spec.max_tokens
        step = min(self.step_tokens, total)
        rounds = min(self.max_depth, total)
        if self.partial_tokens is None:
            return self.n * ((rounds - 1) * step + total)
        part = min(self.partial_tokens, step)
        rejected = (self.n - self.kept) * part
        return (rounds - 1) * (rejected + self.kept * step) + rejected + self.kept * total

    def effective_temperature(self, request: GenerationRequest) -> float:
        return request.spec.temperature if self.temperature is None else self.temperature

    def check(self, request: GenerationRequest) -> None:
        if self.n % self.beam_width:
            raise StrategyError(
                f"strategy.n={self.n} must be a multiple of strategy.beam_width="
                f"{self.beam_width} (N/M beams survive each round)",
                "strategy.n",
            )
        if self.partial_tokens is not None and self.partial_tokens >= self.step_tokens:
            raise StrategyError(
                f"strategy.partial_tokens={self.partial_tokens} must be below "
                f"strategy.step_tokens={self.step_tokens}",
                "strategy.partial_tokens",
            )
        if request.spec.n > self.guaranteed():
            how = "DVTS" if self.mode == "dvts" else "early rejection"
            raise StrategyError(
                f"n={request.spec.n} choices asked, but {how} with strategy.n={self.n}, "
                f"beam_width={self.beam_width} may finish only {self.guaranteed()} beams",
                "n",
            )
        if self.n > 1 and self.effective_temperature(request) == 0:
            raise StrategyError(
                "tree search samples several children per step: temperature must be > 0",
                "temperature",
            )


@dataclass
class Search:
    """One request's search state and its figures."""

    request: GenerationRequest
    engine: MeteredEngine
    rewards: Rewards
    params: TreeSearchParams
    kind: str
    reading: Reading = as_is  # the reward's scores as probabilities (prod, weighted vote)
    finished: list[Beam] = field(default_factory=list)
    pending: list[Beam] = field(default_factory=list)  # finished, not yet scored as they are
    rounds: int = 0
    expansions: int = 0  # children sampled
    continuations: int = 0  # early rejection: survivors that finished their step
    pruned: int = 0  # children dropped (not finished, not kept)
    survivors: list[int] = field(default_factory=list)
    reward_calls: int = 0
    trace: Trace | None = None  # every expansion, when the client asks
    _calls: int = 0
    _nodes: dict[int, TraceNode] = field(default_factory=dict)

    @property
    def early_rejection(self) -> bool:
        return self.params.partial_tokens is not None

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

    async def _expand(self, plan: Sequence[tuple[Beam, int]], last: bool) -> list[Beam]:
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
                self._record(parent, child, len(completion.token_ids))
                children.append(child)
        self.expansions += len(children)
        return children

    def _record(self, parent: Beam, child: Beam, tokens: int) -> None:
        """A new node in the trace for ``child``, a child of ``parent``."""
        if self.trace is None:
            return
        step = child.steps[-1] if child.steps else ""
        node = TraceNode(
            id=len(self._nodes) + self.trace.dropped,
            parent=parent.node,
            round=self.rounds - 1,
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

    def _mark(self, children: Sequence[Beam], kept: Sequence[Beam]) -> None:
        """Each child's fate this round, with the score it was judged by."""
        going_on = {id(b) for b in kept}
        for child in children:
            node = self.node(child)
            if node is None:
                continue
            node.score = finite(child.score(self.params.aggregation, self.reading))
            node.status = (
                "finished" if child.finished else "kept" if id(child) in going_on else "pruned"
            )

    def _continued(self, before: Beam, done: Beam) -> None:
        """Early rejection: a kept child wrote the rest of its step; its node shows all of it."""
        done.node = before.node
        node = self.node(done)
        if node is None or self.trace is None:
            return
        step = done.steps[-1] if done.steps else ""
        node.text, node.chars, node.tokens = self.trace.text(step), len(step), done.step_ids
        if done.finished:
            node.status = "finished"

    async def _finish_steps(self, beams: Sequence[Beam], last: bool) -> list[Beam]:
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
            self._continued(beam, done)
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
            )
            self.reward_calls += 1

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
            children = await self._expand(self._plan(parents), last)
            await self._score(children)
            self._leave(children)
            kept = self._keep(children)
            self._mark(children, kept)
            partial = [b for b in kept if b.partial]
            if partial:
                done = await self._finish_steps(partial, last)
                kept = [b for b in kept if not b.partial] + done
                self._leave(done)
            parents = [b for b in kept if not b.finished]
            self.survivors.append(len(parents))
            if not parents or (params.mode == "beam" and len(self.finished) >= params.n):
                break
        await self._score([])  # beams that finished after their last score

    async def candidates(self) -> list[Candidate]:
        """The finished beams as candidates, scored by their aggregated step scores or, with a
        ``final_reward``, re-scored whole by it in ONE reward call."""
        out = []
        for i, beam in enumerate(self.finished):
            completion = Completion(i, beam.text, beam.ids, beam.finish_reason, None, beam.logprobs)
            out.append(Candidate(completion, beam.score(self.params.aggregation, self.reading)))
        if self.params.final_reward is not None and out:
            prompt, reference = self.request.prompt_text, self.params.reference
            items = [OutcomeItem(prompt, c.completion.text, reference) for c in out]
            scored = await self.rewards.score(self.params.final_reward, items)
            self.reward_calls += 1
            for candidate, score in zip(out, scored.scores, strict=True):
                candidate.score = float(score)
        answers, groups = await answers_and_groups_async([c.completion.text for c in out])
        for candidate, answer, group in zip(out, answers, groups, strict=True):
            candidate.answer, candidate.group = answer, group
        return out


def final_reading(rewards: Rewards, reward: str | dict[str, float] | None) -> Reading | None:
    """The final reward's scores as probabilities; None without one. It must score whole
    answers: a process reward here is refused before any sampling."""
    if reward is None:
        return None
    if rewards.info(reward).kind != "outcome":
        raise StrategyError(
            f"strategy.final_reward={reward!r} is a process reward; the final pick needs an "
            "outcome reward (e.g. 'default')",
            "strategy.final_reward",
        )
    return probability_reading(rewards, reward)


@register("tree_search", TreeSearchParams)
async def tree_search(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Step-level beam search or DVTS guided by a process reward (optionally early rejection)."""
    params = request.params
    assert isinstance(params, TreeSearchParams)
    kind = rewards.info(params.reward).kind  # an unknown reward fails before any sampling
    final = final_reading(rewards, params.final_reward)
    if isinstance(request.spec.prompt, str):
        ids = await engine.tokenize(request.spec.prompt, add_special_tokens=True)
        request.spec = request.spec.replace(prompt=tuple(ids))
    reading = probability_reading(rewards, params.reward)
    search = Search(request, engine, rewards, params, kind, reading)
    if params.trace:
        search.trace = Trace(strategy="tree_search")
    await search.run()
    candidates = await search.candidates()
    votes = final or aggregated_reading(reading, params.aggregation)
    if params.selection == "best":
        chosen = rank_best(candidates)[: request.spec.n]
    else:
        chosen = pick_by_groups(candidates, request.spec.n, "weighted_vote", votes)
    report = None
    if params.return_candidates:
        report = candidate_report(candidates, chosen)
        for entry, beam in zip(report, search.finished, strict=True):
            entry["steps"] = len(beam.steps)
            entry["step_scores"] = beam.step_scores
    trace = None
    if search.trace is not None:
        trace = selection_trace(
            "tree_search", candidates, chosen, params.selection, votes, trace=search.trace
        )
        chosen_ids = {c.completion.index for c in chosen}
        for tc in trace.candidates:  # by index: a full trace may have left some out
            beam = search.finished[tc.index]
            tc.node = beam.node
            node = search.node(beam)
            if node is not None:
                node.final = True
                node.chosen = tc.index in chosen_ids
    return StrategyResult(
        as_choices(chosen),
        candidates=report,
        details={
            "mode": params.mode,
            "early_rejection": search.early_rejection,
            "rounds": search.rounds,
            "expansions": search.expansions,
            "continuations": search.continuations,
            "pruned": search.pruned,
            "survivors": search.survivors,
            "finished": len(search.finished),
            "reward_calls": search.reward_calls,
            "selection": params.selection,
            "final_reward": params.final_reward,
        },
        trace=trace,
    )
