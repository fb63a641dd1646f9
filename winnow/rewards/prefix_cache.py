"""Reuse of a reward backbone's KV cache across growing prefixes.

Guided strategies score the same text again and again: best-of-N scores N answers to one
prompt, CARDS scores prompt + accepted segments + each candidate segment, tree search scores
prompt + the steps so far for every child, early rejection scores a partial step and then the
whole step. Without reuse the reward model re-encodes the shared prefix for every item.

:class:`PrefixCache` keeps, for recently scored token sequences, the attention keys/values of
every layer and the hidden states the probes read, evicting least recently used entries past a
byte budget. A new sequence reuses the longest common prefix it shares with any entry (not only
entries that are whole prefixes of it: keys, values and hidden states at a position depend only
on the tokens up to it), so only the rest goes through the model. :func:`encode` runs one padded
forward pass over the uncached suffixes of a batch, with the cached prefixes left-padded into a
``DynamicCache``; within a batch, a prefix shared by several sequences (the prompt of N
candidates) is encoded once first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [kv_heads, T, head_dim]

MIN_SHARED = 8  # a prefix shorter than this is not worth a forward pass of its own


@dataclass(slots=True)
class Entry:
    ids: np.ndarray  # int64 token ids
    kv: KV
    hidden: torch.Tensor  # [T, H] hidden states of the probed layer
    layer: int

    @property
    def nbytes(self) -> int:
        kv = sum(k.element_size() * k.nelement() * 2 for k, _ in self.kv)
        return kv + self.hidden.element_size() * self.hidden.nelement()


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class PrefixCache:
    """LRU of encoded token sequences, bounded in bytes. Not thread-safe: the backbone's lock
    guards it together with the forward pass."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, tuple[int, ...]], Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, ids: np.ndarray, layer: int) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with ``ids`` (at most ``len(ids) - 1`` tokens,
        so at least one token is computed and the sequence's own entry can be stored)."""
        best: Entry | None = None
        best_len = 0
        for (entry_layer, _), entry in self._entries.items():
            if entry_layer != layer:
                continue
            n = common_prefix(ids, entry.ids)
            if n > best_len:
                best, best_len = entry, n
        best_len = min(best_len, len(ids) - 1)
        if best is None or best_len <= 0:
            return None, 0
        self._entries.move_to_end((layer, tuple(best.ids.tolist())))
        return best, best_len

    def put(self, entry: Entry) -> None:
        if self.max_bytes <= 0 or entry.nbytes > self.max_bytes:
            return
        key = (entry.layer, tuple(entry.ids.tolist()))
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._entries[key] = entry
        self.bytes += entry.nbytes
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


@dataclass(slots=True)
class Encoded:
    """One sequence's hidden states, and how many of its tokens were computed vs reused."""

    hidden: torch.Tensor  # [T, H]
    computed: int
    cached: int


def shared_prefixes(seqs: Sequence[np.ndarray], known: Sequence[int]) -> list[int]:
    """For each sequence, the length of a prefix it shares with another sequence of the batch,
    when that is at least MIN_SHARED tokens longer than what the cache already knows of it.

    Sequences are sorted; maximal runs of neighbours with a common prefix of at least
    MIN_SHARED form a group whose common prefix (the prompt of N candidates) is encoded once.
    """
    order = sorted(range(len(seqs)), key=lambda i: seqs[i].tolist())
    shared = [0] * len(seqs)
    run: list[int] = []
    run_len = 0

    def close() -> None:
        if len(run) > 1:
            for i in run:
                shared[i] = min(run_len, len(seqs[i]) - 1)

    for i in order:
        if run:
            n = common_prefix(seqs[run[-1]], seqs[i])
            if n >= MIN_SHARED:
                run_len = min(run_len, n)
                run.append(i)
                continue
            close()
        run, run_len = [i], len(seqs[i])
    close()
    return [s if s >= known[i] + MIN_SHARED else 0 for i, s in enumerate(shared)]


