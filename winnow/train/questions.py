"""The questions a reward is trained on: a JSONL file of the user's, or a named task set.

A file holds one JSON object a line::

    {"question": "Calculate 5 - 3 + 6.", "answer": "8"}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}],
     "answer": "8", "group": "sum-17"}

``question`` is asked as one user message, ``messages`` as they are (the policy's chat template
renders them); ``answer`` is what the checker compares a response with (the verifier reads a bare
answer or a solution ending ``#### 42``); ``group`` (optional) names the problem a question
belongs to, so that its other wordings stay on the same side of the split
(:mod:`winnow.train.problem_keys`); ``task`` (optional) a family name reported on the card.
Blank lines and lines starting with ``#`` are skipped; a malformed line is an error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from winnow.train.problem_keys import problem_key


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class QuestionRow(BaseModel):
    """One line of a questions file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str | None = Field(None, min_length=1)
    messages: tuple[Turn, ...] | None = Field(None, min_length=1)
    answer: str = Field(min_length=1)
    group: str | None = None
    task: str | None = None

    @field_validator("answer", "group", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return str(value) if number else value

    @model_validator(mode="after")
    def _one_source(self) -> QuestionRow:
        if (self.question is None) == (self.messages is None):
            raise ValueError("give exactly one of 'question' and 'messages'")
        if self.messages is not None and not any(t.role == "user" for t in self.messages):
            raise ValueError("'messages' has no user message")
        return self

    @property
    def text(self) -> str:
        """The question's text: ``question``, or the last user message."""
        if self.question is not None:
            return self.question
        assert self.messages is not None
        return next(t.content for t in reversed(self.messages) if t.role == "user")

    @property
    def chat(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return [t.model_dump() for t in self.messages]
        return [{"role": "user", "content": self.text}]

    @property
    def id(self) -> str:
        """What identifies the question in the journal: its text, or its messages as JSON."""
        if self.question is not None:
            return self.question
        return chat_id(self.chat)

    @property
    def key(self) -> str:
        return problem_key(self.text, self.group)


def chat_id(chat: list[dict[str, str]]) -> str:
    """The journal id of a question asked as ``chat`` (messages): the chat as sorted JSON."""
    return json.dumps(chat, ensure_ascii=False, sort_keys=True)


def read_questions(path: Path) -> list[QuestionRow]:
    """The file's questions, first occurrence of each kept; ``ValueError`` naming a bad line."""
    rows: dict[str, QuestionRow] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = QuestionRow.model_validate_json(line)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"{path}:{number}: {problems}") from None
        rows.setdefault(row.id, row)
    if not rows:
        raise ValueError(f"{path}: no questions")
    return list(rows.values())


def task_questions(tasks: Sequence[str], per_task: int, seed: int = 0) -> list[QuestionRow]:
    """Up to ``per_task`` distinct questions of each named reasoning-gym task set
    (:data:`winnow.train.tasks.TASKS`), both sides of the split, interleaved across tasks; asked
    with the instruction the default reward was trained with."""
    import reasoning_gym

    from winnow.train.tasks import TASKS, messages

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task set(s) {unknown}; known: {', '.join(TASKS)}")
    lists = []
    for task in tasks:
        name, config = TASKS[task]
        seen: dict[str, QuestionRow] = {}
        data = reasoning_gym.create_dataset(name, size=max(4 * per_task, 50), seed=seed, **config)
        for item in data:
            question = str(item["question"])
            if question not in seen and len(seen) < per_task:
                seen[question] = QuestionRow(
                    messages=tuple(Turn.model_validate(m) for m in messages(question)),
                    answer=str(item["answer"]),
                    task=task,
                )
        lists.append(list(seen.values()))
    out: list[QuestionRow] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out
