"""Probe-head rewards: a linear or small MLP head on a backbone's hidden states (Q-Probe style).

A probe directory holds ``head.safetensors`` (``weight``/``bias`` for a linear head, or
``w1``/``b1``/``w2``/``b2`` for an MLP, in the ``[in, out]`` orientation) and ``probe.json``::

    {"kind": "outcome" | "process", "layer": -1, "output": "sigmoid" | "raw",
     "position": "last" | "answer", "step_delimiter": "\\n\\n", "description": "..."}

An outcome probe reads the last token of prompt + response (``position`` "last"), or the last
token of the response's final answer ("answer"; the last token when there is none); a process
probe reads the last token of every step ("last") or the last token of the result each step
states ("answer"). The head runs through
:func:`winnow.kernels.reward_head` (Triton on CUDA, the torch reference elsewhere) on the padded
batch, flattened, so only the probed rows are gathered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from winnow.engine.base import Engine
from winnow.heads.domain import DomainHead, DomainVerdict, load_domain
from winnow.heads.probe import has_sigmoid, head_scorer, load_head, save_head
from winnow.kernels.heads import RewardHead
from winnow.rewards.backbone import (
    Backbone,
    ProbeJob,
    ProbeResult,
    cost,
    score_positions,
)
from winnow.rewards.base import (
    STEP_DELIMITER,
    OutcomeItem,
    ProcessItem,
    Reward,
    RewardInfo,
    RewardKind,
    Scored,
    StepScored,
    Tapped,
)
from winnow.rewards.batcher import BatchObserver, MicroBatcher

__all__ = ["ProbeReward", "answer_tokens", "head_scorer", "load_head", "save_head"]


def _tapped_prompt_score(
    tapped: Tapped | None, head: str, prompt_ids: tuple[int, ...]
) -> float | None:
    """The engine's score of ``head`` at the prompt's last state, if it saw ``prompt_ids``."""
    if tapped is None or tapped.prompt_ids != prompt_ids:
        return None
    scores = tapped.scores.get(head)
    return float(scores[0]) if scores and scores[0] is not None else None


def _domain_info(domain: DomainHead) -> dict[str, object]:
    """What GET /v1/rewards shows of a domain head."""
    meta = domain.meta
    return {"threshold": meta.threshold, "quantile": meta.quantile,
            "calibrated_on": meta.calibrated_on, "distances": meta.distances}  # fmt: skip


def answer_span(text: str) -> tuple[int, int] | None:
    """Character span of the final answer's last occurrence in a response (None: no answer)."""
    from winnow.answers.final import extract_answer

    answer = extract_answer(text)
    if not answer:
        return None
    at = text.rfind(answer)
    return (at, at + len(answer)) if at >= 0 else None