@torch.inference_mode()
def encode(
    trunk: Any, cache: PrefixCache, sequences: Sequence[Sequence[int]], layer: int, pad: int
) -> list[Encoded]:
    """Hidden states of every position of every sequence, reusing and filling ``cache``."""
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    hits = [cache.longest(s, layer) for s in seqs]
    shared = shared_prefixes(seqs, [n for _, n in hits]) if cache.max_bytes > 0 else []
    computed = [0] * len(seqs)
    prefixes: dict[tuple[int, ...], int] = {}  # a shared prefix -> the first sequence using it
    for i, n in enumerate(shared):
        if n:
            prefixes.setdefault(tuple(seqs[i][:n].tolist()), i)
    if prefixes:  # encode each shared prefix once (charged to its first user), then reuse it
        heads = [np.asarray(p, dtype=np.int64) for p in prefixes]
        done = _extend(trunk, cache, heads, layer, pad)
        for owner, head in zip(prefixes.values(), done, strict=True):
            computed[owner] += head.computed
        hits = [cache.longest(s, layer) for s in seqs]
    out = _extend(trunk, cache, seqs, layer, pad, hits)
    # (a head evicted before its users ran is recomputed: then nothing of theirs was reused)
    return [
        Encoded(e.hidden, e.computed + computed[i], max(e.cached - computed[i], 0))
        for i, e in enumerate(out)
    ]


def _extend(
    trunk: Any,
    cache: PrefixCache,
    seqs: Sequence[np.ndarray],
    layer: int,
    pad: int,
    hits: Sequence[tuple[Entry | None, int]] | None = None,
) -> list[Encoded]:
    """One forward pass over every sequence's uncached suffix; stores every sequence."""
    if hits is None:
        hits = [cache.longest(s, layer) for s in seqs]
    starts = [n for _, n in hits]
    past_len = max(starts)
    width = max(len(s) - n for s, n in zip(seqs, starts, strict=True))
    batch = len(seqs)
    ids = torch.full((batch, width), pad, dtype=torch.long)
    mask = torch.zeros((batch, past_len + width), dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    for b, (s, n) in enumerate(zip(seqs, starts, strict=True)):
        suffix = torch.from_numpy(s[n:])
        ids[b, : len(suffix)] = suffix
        mask[b, past_len - n : past_len + len(suffix)] = 1
        positions[b] = n + torch.arange(width)
    device = _device(trunk)  # built on the host, moved once: the model may be on a GPU
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    kwargs: dict[str, Any] = {"use_cache": True, "output_hidden_states": layer != -1}
    if past_len:
        kwargs["past_key_values"] = _left_padded_past(hits, past_len)
    out = trunk(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
    hidden = out.hidden_states[layer] if layer != -1 else out.last_hidden_state
    layers = out.past_key_values.layers
    results = []
    for b, ((entry, n), s) in enumerate(zip(hits, seqs, strict=True)):
        fresh = len(s) - n
        kv = [
            _join(entry.kv[li] if entry else None, n, past_len, (lay.keys[b], lay.values[b]), fresh)
            for li, lay in enumerate(layers)
        ]
        states = hidden[b, :fresh]
        if entry is not None:
            states = torch.cat([entry.hidden[:n], states])
        cache.put(Entry(s, kv, states, layer))
        results.append(Encoded(states, fresh, n))
    return results


def _device(trunk: Any) -> torch.device:
    """Where the trunk's weights are (its inputs go there)."""
    device = getattr(trunk, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(trunk.parameters()).device


def _left_padded_past(hits: Sequence[tuple[Entry | None, int]], past_len: int) -> Any:
    from transformers import DynamicCache

    template = next(e for e, _ in hits if e is not None).kv
    data = []
    for li, (k0, v0) in enumerate(template):
        keys = k0.new_zeros((len(hits), k0.shape[0], past_len, k0.shape[2]))
        values = v0.new_zeros((len(hits), v0.shape[0], past_len, v0.shape[2]))
        for b, (entry, n) in enumerate(hits):
            if entry is not None and n:
                keys[b, :, past_len - n :] = entry.kv[li][0][:, :n]
                values[b, :, past_len - n :] = entry.kv[li][1][:, :n]
        data.append((keys, values))
    return DynamicCache(ddp_cache_data=data)


def _join(
    old: tuple[torch.Tensor, torch.Tensor] | None,
    n: int,
    past_len: int,
    new: tuple[torch.Tensor, torch.Tensor],
    fresh: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A sequence's own keys/values: its cached prefix and its fresh suffix (the batch's
    left padding and right padding cut away)."""
    keys = new[0][:, past_len : past_len + fresh]
    values = new[1][:, past_len : past_len + fresh]
    if old is not None and n:
        keys = torch.cat([old[0][:, :n], keys], dim=1)
        values = torch.cat([old[1][:, :n], values], dim=1)
    return keys.contiguous(), values.contiguous()
