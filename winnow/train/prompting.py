"""How `winnow train fit` asks the policy a question: the chat its own template renders, or, for a
base model that has no chat template (Gemma 3 270M, any pretrained-only checkpoint), a raw
completion prompt: ``--prompt-template TEXT`` with the question in it
(``TEXT.format(question=...)``).

A completion prompt is sent as is (no chat template; the engine and a server's ``/v1/completions``
put the tokenizer's BOS before it once, as the features read it: :mod:`winnow.models.tokens`), and
is what the journal stores. A reward fitted on such prompts knows them only: requests must send the
same text as a completion prompt for its figures and its domain to apply.
"""

from __future__ import annotations

import re
import shlex
from string import Formatter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from winnow.train.questions import QuestionRow

Ask = list[dict[str, str]] | str
"""What the policy is asked: a chat (rendered by the model's template) or a completion prompt."""

EXAMPLE = "Question: {question}\nAnswer:"
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def check_template(template: str) -> str:
    """``template`` when it places the question (``{question}``, once or more) and nothing else;
    ``ValueError`` otherwise (a literal brace is written ``{{`` or ``}}``, as in ``str.format``)."""
    try:
        fields = _fields(template)
    except ValueError as exc:
        raise ValueError(
            f"--prompt-template {template!r}: {exc} (write a literal brace as {{{{ or }}}})"
        ) from None
    if "{question}" not in fields:
        raise ValueError(
            f"--prompt-template {template!r} has no {{question}} (where each question goes), "
            f"e.g. {shell_form(EXAMPLE)}"
        )
    others = sorted(set(fields) - {"{question}"})
    if others:
        raise ValueError(
            f"--prompt-template {template!r}: only {{question}} is filled in, not "
            f"{', '.join(others)} (write a literal brace as {{{{ or }}}})"
        )
    return template


def _fields(template: str) -> list[str]:
    """The replacement fields of ``template`` as written (``{question}``, ``{0}``, ``{x!r}``)."""
    out = []
    for _, name, spec, conv in Formatter().parse(template):
        if name is not None:
            out.append(
                "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            )
    return out


def template_prompt(template: str, row: QuestionRow) -> str:
    """The completion prompt ``row`` is asked with. A row given as ``messages`` must be one user
    message (its content is the question): a system prompt or earlier turns have no place in a raw
    prompt, and dropping them would ask another question than the file's."""
    if row.messages is not None and [t.role for t in row.messages] != ["user"]:
        roles = ", ".join(t.role for t in row.messages)
        raise ValueError(
            f"with --prompt-template a question is one text, but the question {row.text!r} is "
            f'given as messages ({roles}): give it as one user message or as "question"'
        )
    return template.format(question=row.text)


def ask_of(row: QuestionRow, template: str | None) -> Ask:
    """What the policy is asked for ``row``: its chat, or its completion prompt."""
    return row.chat if template is None else template_prompt(template, row)


def require_chat_template(model: str) -> None:
    """Refuse, before anything is sampled, a model whose tokenizer has no chat template (a base
    model): its questions cannot be rendered as chats, only asked as completion prompts."""
    from transformers import AutoTokenizer

    if AutoTokenizer.from_pretrained(model).chat_template is None:
        raise ValueError(
            f"the model at {model} has no chat template (a base model?): give --prompt-template "
            f"{shell_form(EXAMPLE)}"
        )


def unescape_option(text: str) -> str:
    r"""``--prompt-template`` as typed: ``\n``, ``\t`` and ``\\`` are a newline, a tab and a
    backslash (a shell's single quotes keep them as two characters); any other backslash stays."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), text, flags=re.DOTALL)


def escape_option(text: str) -> str:
    """The option's text that :func:`unescape_option` reads as ``text``."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def shell_form(text: str) -> str:
    """``text`` as a shell argument of ``--prompt-template`` (quoted, newlines as ``\\n``)."""
    return shlex.quote(escape_option(text))
