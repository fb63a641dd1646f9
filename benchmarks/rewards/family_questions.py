"""A question family as a user's questions file (JSONL), for `winnow train fit --questions` (#31).

The families a reward is tried on beyond the default model's training tasks, written the way a
user brings questions (``{"question", "answer", "task"}`` per line, the question as the user
asks it, no winnow instruction appended):

* ``products``: reasoning-gym's products, ``Solve the following multiplication: 7 * 12. Give
  only the result as your final answer.``, one factor of one digit, the other of one or two
  (the two orders of one product are one problem key: they never straddle the split);
* ``leg_counting``: reasoning-gym's leg counting (a word problem).

    python -m benchmarks rewards family_questions --family products --count 240 --out Q.jsonl
    winnow train fit --model MODEL_DIR --questions Q.jsonl --out OUT
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

FAMILIES = ("products", "leg_counting")
PRODUCTS_INSTRUCTION = "Give only the result as your final answer."  # reasoning-gym's


def _products(seed: int) -> Iterator[dict[str, str]]:
    """reasoning-gym's products question, one factor of one digit and the other of one or two
    (reasoning-gym draws one digit count for both factors: 1 x 2 digits never comes up)."""
    rng = random.Random(seed)
    while True:
        a, b = rng.randint(2, 9), rng.randint(2, 99)
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        question = f"Solve the following multiplication: {a} * {b}. {PRODUCTS_INSTRUCTION}"
        yield {"question": question, "answer": str(a * b)}


def _leg_counting(seed: int) -> Iterator[dict[str, str]]:
    import reasoning_gym

    for attempt in range(50):
        data = reasoning_gym.create_dataset("leg_counting", size=500, seed=seed + 7919 * attempt)
        for item in data:
            yield {"question": str(item["question"]), "answer": str(item["answer"])}


def family(name: str, count: int, seed: int = 0) -> list[dict[str, str]]:
    """``count`` distinct questions of the family (deterministic for a seed)."""
    source = {"products": _products, "leg_counting": _leg_counting}[name](seed)
    seen: dict[str, dict[str, str]] = {}
    for row in source:
        seen.setdefault(row["question"], {**row, "task": name})
        if len(seen) == count:
            return list(seen.values())
    raise ValueError(f"family {name!r} has fewer than {count} distinct questions ({len(seen)})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--family", choices=FAMILIES, required=True)
    p.add_argument("--count", type=int, default=240)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="the questions file to write")
    args = p.parse_args(argv)
    rows = family(args.family, args.count, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} {args.family} questions -> {args.out}")


if __name__ == "__main__":
    main()
