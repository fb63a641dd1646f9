"""Answers sampled from the policy, stored as a journal: the raw material of reward training.

One JSON line per question: the task, question, gold answer, the rendered chat prompt, and every
sampled response (text, token ids, finish reason). Lines are appended as questions finish, so an
interrupted run resumes where it stopped (questions already in the journal are skipped). Labels
are not stored: they are the verifier's verdict, recomputed when the data is read, so a fix of the
answer checker relabels old samples too.

The benchmark's own answers (``winnow/train/data/quality.rows.jsonl``) are read into the same
shape by :func:`from_quality_rows`, so every reward is judged on the same rows it is trained on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from winnow.answers.final import equivalent, extract_answer
from winnow.train.tasks import Problem, problems, split_of

if TYPE_CHECKING:
    from winnow.engine.base import Generation

T = TypeVar("T")


@dataclass(slots=True)
class Sample:
    text: str
    token_ids: list[int] | None = None  # None where the source did not keep them
    finish_reason: str | None = None


@dataclass(slots=True)
class QuestionSamples:
    task: str
    question: str
    gold: str
    prompt: str  # the rendered chat prompt the policy saw
    samples: list[Sample] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "question": self.question,
            "gold": self.gold,
            "prompt": self.prompt,
            "samples": [
                {"text": s.text, "token_ids": s.token_ids, "finish_reason": s.finish_reason}
                for s in self.samples
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuestionSamples:
        return cls(
            data["task"],
            data["question"],
            data["gold"],
            data["prompt"],
            [
                Sample(s["text"], s.get("token_ids"), s.get("finish_reason"))
                for s in data["samples"]
            ],
        )


def read_records(path: Path, parse: Callable[[dict[str, Any]], T]) -> list[T]:
    """Every record of a JSON-lines journal; a line cut short by an interrupted write is skipped
    (its question is redone)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(parse(json.loads(line)))
            except (ValueError, KeyError):
                continue
    return out


def resume(journal: Path, parse: Callable[[dict[str, Any]], T]) -> list[T]:
    """The records already in ``journal`` (created if missing), with a line cut short ended, so
    the next record appended starts afresh."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    if journal.exists() and journal.stat().st_size and not journal.read_bytes().endswith(b"\n"):
        with journal.open("a") as f:
            f.write("\n")
    return read_records(journal, parse)


class Record(Protocol):
    """A journal line: one question's record."""

    question: str

    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)


class Journal(Generic[R]):
    """A journal that concurrent tasks fill, one question's record each: the records it already
    holds (:attr:`done`; those questions are not asked again), and :meth:`append`, which writes a
    new one whole and prints a progress line every ``log_every`` records and at the last."""

    def __init__(
        self, path: Path, parse: Callable[[dict[str, Any]], R], questions: Sequence[str]
    ) -> None:
        self.path = path
        self.done: dict[str, R] = {r.question: r for r in resume(path, parse)}
        self.todo = [i for i, question in enumerate(questions) if question not in self.done]
        self.new: list[R] = []  # appended in this run
        self._started = time.monotonic()
        self._lock = asyncio.Lock()

    async def append(self, record: R, log_every: int, progress: Callable[[float], str]) -> None:
        """Write ``record``; ``progress(seconds since the start)`` is the line to print."""
        async with self._lock:
            with self.path.open("a") as f:
                f.write(json.dumps(record.to_json()) + "\n")
            self.done[record.question] = record
            self.new.append(record)
            if len(self.new) % log_every == 0 or len(self.new) == len(self.todo):
                print(progress(max(time.monotonic() - self._started, 1e-9)), flush=True)


def read_journal(path: Path) -> list[QuestionSamples]:
    return read_records(path, QuestionSamples.from_json)


def is_right(text: str, gold: str) -> bool:
    """The verifier's label: the response's final answer is equivalent to ``gold``."""
    answer = extract_answer(text)
    return answer is not None and equivalent(answer, gold)


