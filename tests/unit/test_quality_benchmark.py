"""The quality benchmark's offline scoring: selection rules on returned candidates."""

from __future__ import annotations

import argparse

from benchmarks.quality import run
from benchmarks.speculative import late_rejection as late
from winnow.train.tasks import Problem


def _candidate(i: int, answer: int | None, score: float, group: int | None) -> dict:
    return {
        "index": i,
        "text": f"The answer is {answer}." if answer is not None else "no idea",
        "score": score,
        "answer": None if answer is None else str(answer),
        "group": group,
        "finish_reason": "stop",
        "tokens": 5,
        "chosen": False,
    }


def test_rules_on_one_problem():
    cands = [
        _candidate(0, 3, 0.1, 0),
        _candidate(1, 4, 0.9, 1),
        _candidate(2, 3, 0.5, 0),
        _candidate(3, None, 0.95, None),
    ]
    cands[3]["chosen"] = True  # what the server's best-of-N picks
    body = {"winnow": {"candidates": cands}, "usage": {"winnow": {"reward_tokens": 40}}}
    rows = [{"problem": Problem("t", "q", "3"), "seconds": 1.0, "body": body}]
    args = argparse.Namespace(n=4, tasks=["add_sub_1digit"], reward="default", problems=1)
    out = run.summarise(rows, args, 1.0)
    at4 = {rule: out["accuracy"][rule]["4"]["accuracy"] for rule in run.RULES}
    assert at4 == {
        "sample": 1.0,  # candidate 0 says 3
        "majority": 1.0,  # 3 appears twice
        "best_of_n": 0.0,  # the top score has no answer
        "weighted_vote": 0.0,  # 0.9 for 4 beats 0.1 + 0.5 for 3
        "best_of_majority": 1.0,  # 4 was given once: only 3 (twice) passes the filter
        "pass@n": 1.0,
    }
    assert out["accuracy"]["best_of_n"]["2"]["accuracy"] == 0.0  # first two: 4 wins on score
    assert out["accuracy"]["majority"]["1"]["accuracy"] == 1.0
    assert out["server_choice_matches_offline_best"] == 1.0
    assert out["generated_tokens_per_problem"]["4"] == 20


def test_late_rejection_keeps_only_what_finished_within_the_cut():
    lengths, scores, right = (10, 30, 15), (0.2, 0.9, 0.5), [False, True, False]
    pairs = enumerate(zip(lengths, scores, strict=True))
    cands = run.to_candidates([dict(_candidate(i, i, s, i), tokens=t) for i, (t, s) in pairs])
    problem = argparse.Namespace(cands=cands, right=right)
    assert late.late_rejection(problem, 3, None) == (True, 55, False)  # best_of_n: the 0.9 one
    # the 30-token one is aborted at 21 tokens; the best that finished (0.5) is wrong
    assert late.late_rejection(problem, 3, 20) == (False, 10 + 21 + 15, False)
    assert late.late_rejection(problem, 3, 5) == (False, 18, True)  # none finished within 5
    assert late.late_rejection(problem, 1, 20) == (False, 10, False)  # the first n only
