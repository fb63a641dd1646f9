"""A prompt's ids carry the tokenizer's BOS once: a chat template that writes ``<bos>`` itself
(Gemma, Llama 3) is not given a second one by the engine, the probe's backbone or the features a
probe is trained on (``winnow.models.tokens``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.tiny_tokenizers import llama3
from winnow.engine.vllm_local import VllmEngine
from winnow.models.tokens import prompt_ids, special_prefix, with_prefix


def test_a_chat_that_writes_its_bos_gets_no_second_one(tmp_path: Path) -> None:
    tok = llama3(tmp_path / "tok")
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    assert special_prefix(tok) == [bos]
    chat = [{"role": "user", "content": "Calculate 5 - 3 + 6."}]
    rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<|begin_of_text|>")
    # the tokenizer itself would double it
    assert tok.encode(rendered, add_special_tokens=True)[:2] == [bos, bos]
    ids = prompt_ids(tok, rendered)
    assert ids.count(bos) == 1 and ids[0] == bos
    # the ids the model was trained on: the template tokenized by transformers' chat path
    trained = tok.apply_chat_template(
        chat, tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert ids == list(trained)
    # a raw prompt still gets its BOS
    assert prompt_ids(tok, "Calculate 5 - 3.")[0] == bos
    assert prompt_ids(tok, "Calculate 5 - 3.")[1:] == tok.encode(
        "Calculate 5 - 3.", add_special_tokens=False
    )


def test_with_prefix_adds_only_what_is_missing() -> None:
    assert with_prefix([1], [1, 5, 6]) == [1, 5, 6]
    assert with_prefix([1], [5, 6]) == [1, 5, 6]
    assert with_prefix([], [5, 6]) == [5, 6]
    assert with_prefix([1, 2], [1, 5]) == [1, 2, 1, 5]


def test_the_engine_tokenizes_a_rendered_chat_with_one_bos(tmp_path: Path) -> None:
    tok = llama3(tmp_path / "tok")
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    engine = VllmEngine.__new__(VllmEngine)  # its tokenizer only: no vLLM is started
    engine._tokenizer, engine._special_prefix = tok, special_prefix(tok)
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Hi."}], tokenize=False, add_generation_prompt=True
    )
    with_specials = asyncio.run(engine.tokenize(rendered, add_special_tokens=True))
    assert with_specials.count(bos) == 1
    assert asyncio.run(engine.tokenize("Hi.", add_special_tokens=True))[0] == bos
    assert bos not in asyncio.run(engine.tokenize("Hi.", add_special_tokens=False))