def answer_tokens(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of the response tokens (by their character ``offsets``) that overlap its final
    answer; empty when the response has none."""
    chars = answer_span(text)
    if chars is None:
        return []
    return [i for i, (s, t) in enumerate(offsets) if s < chars[1] and t > chars[0]]


def process_positions(
    backbone: Backbone, prompt: str, steps: Sequence[str], position: str = "last"
) -> ProbeJob:
    """Prompt and steps tokenized as segments, and per step the position a process probe reads:
    the step's last token ("last"), or the last token of the result the step states ("answer":
    its last number or expression, as :func:`answer_span` finds it; the last token without one).
    Training reads the same positions (:mod:`winnow.train.process`)."""
    if position == "last":
        ids, ends = backbone.encode_segments([prompt, *steps])
        return ProbeJob(tuple(ids), tuple(ends[1:]))
    ids = backbone.encode_prompt(prompt)
    positions = []
    for step in steps:
        encoded = backbone.tokenizer(step, add_special_tokens=False, return_offsets_mapping=True)
        found = answer_tokens(step, encoded["offset_mapping"])
        start = len(ids)
        ids.extend(encoded["input_ids"])
        positions.append(start + found[-1] if found else len(ids) - 1)
    return ProbeJob(tuple(ids), tuple(positions))


def score_jobs(
    backbone: Backbone, head: RewardHead, jobs: Sequence[ProbeJob], layer: int, sigmoid: bool
) -> tuple[list[ProbeResult], int]:
    """Score probe jobs in as few padded forward passes as ``max_batch_tokens`` allows."""
    return score_positions(backbone, jobs, head_scorer(head, sigmoid), layer)


# probe.json entries GET /v1/rewards shows
_INFO_KEYS = {"metrics", "backbone", "calibration", "identity", "heldout"}


class ProbeReward(Reward):
    def __init__(
        self,
        name: str,
        directory: str | Path,
        backbone: Backbone,
        *,
        observer: BatchObserver | None = None,
        max_batch: int = 64,
        max_wait: float = 0.005,
        engine: Engine | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.engine = engine  # the policy engine: it scores what its tap saw but cannot serve
        self.head, self.meta = load_head(self.directory)
        self._scorer = head_scorer(self.head, has_sigmoid(self.meta))  # placed once per device
        self.domain = load_domain(self.directory)  # where it applies, when it knows
        self.backbone = backbone
        kind: RewardKind = self.meta.get("kind", "outcome")
        self._info = RewardInfo(
            name=name,
            kind=kind,
            backend="probe",
            scale="probability in [0, 1]" if self._sigmoid else "raw head output",
            description=str(self.meta.get("description", "")),
            extra={k: v for k, v in self.meta.items() if k in _INFO_KEYS}
            | ({"domain": _domain_info(self.domain)} if self.domain else {}),
        )
        self.layer = int(self.meta.get("layer", -1))
        # outcome probes read the response's last token, or with "answer" the last token of its
        # final answer (where the policy wrote the number it stands by)
        self.position = str(self.meta.get("position", "last"))
        if self.position not in ("last", "answer"):
            raise ValueError(f"probe {name!r}: position must be 'last' or 'answer'")
        self.delimiter = str(self.meta.get("step_delimiter", STEP_DELIMITER))
        self.batcher: MicroBatcher[ProbeJob, ProbeResult] = MicroBatcher(
            name, self._run, max_jobs=max_batch, max_wait=max_wait, observer=observer
        )

    @property
    def _sigmoid(self) -> bool:
        return has_sigmoid(self.meta)

    @property
    def info(self) -> RewardInfo:
        return self._info

    def _run(self, jobs: list[ProbeJob]) -> tuple[list[ProbeResult], int]:
        return score_positions(self.backbone, jobs, self._scorer, self.layer)

    def reads_final_states_of(self, model_dir: str) -> bool:
        """Whether this is an outcome probe on the final hidden states (layer -1) of the model in
        ``model_dir``: a caller that already holds those states can score them itself
        (:meth:`score_states`) instead of paying for a forward pass."""
        return (
            self.info.kind == "outcome"
            and self.layer == -1
            and Path(self.backbone.model_dir).resolve() == Path(model_dir).resolve()
        )

    def tap_heads(self, model_dir: str) -> tuple[str, ...]:
        """This head, and its domain head when it has one (the engine scores the prompt's last
        state with it: :meth:`domain_of` reads ``tap[domain][0]``)."""
        same = Path(self.backbone.model_dir).resolve() == Path(model_dir).resolve()
        if self.layer != -1 or not same:
            return ()
        return (self.tap_head,) + ((self.domain.tap_head,) if self.domain else ())

    @property
    def tap_head(self) -> str:
        """How the engine's tap names this head (its resolved directory)."""
        return str(self.directory.resolve())

    def tapped_scores(self, tapped: Tapped | None, job: ProbeJob) -> list[float] | None:
        """The scores the engine computed at every position ``job`` reads, if it saw the same
        tokens up to each (they are all a state depends on) and scored them all; else None."""
        scores = tapped.scores.get(self.tap_head) if tapped is not None else None
        if tapped is None or scores is None or not job.positions:
            return None
        start = len(tapped.prompt_ids) - 1  # scores[0]: the prompt's last token
        seen = tapped.prompt_ids + tapped.token_ids
        last = max(job.positions)
        if min(job.positions) < start or last >= len(seen):
            return None
        if job.ids[: last + 1] != seen[: last + 1]:
            return None
        found = [scores[p - start] if p - start < len(scores) else None for p in job.positions]
        return None if any(s is None for s in found) else [float(s) for s in found if s is not None]

    def score_states(self, hidden: torch.Tensor) -> list[float]:
        """The probe's score of every row of ``hidden`` ``[N, H]``: states it reads, already
        computed (which position of a response each row is, is the caller's choice)."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self._scorer(hidden, rows).reshape(-1).float().tolist()

    async def start(self) -> None:
        import asyncio

        await asyncio.to_thread(self.backbone.load)
        if self.head.in_features != self.backbone.hidden_size:
            raise ValueError(
                f"probe {self.info.name!r}: head expects {self.head.in_features} features, "
                f"backbone {self.backbone.model_dir} has {self.backbone.hidden_size}"
            )

    async def shutdown(self) -> None:
        await self.batcher.close()

    def outcome_job(self, item: OutcomeItem) -> ProbeJob:
        if self.position == "answer":  # the last token of the final answer, else the last token
            prompt_ids = self.backbone.encode_prompt(item.prompt)
            response = self.backbone.tokenizer(
                item.response, add_special_tokens=False, return_offsets_mapping=True
            )  # one tokenization gives the ids and where the answer is
            ids = prompt_ids + list(response["input_ids"])
            found = answer_tokens(item.response, response["offset_mapping"])
            return ProbeJob(tuple(ids), (len(prompt_ids) + found[-1] if found else len(ids) - 1,))
        ids, ends = self.backbone.encode_segments([item.prompt, item.response])
        return ProbeJob(tuple(ids), (ends[-1],))

    def process_job(self, item: ProcessItem) -> ProbeJob:
        steps = list(item.steps)
        if item.partial and steps and not steps[-1].endswith(self.delimiter):
            steps[-1] = steps[-1] + self.delimiter  # score the unfinished step as if complete
        return process_positions(self.backbone, item.prompt, steps, self.position)

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        if self.info.kind == "process":
            return await super().score(items)
        jobs = [self.outcome_job(i) for i in items]
        scores, tokens, cached, tapped = await self._tapped_or_encoded(
            [i.tapped for i in items], jobs
        )
        domain, domain_tokens = None, 0
        if self.domain is not None:
            domain, domain_tokens = await self.domain_of(
                [i.prompt for i in items], [i.tapped for i in items]
            )
        return Scored([s[0] for s in scores], tokens + domain_tokens, cached, tapped, domain)

    async def domain_of(
        self, prompts: Sequence[str], tapped: Sequence[Tapped | None] | None = None
    ) -> tuple[list[DomainVerdict] | None, int]:
        """Per prompt, its distance from this reward's training prompts and whether it is in
        the domain (None: the probe has no domain head), and the tokens encoded to know it.

        The distance is of the final state at the prompt's last token: read from the engine's
        tap (``tap[domain][0]``) when it scored the same prompt tokens, else from one forward
        pass of the backbone over each distinct prompt (its prefix cache keeps it for the
        responses' scoring)."""
        domain = self.domain
        if domain is None:
            return None, 0
        tapped = tapped or [None] * len(prompts)
        distance: dict[str, float] = {}
        encode: dict[str, tuple[int, ...]] = {}
        for prompt, tap in zip(prompts, tapped, strict=True):
            if prompt in distance or prompt in encode:
                continue
            ids = tuple(self.backbone.encode_prompt(prompt))
            found = _tapped_prompt_score(tap, domain.tap_head, ids)
            if found is not None:
                distance[prompt] = found
            else:
                encode[prompt] = ids
        tokens = 0
        if encode:
            import asyncio

            jobs = [ProbeJob(ids, (len(ids) - 1,)) for ids in encode.values()]
            results, tokens = await asyncio.to_thread(
                score_positions, self.backbone, jobs, domain.scorer, -1
            )
            for prompt, result in zip(encode, results, strict=True):
                distance[prompt] = result.scores[0]
        return [domain.verdict(distance[p]) for p in prompts], tokens

    async def _tapped_or_encoded(
        self, tapped: Sequence[Tapped | None], jobs: list[ProbeJob]
    ) -> tuple[list[list[float]], int, int, int]:
        """Each job's scores from the engine's tap where it has them; a job the engine tapped
        but whose tokens differ from the ones it scored is scored by that engine's prefill
        (:mod:`winnow.rewards.engine_prefill`); the rest are encoded in one batch. With (tokens
        computed, tokens reused, jobs tapped)."""
        found = [self.tapped_scores(t, job) for t, job in zip(tapped, jobs, strict=True)]
        n_tapped = sum(f is not None for f in found)
        engine_tokens, engine_cached = await self._engine_prefill(tapped, jobs, found)
        todo = [job for job, f in zip(jobs, found, strict=True) if f is None]
        results = list(await self.batcher.submit(todo) if todo else [])
        encoded = iter(results)
        scores = [f if f is not None else list(next(encoded).scores) for f in found]
        tokens, cached = cost(results)
        return scores, tokens + engine_tokens, cached + engine_cached, n_tapped

    async def _engine_prefill(
        self,
        tapped: Sequence[Tapped | None],
        jobs: list[ProbeJob],
        found: list[list[float] | None],
    ) -> tuple[int, int]:
        """Fill ``found`` for the tapped jobs the tap could not serve, through the engine."""
        missing = [i for i, f in enumerate(found) if f is None and tapped[i] is not None]
        if not missing or self.engine is None:
            return 0, 0
        tap_model = self.engine.info.tap_model
        heads = self.tap_heads(tap_model) if tap_model else ()
        if not heads:
            return 0, 0
        from winnow.rewards.engine_prefill import prefill_all

        results = await prefill_all(self.engine, heads[0], [jobs[i] for i in missing])
        tokens = cached = 0
        for i, result in zip(missing, results, strict=True):
            if result is not None:
                found[i], computed, reused = result
                tokens, cached = tokens + computed, cached + reused
        return tokens, cached

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        if self.info.kind != "process":
            return await super().score_steps(items)
        jobs = [self.process_job(i) for i in items]
        found, tokens, cached, tapped = await self._tapped_or_encoded(
            [i.tapped for i in items], jobs
        )
        scores = [[s if not math.isnan(s) else float("nan") for s in f] for f in found]
        return StepScored(scores, tokens, cached, tapped)
