"""Tokenizers of the reward families' kinds, built offline in code (no hub): a byte-level BPE
with Llama 3's pre-tokenizer and header tokens, one with Qwen2.5's ChatML tokens (and one with
Qwen3's template and think tokens), and a SentencePiece-style (Metaspace) BPE with Mistral's
``<s>`` as Math-Shepherd's has, in which ``ки`` is one token as in the real one. Each is trained
on a small corpus in a fraction of a second; every character of the texts the tests write is in
its alphabet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CORPUS = [
    "What is 2 + 2? First, 2 + 2 = 4. Check: 4 - 2 = 2, so it holds. So the answer is 4.",
    "Solve 3 * 5 - 1 step by step. 3 * 5 = 15. 15 - 1 = 14. The answer is 14.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "You are a careful tutor. Janet has 16 eggs; she eats 3 and bakes 4. How many are left?",
    "The quick brown fox jumps over the lazy dog. Therefore x = 7 and y = -3 (mod 11).",
    "Step 1: add the numbers. ки\nStep 2: divide by two. ки\nStep 3: the result is 9. ки",
    "Вопрос: сколько будет ки? Ответ: ки ки ки",
    "user\n\nHello.\n\nassistant\n\n+\n\nuser\n\nNext.\n\nassistant\n\n-\n\n",
]
ALPHABET_EXTRA = (
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ{}[]<>|_^~`'\"@#$%&"
)

# Llama 3's pre-tokenizer split (tokenizer.json of Meta-Llama-3.1): "\n\n" is one piece, "+" another
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

LLAMA31_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}{{- 'Today Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
"""Llama 3.1's chat template without its tool-calling branches (the same text for plain turns)."""

QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Qwen2.5's chat template without its tool-calling branches."""

QWEN3_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}"
    "{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if ns.multi_step_tool and message.role == 'user' %}"
    "{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- set content = message.content %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set reasoning_content = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n')"
    ".split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index %}"
    "{%- if loop.last or (not loop.last and reasoning_content) %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + "
    "'\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
"""Qwen3's chat template without its tool-calling branches: the last assistant turn after the
last user message is written with a (here empty) ``<think>`` block before its content."""


def _train(model: Any, pre: Any, specials: Sequence[str], vocab: int, alphabet: list[str]) -> Any:
    from tokenizers import Tokenizer, trainers

    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=list(specials), initial_alphabet=alphabet, min_frequency=1
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    return tokenizer


def _saved(tokenizer: Any, directory: Path) -> Any:
    """The tokenizer as a user loads it from ``directory`` (transformers may rebuild parts of it
    on loading; the tests read the checkpoint as its users do)."""
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel.alphabet()


def llama3(directory: Path, *, pad: bool = True) -> Any:
    """Llama 3.1-style: byte-level BPE, ``<|begin_of_text|>`` added before every text, the header
    and end-of-turn tokens, Llama 3.1's chat template."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"]  # fmt: skip
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    raw = _train(models.BPE(), pre, specials, 700, _byte_alphabet())
    raw.decoder = decoders.ByteLevel()
    bos = raw.token_to_id("<|begin_of_text|>")
    raw.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>" if pad else None,
    )
    tokenizer.chat_template = LLAMA31_TEMPLATE
    return _saved(tokenizer, directory)


def qwen25(
    directory: Path,
    *,
    extra: Sequence[str] = (),
    bos: str | None = None,
    template: str = QWEN25_TEMPLATE,
    added: Sequence[str] = (),
) -> Any:
    """Qwen2.5-style: byte-level BPE, ChatML tokens, no BOS added, Qwen2.5's chat template;
    ``extra`` special tokens (Qwen2.5-Math-PRM's ``<extra_0>``), ``added`` plain added tokens."""
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra]
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw = _train(models.BPE(), pre, specials, 700, _byte_alphabet())
    raw.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=bos,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(extra) or None,
    )
    if added:
        tokenizer.add_tokens(list(added))
    tokenizer.chat_template = template
    return _saved(tokenizer, directory)


def qwen3(directory: Path) -> Any:
    """Qwen3-style: Qwen2.5's tokens plus ``<think>`` and ``</think>`` (added, not special) and
    Qwen3's chat template (the base of Skywork-Reward-V2-Qwen3)."""
    return qwen25(directory, template=QWEN3_TEMPLATE, added=["<think>", "</think>"])


def mistral(directory: Path) -> Any:
    """Mistral-7B-style (Math-Shepherd's): SentencePiece-like BPE (``▁`` for spaces, one before
    the text), ``<s>`` added before every text; ``ки`` and ``▁ки`` are single tokens."""
    from tokenizers import decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    pre = pre_tokenizers.Sequence([  # a newline is a byte of its own there (<0x0A>)
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
    ])  # fmt: skip
    chars = sorted(set("".join(CORPUS)) | set(ALPHABET_EXTRA) | {"▁", "\n"})
    raw = _train(models.BPE(unk_token="<unk>"), pre, specials, 700, chars)
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", raw.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    return _saved(tokenizer, directory)
