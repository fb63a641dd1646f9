"""The shipped samples journal's questions as a questions file, for re-fitting `default` unsampled.

`winnow train samples` asked each question of ``winnow/train/data/samples.jsonl`` (800 questions
of the old hash split's training side, 32 answers each, max 96 tokens, temperature 0.7, seed 0)
as one user message with the task instruction (``winnow.train.tasks.messages``); this writes
them in that form, with their gold answers and task names, so that `winnow train fit` re-splits
them by problem key and imports their answers instead of sampling (#31 item 4):

    python -m benchmarks rewards refit_questions --out Q.jsonl
    winnow train fit --model MODEL_DIR --questions Q.jsonl \\
        --seed-journal winnow/train/data/samples.jsonl --n 32 --max-tokens 96 \\
        --temperature 0.7 --seed 0 --name default --out OUT

The fit refuses the import if a stored prompt is not the model's rendering of its question.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from winnow.train.datasets import TRAIN_JOURNAL
from winnow.train.samples import read_journal
from winnow.train.tasks import messages


def questions_file(journal: Path, out: Path) -> int:
    """Write ``out`` from ``journal``'s records (in its order); the number of questions."""
    lines = [
        json.dumps({"messages": messages(r.question), "answer": r.gold, "task": r.task})
        for r in read_journal(journal)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return len(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--journal", type=Path, default=TRAIN_JOURNAL, help="a samples journal")
    p.add_argument("--out", type=Path, required=True, help="the questions file to write")
    args = p.parse_args(argv)
    count = questions_file(args.journal, args.out)
    print(f"{count} questions -> {args.out}")


if __name__ == "__main__":
    main()
