"""The two answer sets reward training reads: the training-split samples journal and the quality
benchmark's stored answers (evaluation split), with the verifier's labels."""

from __future__ import annotations

from pathlib import Path

import torch

from winnow.settings import default_data_dir
from winnow.train.samples import QuestionSamples, from_quality_rows, is_right, read_journal
from winnow.train.tasks import problems

DATA = Path(__file__).resolve().parent / "data"
"""The default model's training data, shipped with the package (an installed wheel can train):
the samples journal, the Monte-Carlo step journals and the quality benchmark's stored answers."""
TRAIN_JOURNAL = DATA / "samples.jsonl"
BENCH_ROWS = DATA / "quality.rows.jsonl"
TASKS = ("add_sub_1digit", "mul_1digit")  # what rewards are trained and benchmarked on


def feature_dir() -> Path:
    return default_data_dir() / "train-reward" / "features"


def bench_rows(path: Path = BENCH_ROWS, per_task: int = 100) -> list[QuestionSamples]:
    """The quality benchmark's 200 problems x 32 answers (its own problem list gives the gold)."""
    gold = {p.question: (p.task, p.answer) for t in TASKS for p in problems(t, "eval", per_task)}
    return from_quality_rows(path, gold)


def train_rows(path: Path = TRAIN_JOURNAL) -> list[QuestionSamples]:
    return read_journal(path)


def labels(rows: list[QuestionSamples]) -> torch.Tensor:
    """1 where the verifier accepts the sample's final answer, per sample in row order."""
    out = [int(is_right(s.text, q.gold)) for q in rows for s in q.samples]
    return torch.tensor(out, dtype=torch.long)


def question_index(rows: list[QuestionSamples]) -> torch.Tensor:
    return torch.tensor([qi for qi, q in enumerate(rows) for _ in q.samples], dtype=torch.long)
