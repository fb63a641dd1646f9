"""A fit's journal seeded with answers sampled before: `winnow train fit --seed-journal FILE`.

A journal of :class:`~winnow.train.samples.QuestionSamples` lines (another fit's
``samples.jsonl``, or a `winnow train samples` journal such as the shipped
``winnow/train/data/samples.jsonl``) answers the fit's questions it holds, so they are not sampled
again. A stored record is a row's when its ``question`` is the row's id (a fit's journal) or the
bare task question that the row asks with the task instruction (`winnow train samples` asks
:func:`winnow.train.tasks.messages`). It is imported only when

* its prompt is exactly what the fit asks the row with: the model's chat template's rendering of
  the row's chat, or, with ``--prompt-template``, the template with the question in it (the text
  the features are read on),
* its gold answer is the row's answer,
* it holds ``n`` answers, none longer than ``max_tokens`` tokens, every one cut at the limit
  exactly ``max_tokens`` long, and every answer's token ids (where stored) decode with the model's
  tokenizer to its text (a text cut inside a character at the limit excepted);

one record that fails refuses the whole import (nothing is written). What a journal does not
show (the temperature, the seed, the weights that sampled it) is the caller's declaration: the
fit's options, recorded as declared in ``OUT/fit.json`` (``sampling.seeded_from``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from winnow.train.prompting import template_prompt
from winnow.train.questions import QuestionRow, chat_id
from winnow.train.samples import QuestionSamples, read_journal, resume
from winnow.train.tasks import messages

CHECKED = (
    "each imported record's prompt is the fit's prompt for the question (the model's chat "
    "template's rendering, or --prompt-template's); its gold is the question's answer; it holds "
    "n answers; token counts fit max_tokens (answers cut at the limit are exactly max_tokens "
    "long); token ids decode to the texts"
)
DECLARED = (
    "temperature and seed are the fit's options, not read from the journal; the model hashes "
    "are the model directory's now, not of the weights that sampled the journal"
)
PER_QUESTION_SEED = (
    "as the journal's sampler derived it from seed: `winnow train samples` seed * 1000003 + the "
    "question's index in its list; `winnow train fit` seed * 1000003 + a hash of its id"
)


class Seeded(BaseModel):
    """What one import did (appended to ``fit.json``'s ``sampling.seeded_from``)."""

    model_config = ConfigDict(extra="forbid")

    journal: str
    sha256: str
    imported: int
    already: int  # the fit's questions its journal held before
    missing: int  # the fit's questions neither journal holds: sampled by the fit
    unused: int  # stored records that are none of the fit's questions
    checked: str = CHECKED
    declared: str = DECLARED
    per_question_seed: str = PER_QUESTION_SEED


def seed_journal(
    rows: Sequence[QuestionRow],
    source: Path,
    journal: Path,
    *,
    model: str,
    n: int,
    max_tokens: int,
    prompt_template: str | None = None,
) -> Seeded:
    """Import into ``journal`` the records of ``source`` that answer ``rows`` and are not in
    ``journal`` yet, after checking every one of them (module docstring); ``ValueError`` naming
    the first records that fail, with nothing written. ``prompt_template``: the fit asks each
    question as this completion prompt (a stored prompt must be it), not as a chat."""
    stored = read_journal(source)
    if not stored:
        raise ValueError(f"--seed-journal {source}: no records")
    by_id: dict[str, QuestionSamples] = {}
    for record in stored:
        for key in (record.question, chat_id(messages(record.question))):
            by_id.setdefault(key, record)
    have = {r.question for r in resume(journal, QuestionSamples.from_json)}
    todo = [row for row in rows if row.id not in have]
    matched = [(row, by_id[row.id]) for row in todo if row.id in by_id]
    if matched:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)

        def render(row: QuestionRow) -> tuple[str, str]:
            """The prompt the fit asks ``row`` with, and what renders it."""
            if prompt_template is not None:
                return template_prompt(prompt_template, row), "--prompt-template's rendering"
            chat = tokenizer.apply_chat_template(
                row.chat, tokenize=False, add_generation_prompt=True
            )
            return str(chat), "the model's rendering"

        failed = [
            f"{row.text!r}: {problem}"
            for row, record in matched
            if (problem := _problem(row, record, render, tokenizer.decode, n, max_tokens))
        ]
        if failed:
            raise ValueError(
                f"--seed-journal {source}: {len(failed)} of the {len(matched)} stored questions "
                f"do not match this fit (nothing imported); {'; '.join(failed[:3])}"
            )
        with journal.open("a") as f:
            for row, record in matched:
                line = QuestionSamples(row.task or "", row.id, row.answer, record.prompt,
                                       record.samples)  # fmt: skip
                f.write(json.dumps(line.to_json()) + "\n")
    used = {id(by_id[row.id]) for row in rows if row.id in by_id}
    return Seeded(
        journal=str(source),
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
        imported=len(matched),
        already=len(rows) - len(todo),
        missing=len(todo) - len(matched),
        unused=len(stored) - len(used),
    )


def _problem(
    row: QuestionRow,
    record: QuestionSamples,
    render: Callable[[QuestionRow], tuple[str, str]],
    decode: Callable[..., Any],
    n: int,
    max_tokens: int,
) -> str | None:
    """Why ``record`` is not an answer set this fit would have sampled for ``row``, or None."""
    prompt, by = render(row)
    if record.prompt != prompt:
        return f"stored prompt {record.prompt!r} is not {by} {prompt!r}"
    if record.gold != row.answer:
        return f"stored gold {record.gold!r} is not the answer {row.answer!r}"
    if len(record.samples) != n:
        return f"{len(record.samples)} stored answers, not n={n}"
    for i, sample in enumerate(record.samples):
        if sample.token_ids is None:
            continue
        count, cut = len(sample.token_ids), sample.finish_reason == "length"
        if count > max_tokens or (cut and count != max_tokens):
            return (
                f"answer {i} has {count} tokens (finish {sample.finish_reason}): not sampled "
                f"with max_tokens={max_tokens}"
            )
        text = str(decode(sample.token_ids, skip_special_tokens=True))
        partial = cut and text.startswith(sample.text) and "\ufffd" in text[len(sample.text) :]
        if text != sample.text and not partial:
            return f"answer {i}'s token ids decode to {text!r}, not its text {sample.text!r}"
    return None
