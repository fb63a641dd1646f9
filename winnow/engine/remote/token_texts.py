"""Texts of single tokens for a remote vLLM, which names logprob tokens by id only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger("winnow.engine")

Decode = Callable[[list[int]], Awaitable[str]]
Encode = Callable[[str], Awaitable[list[int]]]


class TokenTexts:
    """Texts of single tokens (``decode([id])``, as vLLM names logprob tokens), cached by id.

    vLLM has no per-token batch detokenizer, and one ``/detokenize`` call per id is far too slow
    for top-20 logprobs. So a batch goes in one call with a separator between the ids:
    ``S a S b S`` decodes to ``M text(a) M text(b) M``, ``M`` being the separator's text. That
    holds when tokens decode independently (byte-level BPE, the separator framed by ASCII
    control characters); :meth:`setup` checks it on a sample and otherwise, as does any batch
    that does not split into the expected pieces, falls back to one call per id.
    """

    SEPARATOR = "\x1e<winnow-sep>\x1e"
    CHUNK = 512
    PARALLEL = 8
    PROBE = "Hello, wörld ✓ 日本語\n\t  x"

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._cache: dict[int, str] = {}
        self._separator: list[int] | None = None
        self._marker = ""

    @property
    def batched(self) -> bool:
        return self._separator is not None

    async def setup(self, encode: Encode) -> None:
        """Choose the batch separator if it provably splits this tokenizer's output."""
        self._separator = None
        separator = await encode(self.SEPARATOR)
        marker = await self._decode(separator)
        if not separator or not marker or await self._decode(separator * 2) != marker * 2:
            return
        self._separator, self._marker = separator, marker
        probe = list(dict.fromkeys(await encode(self.PROBE)))
        one_by_one = await asyncio.gather(*(self._decode([tid]) for tid in probe))
        if await self._split(probe) != list(one_by_one):
            log.info("remote tokenizer does not decode tokens independently: no batching")
            self._separator = None

    async def lookup(self, ids: Iterable[int]) -> dict[int, str]:
        """The texts of ``ids``, fetching those not cached yet."""
        wanted = list(dict.fromkeys(ids))
        missing = [tid for tid in wanted if tid not in self._cache]
        for start in range(0, len(missing), self.CHUNK):
            chunk = missing[start : start + self.CHUNK]
            texts = await self._split(chunk) if self._separator is not None else None
            if texts is None:
                texts = await self._one_by_one(chunk)
            self._cache.update(zip(chunk, texts, strict=True))
        return {tid: self._cache[tid] for tid in wanted}

    async def _split(self, ids: list[int]) -> list[str] | None:
        assert self._separator is not None
        seq = list(self._separator)
        for tid in ids:
            seq += [tid, *self._separator]
        parts = (await self._decode(seq)).split(self._marker)
        if len(parts) != len(ids) + 2 or parts[0] or parts[-1]:
            return None
        return parts[1:-1]

    async def _one_by_one(self, ids: list[int]) -> list[str]:
        gate = asyncio.Semaphore(self.PARALLEL)

        async def one(tid: int) -> str:
            async with gate:
                return await self._decode([tid])

        return list(await asyncio.gather(*(one(tid) for tid in ids)))
