"""A backbone whose tokenizer puts BOS before a text (Gemma) gets it before the prompt only; one
that puts nothing (SmolLM) encodes as before."""

from __future__ import annotations

from winnow.rewards.backbone import Backbone, special_prefix
from winnow.rewards.probe import process_positions


class CharTokenizer:
    """One id per character (its code point), and ``bos`` first when special tokens are added."""

    def __init__(self, bos: int | None) -> None:
        self.bos = bos

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [ord(c) for c in text]
        return [self.bos, *ids] if add_special_tokens and self.bos is not None else ids


def _backbone(bos: int | None) -> Backbone:
    backbone = Backbone("unused")
    backbone._model, backbone._tokenizer = object(), CharTokenizer(bos)  # load() is a no-op now
    backbone._prefix = special_prefix(backbone._tokenizer)
    return backbone


def test_bos_goes_before_the_prompt_only():
    backbone = _backbone(bos=2)
    assert special_prefix(backbone.tokenizer) == [2]
    ids, ends = backbone.encode_segments(["ab", "c", "de"])
    assert ids == [2, ord("a"), ord("b"), ord("c"), ord("d"), ord("e")]
    assert ends == [2, 3, 5]
    job = process_positions(backbone, "ab", ["c", "de"], "last")
    assert job.ids == tuple(ids) and job.positions == (3, 5)


def test_no_prefix_encodes_as_before():
    backbone = _backbone(bos=None)
    assert special_prefix(backbone.tokenizer) == []
    assert backbone.encode_segments(["ab", "c"]) == ([ord("a"), ord("b"), ord("c")], [1, 2])
