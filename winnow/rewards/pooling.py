"""Reward models run by vLLM's pooling runner (``"runner": "pooling"`` on a ``seq_cls`` or
``step_tag_prm`` config).

winnow keeps what it reads: the same backend classes render each family's input
(:mod:`.formats`: templates, step tags, system prompts) and find the positions to read
(:class:`~.backbone.ProbeJob`), exactly as the transformers runner does. Only the forward pass
moves: each job's token ids go to vLLM as one ``token_classify`` request (the head's raw output
at every position, ``use_activation=False``), and winnow reads its positions and applies the
family's reading itself, so both runners give the same numbers (tests compare them).

Where vLLM runs it:

* **in process** (no ``pooling.urls``): a second ``AsyncLLM`` with ``runner="pooling"`` beside
  the policy's. Its scheduler batches every request in flight (across strategies and requests)
  and its prefix cache serves them: a request reads the cached prefix, vLLM returns the rows of
  the tokens it computed, and a job that needs a row inside the cached part is sent again
  without reading the cache (:meth:`LocalPooling.rows`). On CPU the engine has its own KV space
  (``pooling.kv_cache_gib``); on a GPU its share is ``pooling.gpu_memory_utilization``.
* **on workers** (``pooling.urls``): ``winnow worker --runner pooling --rewards-config FILE
  --reward NAME`` serves the same engine over vLLM's ``/pooling`` API; jobs go to the URLs in
  turn. vLLM's HTTP API reads no cached prefix for token-level pooling, so workers compute every
  token (counted as such).

What vLLM builds (:func:`pooling_plan`): ``*ForSequenceClassification``, ``Qwen2ForRewardModel``,
``Qwen2ForProcessRewardModel`` (…) as the checkpoint names them; a causal LM read by its label
tokens (Math-Shepherd, RLHFlow: ``label_token``) converted by vLLM into a one-output classifier
whose weight is ``lm_head[good] - lm_head[bad]`` (``from_2_way_softmax``), so
``sigmoid(output) = softmax over (good, bad)``; a causal LM read by one token's logit
(``logit_token_id``, Nemotron) converted with that row (``no_post_processing``). Skywork-o1's
``v_head`` has no vLLM model: such a config is refused at start-up (use ``"runner": "hf"``).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import uuid
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from winnow.rewards.backbone import ProbeJob
from winnow.rewards.base import (
    OutcomeItem,
    ProcessItem,
    RewardError,
    RewardInfo,
    Scored,
    StepScored,
)
from winnow.rewards.configs import PoolingOptions, SequenceClassifierConfig, StepTagPRMConfig
from winnow.rewards.placement import resolve
from winnow.rewards.seq_cls import SequenceClassifierReward
from winnow.rewards.step_tag_prm import StepTagPRM

log = logging.getLogger(__name__)

Reading = Callable[[torch.Tensor], torch.Tensor]
"""Raw head outputs at the positions read, ``[positions, outputs]`` -> one score each."""


@dataclass(frozen=True, slots=True)
class PoolingPlan:
    """What vLLM is asked to build for a reward model, and how its outputs are read."""

    model: str
    hf_overrides: dict[str, Any] | None
    reading: Reading
    described: str  # how a score is read, for /v1/rewards


@dataclass(slots=True)
class Pooled:
    """One job's raw outputs at its positions, and what computing them cost."""

    outputs: torch.Tensor  # [positions, outputs]
    tokens: int  # tokens vLLM computed
    cached: int = 0  # tokens whose states came from its prefix cache


def architecture(model_dir: str) -> str:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    names = config.get("architectures") or []
    if not names:
        raise ValueError(f"{model_dir}/config.json names no architecture")
    return str(names[0])


def _outcome_reading(raw: torch.Tensor) -> torch.Tensor:
    """A sequence classifier's score as the transformers runner reads it (:mod:`.seq_cls`):
    one label, its logit; two, the log-odds of label 1 over label 0; more, label 0's logit."""
    if raw.shape[-1] == 2:
        return raw[:, 1] - raw[:, 0]
    return raw[:, 0]


def _two_way_reading(raw: torch.Tensor) -> torch.Tensor:
    if raw.shape[-1] != 2:
        raise RewardError(f"a two_way PRM needs 2 outputs, vLLM returned {raw.shape[-1]}")
    return torch.softmax(raw, dim=-1)[:, 1]


