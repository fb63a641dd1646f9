"""A tiny random causal LM with a character-level tokenizer and a chat template, saved as a model
directory: what reward training and probe rewards read with transformers, in a second, with no
download and no built default model; and a copy of it without the chat template (a base model)."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def tiny_lm(directory: Path, *, hidden: int = 32, seed: int = 0) -> Path:
    """Write a 2-layer Llama of width ``hidden`` (random weights from ``seed``) and its
    tokenizer (one token per printable character) to ``directory``."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = ["<pad>", "<eos>", *dict.fromkeys(string.printable)]
    vocab = {c: i for i, c in enumerate(chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()  # token ids decode to the text (no space between characters)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(vocab),
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        max_position_embeddings=512,
        initializer_range=0.2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def without_chat_template(model: Path, directory: Path) -> Path:
    """A copy of the model directory ``model`` whose tokenizer has no chat template: a base
    model, as Gemma 3 270M is (transformers writes the template to ``chat_template.jinja`` or
    into ``tokenizer_config.json``; neither is kept)."""
    shutil.copytree(model, directory)
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    config = directory / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data, indent=2) + "\n")
    return directory
