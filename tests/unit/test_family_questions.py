"""`benchmarks rewards family_questions`: a family as a user's questions file that `winnow train
fit` reads, with right answers and distinct questions."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.rewards import family_questions
from winnow.train.questions import read_questions


def test_products_are_distinct_right_and_read_as_a_questions_file(tmp_path: Path) -> None:
    out = tmp_path / "products.jsonl"
    family_questions.main(["--family", "products", "--count", "150", "--out", str(out)])
    rows = read_questions(out)
    assert len(rows) == 150 and len({r.text for r in rows}) == 150
    for row in rows:
        a, b = (int(x) for x in re.findall(r"\d+", row.text)[:2])
        assert row.answer == str(a * b) and min(a, b) < 10 and row.task == "products"
    # both orders of a product occur, and are one problem (key) for the split
    by_pair: dict[frozenset[str], set[str]] = {}
    for row in rows:
        pair = frozenset(re.findall(r"\d+", row.text)[:2])
        by_pair.setdefault(pair, set()).add(row.key)
    assert all(len(keys) == 1 for keys in by_pair.values())
    assert len({r.key for r in rows}) < 150
    assert family_questions.family("products", 150) == family_questions.family("products", 150)