def _as_classifier(arch: str) -> str:
    if not arch.endswith("ForCausalLM"):
        raise ValueError(f"a {arch} cannot be read by its LM head here (expected *ForCausalLM)")
    return arch.removesuffix("ForCausalLM") + "ForSequenceClassification"


def pooling_plan(reward: SequenceClassifierReward | StepTagPRM) -> PoolingPlan:
    """What vLLM builds for ``reward``'s checkpoint (see the module docstring); a
    :class:`ValueError` for a reading vLLM has no model for."""
    config = reward.config
    arch = architecture(config.path)
    tokens = reward.model.tokenizer.convert_ids_to_tokens
    if isinstance(config, SequenceClassifierConfig):
        token = config.logit_token_id
        if token is None:
            return PoolingPlan(config.path, None, _outcome_reading, "its score head")
        overrides = {
            "architectures": [_as_classifier(arch)],
            "classifier_from_token": [tokens(token)],
            "method": "no_post_processing",
        }
        return PoolingPlan(config.path, overrides, _outcome_reading, f"the logit of token {token}")
    if config.style == "two_way":
        return PoolingPlan(config.path, None, _two_way_reading, "P(label 1) of its 2-way head")
    if config.style == "label_token":
        assert isinstance(reward, StepTagPRM)
        good, bad = reward.label_ids()
        overrides = {
            "architectures": [_as_classifier(arch)],
            "classifier_from_token": [tokens(bad), tokens(good)],
            "method": "from_2_way_softmax",
        }
        return PoolingPlan(
            config.path, overrides, lambda raw: torch.sigmoid(raw[:, 0]), "P(good) over good/bad"
        )
    raise ValueError(
        f"vLLM has no pooling model for the {config.style!r} style ({arch}'s value head): "
        'use "runner": "hf"'
    )


def engine_args(plan: PoolingPlan, config: SequenceClassifierConfig | StepTagPRMConfig) -> dict:
    """The pooling engine's arguments (in process, or as ``winnow worker`` flags): winnow's CPU
    settings (fp32, eager, 32-token blocks, prefix caching) where they apply, every position's
    output pooled (``tok_pooling_type=ALL``), the configured dtype and memory share."""
    from winnow.engine.vllm_config import configured_max_len, has_cuda

    options = config.pooling
    placement = resolve(config.device, config.dtype)
    cpu = not has_cuda()  # vLLM runs on its platform's device; `device` only sets the dtype
    dtype = str(placement.dtype).removeprefix("torch.")
    args: dict[str, Any] = {
        "model": plan.model,
        "runner": "pooling",
        "dtype": dtype,
        "enable_prefix_caching": True,
        "seed": 0,
        # vLLM's server serves one pooling task per model: the one every item is sent as
        "pooler_config": {
            "task": "token_classify",
            "seq_pooling_type": "LAST",
            "tok_pooling_type": "ALL",
        },
    }
    if plan.hf_overrides:
        args["hf_overrides"] = plan.hf_overrides
    if options.max_model_len:
        args["max_model_len"] = options.max_model_len
    if cpu:
        max_len = options.max_model_len or configured_max_len(plan.model)
        args.update(
            enforce_eager=True,
            enable_chunked_prefill=False,
            block_size=32,
            max_num_batched_tokens=max(max_len, 2048),
        )
    else:
        args["gpu_memory_utilization"] = options.gpu_memory_utilization
    return args


