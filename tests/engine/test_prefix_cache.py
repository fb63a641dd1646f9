"""The reward prefix cache (engine): reused keys/values give the hidden states of a full
re-encode, and only the tokens not held are computed (on the real default backbone and probe
heads)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from winnow.rewards.backbone import Backbone
from winnow.rewards.base import OutcomeItem, ProcessItem
from winnow.rewards.probe import ProbeReward
from winnow.rewards.registry import ASSETS

ATOL = 2e-4

PROMPT = "<|im_start|>user\nTom has 3 apples and buys 4 more. How many apples?<|im_end|>\n"
PROMPT += "<|im_start|>assistant\n"
ANSWERS = (
    "Tom has 3 + 4 = 7 apples. The answer is 7.",
    "He buys 4 more, so 3 + 4 = 7.",
    "The answer is 12.",
    "3 apples and 4 apples make 7 apples in all, so Tom has 7 apples.",
)


@pytest.fixture(scope="module")
def backbones(default_model_dir: str) -> tuple[Backbone, Backbone]:
    """(cached, uncached) over one loaded model."""
    cached = Backbone(default_model_dir)
    plain = Backbone(default_model_dir, prefix_cache_bytes=0)
    cached.load()
    plain._model, plain._tokenizer = cached._model, cached._tokenizer
    return cached, plain


def _ids(backbone: Backbone, *texts: str) -> list[int]:
    return backbone.encode_segments(texts)[0]


def test_reused_prefixes_give_the_hidden_states_of_a_full_pass(backbones):
    cached, plain = backbones
    cached.prefix_cache.clear()
    seqs = [_ids(cached, PROMPT, a) for a in ANSWERS]
    first = cached.encode_sequences(seqs)  # the shared prompt is encoded once
    full = plain.encode_sequences(seqs)
    for got, want in zip(first, full, strict=True):
        assert torch.allclose(got.hidden, want.hidden, atol=ATOL)
    prompt_len = len(_ids(cached, PROMPT))
    assert sum(e.computed for e in first) < sum(len(s) for s in seqs) - 2 * prompt_len
    assert all(e.computed + e.cached == len(s) for e, s in zip(first, seqs, strict=True))
    # a growing prefix (a next segment or step) computes only what is new ...
    longer = _ids(cached, PROMPT, ANSWERS[0], " So 7 it is.")
    (grown,) = cached.encode_sequences([longer])
    assert grown.cached == len(seqs[0]) and grown.computed == len(longer) - len(seqs[0])
    # ... and a sequence that shares only part of an entry (a different continuation) reuses it
    branch = _ids(cached, PROMPT, "Tom has 3 + 4 = 8 apples.")
    (other,) = cached.encode_sequences([branch])
    common = next(i for i, (a, b) in enumerate(zip(branch, seqs[0], strict=False)) if a != b)
    assert other.cached == common
    for got, seq in ((grown, longer), (other, branch)):
        (want,) = plain.encode_sequences([seq])
        assert torch.allclose(got.hidden, want.hidden, atol=ATOL)


def test_a_sequence_already_held_still_computes_its_last_token(backbones):
    cached, plain = backbones
    seq = _ids(cached, PROMPT, ANSWERS[2])
    cached.encode_sequences([seq])
    (again,) = cached.encode_sequences([seq])
    assert (again.computed, again.cached) == (1, len(seq) - 1)
    assert torch.allclose(again.hidden, plain.encode_sequences([seq])[0].hidden, atol=ATOL)


def test_probe_scores_do_not_depend_on_the_cache(backbones):
    cached, plain = backbones
    cached.prefix_cache.clear()
    outcome = (ASSETS / "default", [OutcomeItem(PROMPT, a) for a in ANSWERS])
    steps = ("Tom has 3 apples.\n\n", "He buys 4 more.\n\n", "3 + 4 = 7. The answer is 7.")
    process_items = [ProcessItem(PROMPT, steps[:n]) for n in (1, 2, 3)]
    process_items.append(ProcessItem(PROMPT, (*steps[:2], "3 + 4 = "), partial=True))

    def both(directory, call):
        with_cache = ProbeReward("a", directory, cached)
        without = ProbeReward("b", directory, plain)
        return asyncio.run(call(with_cache)), asyncio.run(call(without))

    hit, miss = both(outcome[0], lambda r: r.score(outcome[1]))
    assert hit.scores == pytest.approx(miss.scores, abs=1e-4)
    assert hit.tokens < miss.tokens and hit.tokens + hit.cached_tokens == miss.tokens
    hit, miss = both(ASSETS / "default_prm", lambda r: r.score_steps(process_items))
    for a, b in zip(hit.scores, miss.scores, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    assert hit.tokens < miss.tokens / 2  # every item extends the first one's prefix


def test_cache_is_bounded_in_bytes_and_keeps_layers_apart(backbones):
    cached, _ = backbones
    small = Backbone(cached.model_dir, prefix_cache_bytes=3 * 2**20)
    small._model, small._tokenizer = cached._model, cached._tokenizer
    seqs = [_ids(cached, PROMPT, a) for a in ANSWERS]
    small.encode_sequences(seqs)
    assert 0 < small.prefix_cache.bytes <= 3 * 2**20
    assert len(small.prefix_cache) < len(seqs)  # the oldest were evicted
    (other_layer,) = small.encode_sequences(seqs[-1:], layer=10)
    assert other_layer.cached == 0  # hidden states of another layer are not those held


def test_server_setting_sizes_the_shared_backbone_cache(default_model_dir: str):
    from winnow.rewards.registry import build_rewards, default_configs
    from winnow.settings import Settings

    assert Settings().reward_prefix_cache_mib == 512
    rewards = build_rewards(
        default_configs(True), default_model_dir=default_model_dir, prefix_cache_bytes=0
    )
    outcome, process = rewards.get("default"), rewards.get("default_prm")
    assert isinstance(outcome, ProbeReward) and isinstance(process, ProbeReward)
    assert outcome.backbone is process.backbone  # one set of weights, one cache
    assert outcome.backbone.prefix_cache.max_bytes == 0
