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
  logit-scale reward through a sigmoid:
  :func:`~winnow.strategies.parts.selection.probability_reading`);
  a beam with an unscored (NaN) step it aggregates ranks last.
* ``final_reward``: the process reward prunes, and an outcome reward (``default``, trained on
  whole answers, ranks them better than a PRM's last step does) re-scores the finished beams for
  the final pick; its scores replace the aggregated step scores in the pick and the candidates
  (measured: `benchmarks/results/compare_strategies.md`).
* The client's ``n`` choices come back. Plain beam search always finishes at least N beams;
  DVTS and early rejection at least N/M, so ``n`` may not exceed that.

Here: the strategy and the final pick (``final_reward``, selection, report, trace). Its parts are
in :mod:`winnow.strategies.parts.tree`: the parameters (``params``), the round loop with its
scoring and
pruning (``search``), the engine calls of a round (``expand``) and the trace's nodes (``nodes``).
"""

from __future__ import annotations

from winnow.answers.groups import answers_and_groups_async
from winnow.engine.base import Completion
from winnow.metering.engine import MeteredEngine
from winnow.rewards.base import OutcomeItem
from winnow.strategies.base import GenerationRequest, Rewards, StrategyResult
from winnow.strategies.parts.selection import (
    Candidate,
    Reading,
    aggregated_reading,
    as_choices,
    candidate_report,
    pick_by_groups,
    probability_reading,
    rank_best,
    selection_trace,
)
from winnow.strategies.parts.tree.params import TreeSearchParams
from winnow.strategies.parts.tree.search import Search
from winnow.strategies.registry import StrategyError, register

__all__ = ["TreeSearchParams", "final_reading", "finished_candidates", "tree_search"]


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


async def finished_candidates(search: Search) -> list[Candidate]:
    """The finished beams as candidates, scored by their aggregated step scores or, with a
    ``final_reward``, re-scored whole by it in ONE reward call."""
    params, out = search.params, []
    for i, beam in enumerate(search.finished):
        completion = Completion(i, beam.text, beam.ids, beam.finish_reason, None, beam.logprobs)
        out.append(Candidate(completion, beam.score(params.aggregation, search.reading)))
    if params.final_reward is not None and out:
        prompt, reference = search.request.prompt_text, params.reference
        items = [
            OutcomeItem(prompt, c.completion.text, reference, beam.tapped(search.prompt_ids))
            for c, beam in zip(out, search.finished, strict=True)
        ]
        scored = await search.rewards.score(params.final_reward, items)
        search.reward_calls += 1
        for candidate, score in zip(out, scored.scores, strict=True):
            candidate.score = float(score)
    answers, groups = await answers_and_groups_async([c.completion.text for c in out])
    for candidate, answer, group in zip(out, answers, groups, strict=True):
        candidate.answer, candidate.group = answer, group
    return out


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
    model = engine.info.tap_model
    tap = rewards.tap_heads(params.reward, model)
    if params.final_reward is not None:
        tap = tuple(dict.fromkeys((*tap, *rewards.tap_heads(params.final_reward, model))))
    search = Search(request, engine, rewards, params, kind, reading, tap)
    await search.run()
    candidates = await finished_candidates(search)
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
    if search.nodes.trace is not None:
        trace = selection_trace(
            "tree_search", candidates, chosen, params.selection, votes, trace=search.nodes.trace
        )
        chosen_ids = {c.completion.index for c in chosen}
        for tc in trace.candidates:  # by index: a full trace may have left some out
            beam = search.finished[tc.index]
            tc.node = beam.node
            node = search.nodes.node(beam)
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
            "expansions": search.expander.expansions,
            "continuations": search.expander.continuations,
            "pruned": search.pruned,
            "survivors": search.survivors,
            "finished": len(search.finished),
            "reward_calls": search.reward_calls,
            "selection": params.selection,
            "final_reward": params.final_reward,
        },
        trace=trace,
    )