async def sample_answers(
    engine: Any,
    messages: Sequence[Mapping[str, str]] | str,
    *,
    n: int,
    max_tokens: int,
    temperature: float,
    seed: int,
) -> tuple[str, tuple[int, ...], Generation]:
    """``n`` answers of the policy to one chat: the rendered prompt, its token ids, and the
    engine's generation (the prompt goes in as token ids, as the engine tokenized it).

    ``messages`` as text is a completion prompt (a base model's: no chat template), asked as is
    with the tokenizer's special prefix (BOS) once, as a server's ``/v1/completions`` reads a text
    prompt and as the features read it (:func:`winnow.models.tokens.prompt_ids`)."""
    from winnow.engine.base import SamplingSpec

    if isinstance(messages, str):
        prompt = messages
        ids = tuple(await engine.tokenize(prompt, add_special_tokens=True))
    else:
        prompt = await engine.apply_chat_template(messages)
        ids = tuple(await engine.tokenize(prompt))
    spec = SamplingSpec(prompt=ids, n=n, max_tokens=max_tokens, temperature=temperature, seed=seed)
    return prompt, ids, await engine.generate(spec)


def train_questions(tasks: Sequence[str], per_task: int, seed: int = 0) -> list[Problem]:
    """Up to ``per_task`` distinct training-split questions of each task (fewer if the task's
    training split has fewer), interleaved across tasks so that any prefix of the list (a run
    stopped early) holds the tasks in equal parts."""
    lists: list[list[Problem]] = []
    for task in tasks:
        count = per_task
        while count > 0:
            try:
                lists.append(problems(task, "train", count, seed=seed))
                break
            except ValueError:
                count -= max(1, count // 10)
    out: list[Problem] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


async def sample_questions(
    engine: Any,
    items: Sequence[Problem],
    journal: Path,
    *,
    n: int,
    max_tokens: int = 96,
    temperature: float = 0.7,
    seed: int = 0,
    concurrency: int = 4,
    log_every: int = 10,
) -> list[QuestionSamples]:
    """Sample ``n`` answers per question through ``engine``, appending each question to
    ``journal`` as it finishes; questions already there are kept and not asked again."""
    for p in items:
        if split_of(p.question) != "train":
            raise ValueError(f"refusing to train on an evaluation-split question: {p.question!r}")
    written = Journal(journal, QuestionSamples.from_json, [p.question for p in items])
    limit = asyncio.Semaphore(concurrency)

    def progress(seconds: float) -> str:
        finished = len(written.new)
        return (
            f"[samples] {len(written.done)}/{len(items)} questions "
            f"({finished} this run, {finished / seconds * 60:.1f}/min)"
        )

    async def one(index: int, problem: Problem) -> None:
        async with limit:
            prompt, _, generation = await sample_answers(
                engine, problem.messages, n=n, max_tokens=max_tokens, temperature=temperature,
                seed=seed * 1_000_003 + index,
            )  # fmt: skip
        record = QuestionSamples(
            problem.task,
            problem.question,
            problem.answer,
            prompt,
            [Sample(c.text, list(c.token_ids), c.finish_reason) for c in generation.completions],
        )
        await written.append(record, log_every, progress)

    await asyncio.gather(*(one(i, items[i]) for i in written.todo))
    return [written.done[p.question] for p in items]


def from_quality_rows(path: Path, gold: dict[str, tuple[str, str]]) -> list[QuestionSamples]:
    """The quality benchmark's journal as samples: every returned candidate of every problem, in
    candidate order (so the first k are the benchmark's N=k subset). ``gold`` maps a question to
    (task, gold answer); the prompt is not in the journal and is left empty (render it with the
    policy's chat template from the question)."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        task, answer = gold[row["question"]]
        cands = sorted(row["body"]["winnow"]["candidates"], key=lambda c: c["index"])
        out.append(
            QuestionSamples(
                task,
                row["question"],
                answer,
                "",
                [Sample(c["text"], None, c["finish_reason"]) for c in cands],
            )
        )
    return out


def flatten(rows: Iterable[QuestionSamples]) -> list[tuple[int, QuestionSamples, Sample]]:
    """(question index, question, sample) for every sample."""
    return [(qi, q, s) for qi, q in enumerate(rows) for s in q.samples]
