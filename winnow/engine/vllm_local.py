"""The shared in-process vLLM engine: one ``AsyncLLM`` for every request of the server.

vLLM's continuous batching and prefix cache are what make search strategies affordable: the N
samples of best-of-N, the beams of a tree search and the segments of CARDS all share the prompt's
KV blocks. Cancelling a call aborts its vLLM request (``AsyncLLM.generate`` aborts on
``CancelledError``), so a discarded candidate frees its KV cache at once.

Before vLLM starts its engine-core process (which inherits this process's environment), the
engine names it the reward tap's private directory (``$WINNOW_TAP_DIR``,
:mod:`winnow.engine.tap_files`) and the directories its processors may read
(``$WINNOW_ALLOWED_DIRS``, :mod:`winnow.engine.processors.allowed`): the value models VAS can
name (:func:`winnow.heads.value.available`) and those given to :meth:`VllmEngine.allow_dirs` (the
configured probe rewards), no others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from winnow.engine.base import (
    CONFIDENCE_STOP,
    SEGMENT_STOP,
    ChatMessage,
    Completion,
    CompletionDelta,
    Engine,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    Generation,
    ModelInfo,
    SamplingSpec,
    StreamEvent,
    TokenLogprob,
)
from winnow.engine.tapped import Channels, channelled, generate_channelled, stream_channelled
from winnow.engine.vllm_config import configure_environment, default_engine_args, has_cuda
from winnow.models.tokens import special_prefix, with_prefix

log = logging.getLogger("winnow.engine")


class VllmEngine(Engine):
    blocking_text_ops = True  # the tokenizer and the chat template run in the calling thread

    def __init__(
        self,
        model: str,
        *,
        served_name: str | None = None,
        engine_args: dict[str, Any] | None = None,
        cache_dir: Path | None = None,
        kv_cache_gib: int = 2,
    ) -> None:
        self.model = model
        self.cpu = not has_cuda()
        self.engine_args = default_engine_args(model, self.cpu, engine_args or {})
        self.cache_dir = cache_dir or Path(model).parent / ".cache"
        self.kv_cache_gib = kv_cache_gib
        self._served_name = served_name or Path(model).name
        self._llm: Any = None
        self._tokenizer: Any = None
        self._special_prefix: list[int] = []
        self._info: ModelInfo | None = None
        self._running: set[str] = set()
        self._sentinel: int | None = None  # ends uncertainty segments (see processors.segment)
        self._allowed: list[str] = []  # directories the processors may read (allow_dirs)
        self._tap = True  # False: no private directory for the tap's files (tap_model None)

    # ---- lifecycle ----------------------------------------------------------------------------

    def allow_dirs(self, dirs: Iterable[str | os.PathLike[str]]) -> None:
        if self._llm is not None:
            raise RuntimeError("allow_dirs must be called before the engine starts")
        self._allowed += [os.fspath(d) for d in dirs]

    def processor_environment(self) -> dict[str, str]:
        """What the engine-core process must inherit: the tap's private directory (made now)
        and the directories the processors may read."""
        from winnow.engine.processors.allowed import ALLOWED_DIRS_ENV, allowed_env
        from winnow.engine.tap_files import TAP_DIR_ENV, tap_dir
        from winnow.heads.value import available

        values = [str(path) for path in available().values()]
        env = {ALLOWED_DIRS_ENV: allowed_env([*self._allowed, *values])}
        try:
            env[TAP_DIR_ENV] = str(tap_dir())
        except OSError as exc:  # the server re-encodes every probe score instead
            log.warning("reward tap off: no private directory for its files: %s", exc)
            os.environ.pop(TAP_DIR_ENV, None)
            self._tap = False
        return env

    async def start(self) -> None:
        if self._llm is not None:
            return
        configure_environment(self.cache_dir, self.kv_cache_gib, self.cpu)
        os.environ.update(self.processor_environment())  # before vLLM starts its engine core
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**self.engine_args)
        log.info("starting vLLM engine: %s", self.engine_args)
        self._llm = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._llm.get_tokenizer()
        self._special_prefix = special_prefix(self._tokenizer)
        from winnow.engine.processors.segment import pick_sentinel

        self._sentinel = pick_sentinel(self._tokenizer)
        config = self._llm.model_config
        eos = self._tokenizer.eos_token_id
        from winnow.heads.value import vas_unavailable

        no_vas = vas_unavailable(self.model)  # e.g. soft-capped logits: said now, a 400 later
        if no_vas:
            log.warning("value-augmented sampling (strategy vas) is unavailable: %s", no_vas)
        self._info = ModelInfo(
            name=self._served_name,
            max_model_len=int(config.max_model_len),
            eos_token_ids=(eos,) if eos is not None else (),
            vocab_size=int(config.get_vocab_size()),
            extra={"vas_unavailable": no_vas} if no_vas else {},
            tap_model=None if no_vas or not self._tap else str(Path(self.model).resolve()),
        )

    async def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise EngineUnavailable("engine not started")
        return self._info

    @property
    def llm(self) -> Any:
        """The underlying ``AsyncLLM`` (for engine-specific features and tests)."""
        if self._llm is None:
            raise EngineUnavailable("engine not started")
        return self._llm

    async def check_health(self) -> None:
        llm = self.llm
        if llm.errored:
            raise EngineUnavailable(f"vLLM engine is dead: {llm.dead_error}")
        try:
            await llm.check_health()
        except Exception as exc:
            raise EngineUnavailable(f"vLLM health check failed: {exc}") from exc

    async def running_requests(self) -> int:
        """Requests vLLM still holds (children of n>1 requests count one each)."""
        if self._llm is None:
            return 0
        return int(self._llm.get_num_unfinished_requests())

    # ---- tokens -------------------------------------------------------------------------------

    async def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """``add_special_tokens``: the tokenizer's special prefix (BOS) once, not again before a
        chat rendered with its own ``<bos>`` (:mod:`winnow.models.tokens`)."""
        if self._tokenizer is None:
            raise EngineUnavailable("engine not started")
        ids = list(self._tokenizer.encode(text, add_special_tokens=False))
        return with_prefix(self._special_prefix, ids) if add_special_tokens else ids

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        if self._tokenizer is None:
            raise EngineUnavailable("engine not started")
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    async def apply_chat_template(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        if self._tokenizer is None:
            raise EngineUnavailable("engine not started")
        return str(
            self._tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )

    # ---- sampling -----------------------------------------------------------------------------

    def _sampling_params(
        self, spec: SamplingSpec, stream: bool, channels: Channels | None = None
    ) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        stop_token_ids, extra_args = list(spec.stop_token_ids), spec.extra_args
        channels = channels or Channels()
        if channels.tap is not None:
            extra_args = {**(extra_args or {}), **channels.tap.extra_args()}
        if spec.confidence is not None:
            if channels.confidence is None:
                raise ValueError("token confidence is recorded one sample per request")
            sentinel = None
            if spec.confidence.threshold is not None:
                sentinel = self._needs_sentinel("end low-confidence samples")
                stop_token_ids.append(sentinel)
            args = spec.confidence.extra_args(sentinel, channels.confidence)
            extra_args = {**(extra_args or {}), **args}
        if spec.segment is not None:
            sentinel = self._needs_sentinel("end uncertainty segments")
            if sentinel not in stop_token_ids:
                stop_token_ids.append(sentinel)
            extra_args = {**(extra_args or {}), **spec.segment.extra_args(sentinel)}
        if spec.vas is not None:
            extra_args = {**(extra_args or {}), **spec.vas.extra_args()}
        settings = {**spec.vllm_settings(), "stop_token_ids": stop_token_ids}
        return SamplingParams(
            **settings,
            logprobs=spec.logprobs,
            prompt_logprobs=spec.prompt_logprobs,
            extra_args=extra_args,
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        )

    def _needs_sentinel(self, what: str) -> int:
        if self._sentinel is None:
            raise ValueError(f"this model has no sentinel token to {what}")
        return self._sentinel

    async def _prompt(self, spec: SamplingSpec) -> dict[str, Any]:
        ids = spec.prompt
        if isinstance(ids, str):
            ids = tuple(await self.tokenize(ids, add_special_tokens=True))
        return {"prompt_token_ids": list(ids)}

    async def _outputs(
        self, spec: SamplingSpec, stream: bool, channels: Channels | None = None
    ) -> AsyncIterator[Any]:
        llm = self.llm
        if llm.errored:
            raise EngineUnavailable(f"vLLM engine is dead: {llm.dead_error}")
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            params = self._sampling_params(spec, stream, channels)
        except ValueError as exc:
            raise EngineRequestError(str(exc)) from exc
        prompt = await self._prompt(spec)
        request_id = f"winnow-{uuid.uuid4().hex}"
        self._running.add(request_id)
        try:
            async for output in llm.generate(prompt, params, request_id):
                yield output
        except EngineDeadError as exc:
            raise EngineUnavailable(f"vLLM engine died: {exc}") from exc
        except ValueError as exc:
            raise EngineRequestError(str(exc)) from exc
        finally:
            self._running.discard(request_id)

    async def generate(self, spec: SamplingSpec) -> Generation:
        if channelled(spec):
            return await generate_channelled(self._generate, spec)
        return await self._generate(spec)

    async def _generate(self, spec: SamplingSpec, channels: Channels | None = None) -> Generation:
        """One vLLM request (``n`` children inside vLLM); ``channels`` (with ``n`` 1): its
        files for the tap and the confidence processor."""
        final = None
        async for output in self._outputs(spec, stream=False, channels=channels):
            final = output
        if final is None:
            raise EngineError("vLLM returned no output")
        completions = []
        for o in sorted(final.outputs, key=lambda o: o.index):
            completion = Completion(o.index, o.text, *self._tokens_and_reasons(o, spec))
            completion.unseen_tokens = len(o.token_ids) - len(completion.token_ids)  # sentinel
            completions.append(completion)
        prompt_logprobs = None
        if spec.prompt_logprobs is not None and final.prompt_logprobs is not None:
            prompt_logprobs = [
                None if entry is None else self._one_logprob(tid, entry, spec.prompt_logprobs)
                for tid, entry in zip(final.prompt_token_ids, final.prompt_logprobs, strict=False)
            ]
        return Generation(
            prompt_token_ids=list(final.prompt_token_ids or []),
            completions=completions,
            cached_prompt_tokens=int(final.num_cached_tokens or 0),
            prompt_logprobs=prompt_logprobs,
        )

    async def stream(self, spec: SamplingSpec) -> AsyncIterator[StreamEvent]:
        if spec.confidence is not None and spec.n > 1:
            raise EngineRequestError("a confidence stream samples one sequence (n=1)")
        if channelled(spec) and spec.n == 1:  # a tapped stream carries its scores
            async for event in stream_channelled(self._stream, spec):
                yield event
            return
        async for event in self._stream(spec.replace(tap=())):  # n > 1: untapped
            yield event

    async def _stream(
        self, spec: SamplingSpec, channels: Channels | None = None
    ) -> AsyncIterator[StreamEvent]:
        async for output in self._outputs(spec, stream=True, channels=channels):
            deltas = []
            for o in output.outputs:
                delta = CompletionDelta(o.index, o.text, *self._tokens_and_reasons(o, spec))
                delta.unseen_tokens = len(o.token_ids) - len(delta.token_ids)  # the sentinel
                deltas.append(delta)
            yield StreamEvent(
                prompt_token_ids=list(output.prompt_token_ids or []),
                deltas=deltas,
                cached_prompt_tokens=int(output.num_cached_tokens or 0),
            )

    def _tokens_and_reasons(
        self, output: Any, spec: SamplingSpec
    ) -> tuple[list[int], Any, Any, list[TokenLogprob] | None]:
        """(token ids, finish reason, stop reason, logprobs) of one vLLM output; a segment cut
        or a confidence stop drops its sentinel token (it is not text) and reports
        ``stop_reason="segment"`` (``"confidence"``: the seam checks the confidence records)."""
        ids, logprobs, stop_reason = list(output.token_ids), output.logprobs, output.stop_reason
        ends = spec.segment is not None or (
            spec.confidence is not None and spec.confidence.threshold is not None
        )
        if ends and stop_reason == self._sentinel and ids and self._sentinel is not None:
            ids = ids[:-1]
            stop_reason = SEGMENT_STOP if spec.segment is not None else CONFIDENCE_STOP
            logprobs = logprobs[: len(ids)] if logprobs is not None else None
        return ids, output.finish_reason, stop_reason, self._logprobs(ids, logprobs, spec.logprobs)

    # ---- logprobs -----------------------------------------------------------------------------

    def _one_logprob(self, token_id: int, entry: dict[int, Any], k: int) -> TokenLogprob:
        chosen = entry.get(token_id)
        ranked = sorted(
            (item for item in entry.items() if item[1].rank is not None and item[1].rank <= k),
            key=lambda item: item[1].rank,
        )
        top = tuple((tid, self._token_text(tid, lp), float(lp.logprob)) for tid, lp in ranked[:k])
        logprob = float(chosen.logprob) if chosen is not None else float("-inf")
        token = self._token_text(token_id, chosen)
        return TokenLogprob(token_id, token, logprob, top)

    def _token_text(self, token_id: int, lp: Any) -> str:
        if lp is not None and lp.decoded_token is not None:
            return str(lp.decoded_token)
        return str(self._tokenizer.decode([token_id]))

    def _logprobs(
        self, token_ids: Sequence[int], entries: Any, k: int | None
    ) -> list[TokenLogprob] | None:
        if k is None or entries is None:
            return None
        return [
            self._one_logprob(tid, entry, k) for tid, entry in zip(token_ids, entries, strict=False)
        ]


async def wait_idle(engine: Engine, timeout: float = 10.0) -> int:
    """Wait until the engine holds no running requests; return how many remain at the end."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (
        left := await engine.running_requests()
    ) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return left