class LocalPooling:
    """A second ``AsyncLLM`` in this process, running the reward model's pooling."""

    def __init__(self, args: dict[str, Any], kv_cache_gib: int) -> None:
        self.args = args
        self.kv_cache_gib = kv_cache_gib
        self._llm: Any = None
        self._kept: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # rows read, by prefix

    async def start(self) -> None:
        from vllm.config import PoolerConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = {**self.args, "pooler_config": PoolerConfig(**self.args["pooler_config"])}
        # vLLM reads its CPU KV space from the environment when it starts an engine core: this
        # engine gets its own size, the policy's engine keeps the one it started with.
        saved = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_gib)
        try:
            log.info("starting the pooling engine: %s", self.args)
            self._llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        finally:
            if saved is None:
                os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
            else:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = saved

    async def _encode(self, ids: Sequence[int], read_cache: bool) -> Any:
        from vllm import PoolingParams

        params = PoolingParams(
            task="token_classify", use_activation=False, skip_reading_prefix_cache=not read_cache
        )
        out = None
        request = {"prompt_token_ids": list(ids)}
        async for part in self._llm.encode(request, params, request_id=f"pool-{uuid.uuid4().hex}"):
            out = part
        if out is None:
            raise RewardError("the pooling engine returned nothing")
        return out

    async def rows(self, job: ProbeJob) -> Pooled:
        """The raw outputs at ``job.positions``. vLLM returns the rows of the tokens it computed
        (those after the cached prefix). A position inside the cached prefix is read from the
        rows kept of earlier requests (a row depends on the tokens up to it only, so a row kept
        under its prefix is exact); failing that, the job is sent again without the cache."""
        if self._llm is None:
            raise RewardError("the pooling engine is not started")
        out = await self._encode(job.ids, read_cache=True)
        cached = int(out.num_cached_tokens or 0)
        data = out.outputs.data.reshape(out.outputs.data.shape[0], -1).float()
        first = len(job.ids) - data.shape[0]
        rows: list[torch.Tensor] = []
        for p in job.positions:
            row = data[p - first] if p >= first else self._kept.get(_prefix_key(job.ids, p))
            if row is None:
                again = await self._encode(job.ids, read_cache=False)
                data = again.outputs.data.reshape(len(job.ids), -1).float()
                self._keep(job, data, 0)
                spent = 2 * len(job.ids) - cached
                return Pooled(data[list(job.positions)], spent)
            rows.append(row)
        self._keep(job, data, first)
        outputs = torch.stack(rows) if rows else data[:0]
        return Pooled(outputs, len(job.ids) - cached, cached)

    def _keep(self, job: ProbeJob, data: torch.Tensor, first: int) -> None:
        for p in job.positions:
            if p >= first:
                key = _prefix_key(job.ids, p)
                self._kept[key] = data[p - first].clone()
                self._kept.move_to_end(key)
        while len(self._kept) > KEPT_ROWS:
            self._kept.popitem(last=False)

    async def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None


KEPT_ROWS = 1 << 16
"""Rows kept of earlier requests (a few hundred bytes each)."""


def _prefix_key(ids: Sequence[int], position: int) -> bytes:
    """A 128-bit digest of the token ids up to ``position`` (no practical collision)."""
    return hashlib.blake2b(array("q", ids[: position + 1]).tobytes(), digest_size=16).digest()


def _at(data: torch.Tensor, positions: Sequence[int], first: int) -> torch.Tensor:
    rows = data.reshape(data.shape[0], -1).float()
    return rows[[p - first for p in positions]]


