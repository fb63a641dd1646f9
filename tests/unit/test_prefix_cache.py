"""The reward prefix cache (unit): shared prefixes and the cache's lookup and bounds, on made-up
ids and tensors (on the real default backbone: tests/engine/test_prefix_cache.py)."""

from __future__ import annotations

import numpy as np
import torch

from winnow.rewards.prefix_cache import MIN_SHARED, Entry, PrefixCache, shared_prefixes


def test_shared_prefixes_groups_neighbours_once():
    prompt = list(range(100, 130))
    seqs = [np.array(prompt + tail) for tail in ([1, 2, 3], [1, 2, 4], [9] * 5)]
    seqs.append(np.array([7] * 40))  # shares nothing
    shared = shared_prefixes(seqs, [0, 0, 0, 0])
    assert shared == [30, 30, 30, 0]  # the common prefix of the group, not of pairs
    assert shared_prefixes(seqs, [30 - MIN_SHARED + 1, 0, 0, 0])[0] == 0  # already cached


def _entry(ids: list[int]) -> Entry:
    kv = [(torch.zeros(1, len(ids), 2), torch.zeros(1, len(ids), 2))]
    return Entry(np.array(ids), kv, torch.zeros(len(ids), 4), -1)


def test_lookup_takes_the_longest_common_prefix_of_any_entry():
    cache = PrefixCache(max_bytes=2**30)
    assert cache.longest(np.arange(5), -1) == (None, 0)
    cache.put(_entry([1, 2, 3]))
    cache.put(_entry([1, 2, 9, 9, 9, 9]))
    entry, n = cache.longest(np.array([1, 2, 9, 9, 5, 5]), -1)
    assert n == 4 and entry is not None and entry.ids.tolist() == [1, 2, 9, 9, 9, 9]
    entry, n = cache.longest(np.array([1, 2, 3]), -1)  # held whole: the last token is computed
    assert n == 2
    assert cache.longest(np.array([1, 2, 3]), 5) == (None, 0)
    one = _entry([1, 2, 3]).nbytes
    tight = PrefixCache(max_bytes=2 * one)
    for ids in ([1, 2, 3], [4, 5, 6], [7, 8, 9]):
        tight.put(_entry(ids))
    assert len(tight) == 2 and tight.bytes == 2 * one
    assert tight.longest(np.array([1, 2, 3, 4]), -1) == (None, 0)  # the oldest went first