@dataclass
class RemotePooling:
    """``winnow worker --runner pooling`` servers (vLLM's ``/pooling`` API), used in turn."""

    urls: list[str]
    served_model: str | None
    api_key: str | None
    timeout: float
    _turn: Any = field(default=None, init=False)
    _client: Any = field(default=None, init=False)
    _models: dict[str, str] = field(default_factory=dict, init=False)

    async def start(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.AsyncClient(timeout=self.timeout, headers=headers)
        self._turn = itertools.cycle(self.urls)
        for url in self.urls:  # a worker that is not there is a start-up error
            self._models[url] = self.served_model or await self._model(url)

    async def _model(self, url: str) -> str:
        response = await self._client.get(f"{url.rstrip('/')}/v1/models")
        response.raise_for_status()
        return str(response.json()["data"][0]["id"])

    async def rows(self, job: ProbeJob) -> Pooled:
        url = next(self._turn)
        body = {
            "model": self._models[url],
            "input": list(job.ids),
            "task": "token_classify",
            "use_activation": False,
        }
        try:
            response = await self._client.post(f"{url.rstrip('/')}/pooling", json=body)
        except Exception as exc:
            raise RewardError(f"pooling worker {url}: {exc}") from exc
        if response.status_code != 200:
            raise RewardError(f"pooling worker {url}: HTTP {response.status_code} {response.text}")
        data = torch.tensor(response.json()["data"][0]["data"], dtype=torch.float32)
        first = len(job.ids) - data.shape[0]
        return Pooled(_at(data, job.positions, first), data.shape[0])

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def unpooled(config: SequenceClassifierConfig | StepTagPRMConfig) -> Any:
    """The pooled backend of ``config``, its tokenizer's details loaded and no engine started:
    for :func:`pooling_plan` outside a server (``winnow worker --runner pooling``)."""
    if isinstance(config, SequenceClassifierConfig):
        reward: Any = PooledSequenceClassifier(config)
    else:
        reward = PooledStepTagPRM(config)
    reward._load()
    return reward


def runner_for(plan: PoolingPlan, config: SequenceClassifierConfig | StepTagPRMConfig) -> Any:
    options: PoolingOptions = config.pooling
    if options.urls:
        key = os.environ.get(options.api_key_env) if options.api_key_env else None
        return RemotePooling(list(options.urls), options.served_model, key, options.timeout)
    return LocalPooling(engine_args(plan, config), options.kv_cache_gib)


class _PooledMixin:
    """What both pooled backends share: the tokenizer only here, the plan, the runner."""

    config: Any
    model: Any
    _info: RewardInfo

    def _pooled_setup(self) -> None:
        self.model.weights = False  # the weights live in vLLM
        self._plan: PoolingPlan | None = None
        self._runner: Any = None

    async def _start_runner(self) -> None:
        self._plan = pooling_plan(self)  # type: ignore[arg-type]
        self._runner = runner_for(self._plan, self.config)
        await self._runner.start()
        where = ", ".join(self.config.pooling.urls) or "in process"
        extra = {**self._info.extra, "runner": "pooling", "pooling": where}
        extra["head"] = self._plan.described
        self._info = replace(self._info, extra=extra)

    async def _pool(self, jobs: Sequence[ProbeJob]) -> tuple[list[list[float]], int, int]:
        """Every job scored at its positions, all in flight at once (vLLM batches them)."""
        if not jobs:
            return [], 0, 0
        assert self._plan is not None and self._runner is not None, "reward not started"
        tasks = [asyncio.ensure_future(self._runner.rows(job)) for job in jobs]
        try:
            pooled = await asyncio.gather(*tasks)
        except BaseException:  # one failed or the call was cancelled: the others stop too
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        scores = [self._plan.reading(p.outputs).tolist() if len(p.outputs) else [] for p in pooled]
        return scores, sum(p.tokens for p in pooled), sum(p.cached for p in pooled)

    async def _stop_runner(self) -> None:
        if self._runner is not None:
            await self._runner.shutdown()


class PooledSequenceClassifier(_PooledMixin, SequenceClassifierReward):
    """A ``seq_cls`` reward scored by vLLM's pooling runner; see the module docstring."""

    def __init__(self, config: SequenceClassifierConfig, **options: Any) -> None:
        super().__init__(config, **options)
        self._pooled_setup()
        self._ready = False

    def _load(self) -> Any:  # the tokenizer's details only: the head is vLLM's
        if not self._ready:
            self._prepare("its score head")
            self._ready = True
        return None

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        await self._start_runner()

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        scores, tokens, cached = await self._pool([self.job(i) for i in items])
        return Scored([s[0] for s in scores], tokens, cached)

    async def shutdown(self) -> None:
        await self._stop_runner()
        await super().shutdown()


class PooledStepTagPRM(_PooledMixin, StepTagPRM):
    """A ``step_tag_prm`` reward scored by vLLM's pooling runner; see the module docstring."""

    def __init__(self, config: StepTagPRMConfig, **options: Any) -> None:
        super().__init__(config, **options)
        self._pooled_setup()
        self._ready = False

    def _load(self) -> Any:
        if not self._ready:
            self._prepare()
            self._ready = True
        return None

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        await self._start_runner()

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        todo = [i for i, item in enumerate(items) if item.steps]
        scores, tokens, cached = await self._pool([self.job(items[i]) for i in todo])
        out: list[list[float]] = [[] for _ in items]
        for i, score in zip(todo, scores, strict=True):
            out[i] = score
        return StepScored(out, tokens, cached)

    async def shutdown(self) -> None:
        await self._stop_runner()
        await super().shutdown()
