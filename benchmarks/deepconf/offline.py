"""DeepConf's figures from the recorded answers (``collect.py``): the offline confidence vote, the
online mode replayed on the recorded confidence curves, and confidence with the default reward,
each against majority vote, with paired bootstrap intervals over questions.

Every figure at N < 32 is the mean over ``--subsets`` random N-subsets (orders, for the online
mode) of each question's 32 answers. The online replay is exact, not a model of the engine:
with the same seeds the engine writes the same tokens up to its cut, and the cut is the first
position where the recorded curve's window mean falls below the threshold
(:func:`winnow.engine.confidence.first_cut`, the engine's own rule on the same float32 values;
``tests/engine/test_deepconf_engine.py`` checks it on the live engine). A cut trace costs its
tokens up to the cut plus the sentinel, and does not vote.

Settings are chosen on the ``tune`` set only (every variant tried is counted in the report);
the evaluation sets are scored once with the chosen ones. ``fresh`` questions that are the same
expression as a question the default reward was trained on (brackets and double negation
aside: :func:`winnow.train.problem_keys.problem_key`) are left out in a second report.

    python -m benchmarks deepconf offline
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import bootstrap, md_table, paired_diff
from winnow.answers.final import equivalent
from winnow.engine.confidence import first_cut
from winnow.strategies.parts.confidence import (
    filter_and_vote,
    trace_confidence,
    warmup_threshold,
    weighted_vote,
)
from winnow.train.problem_keys import problem_key

HERE = common.results_dir("deepconf")
NS = (8, 16, 32)
WINDOWS = (4, 8, 16, 32)
STATISTICS = ("lowest_group", "bottom_10", "tail", "mean")
ETAS = (0.1, 0.5, 0.9)
TAIL = 16


@dataclass
class Trace:
    group: int | None  # answer group within the question (None: no answer)
    correct: bool
    tokens: int  # generated, EOS included
    score: float | None  # the default reward's probability
    curve: list[float | None]


@dataclass
class Question:
    set: str
    question: str
    traces: list[Trace]
    near_duplicate: bool = False


# ---- reading the rows ----------------------------------------------------------------------------


def training_keys() -> set[str]:
    path = common.ROOT / "winnow" / "train" / "data" / "samples.jsonl"
    return {problem_key(json.loads(line)["question"]) for line in path.read_text().splitlines()}


def load(path: Path) -> list[Question]:
    trained = training_keys()
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        traces = [
            Trace(
                group=c["group"],
                correct=c["answer"] is not None and equivalent(c["answer"], row["gold"]),
                tokens=int(c["tokens"]),
                score=c["score"],
                curve=list(c["curve"] or []),
            )
            for c in row["candidates"]
        ]
        near = row["set"] == "fresh" and problem_key(row["question"]) in trained
        out.append(Question(row["set"], row["question"], traces, near))
    return out


# ---- selection rules on a subset -----------------------------------------------------------------


def majority(traces: Sequence[Trace]) -> Trace | None:
    vote = weighted_vote([t.group for t in traces], [1.0] * len(traces))
    return _winner(traces, vote.leader)


def _winner(traces: Sequence[Trace], group: int | None) -> Trace | None:
    if group is None:
        return None
    return next(t for t in traces if t.group == group)


def best_score(traces: Sequence[Trace]) -> Trace | None:
    scored = [t for t in traces if t.score is not None]
    return max(scored, key=lambda t: t.score) if scored else None  # type: ignore[arg-type, return-value]


def reward_vote(traces: Sequence[Trace]) -> Trace | None:
    vote = weighted_vote([t.group for t in traces], [t.score for t in traces])
    return _winner(traces, vote.leader)


class Stats:
    """Each trace's confidence statistics per window (computed once)."""

    def __init__(self) -> None:
        self.cache: dict[tuple[int, int], Any] = {}

    def of(self, trace: Trace, window: int) -> Any:
        k = (id(trace), window)
        if k not in self.cache:
            self.cache[k] = trace_confidence(trace.curve, window, TAIL)
        return self.cache[k]


def confidence_vote(
    traces: Sequence[Trace], stats: Stats, window: int, statistic: str, eta: float,
    with_reward: bool = False,
) -> Trace | None:  # fmt: skip
    values = [stats.of(t, window).get(statistic) for t in traces]
    groups = [t.group for t in traces]
    if not with_reward:
        return _winner(traces, filter_and_vote(groups, values, eta).leader)
    from winnow.strategies.parts.confidence import keep_top

    pool = [i for i, g in enumerate(groups) if g is not None and values[i] is not None]
    kept = [pool[i] for i in keep_top([values[i] for i in pool], eta)]
    weights = [
        None if v is None or t.score is None else v * t.score
        for v, t in zip(values, traces, strict=True)
    ]
    return _winner(traces, weighted_vote(groups, weights, kept).leader)


# ---- the online mode, replayed -------------------------------------------------------------------


@dataclass(frozen=True)
class Online:
    window: int
    statistic: str
    eta: float
    warmup: int
    wave: int
    tau: float
    max_n: int = 32
    with_reward: bool = False


def replay(order: Sequence[Trace], s: Online, stats: Stats) -> tuple[Trace | None, int, int]:
    """DeepConf online on traces in this order: (choice, tokens generated, traces drawn)."""
    drawn: list[Trace] = []
    cut: list[bool] = []
    tokens = 0
    threshold: float | None = None

    def weight(t: Trace) -> float | None:
        value = stats.of(t, s.window).get(s.statistic)
        if value is None:
            return None
        if s.with_reward:
            return None if t.score is None else value * t.score
        return value

    def settled() -> bool:
        voters = [i for i, t in enumerate(drawn) if not cut[i]]
        vote = weighted_vote([drawn[i].group for i in voters], [weight(drawn[i]) for i in voters])
        return vote.leader is not None and vote.share >= s.tau

    position = 0
    size = s.warmup
    while position < min(s.max_n, len(order)):
        for t in order[position : position + size]:
            at = None if threshold is None else first_cut(t.curve, s.window, threshold)
            drawn.append(t)
            cut.append(at is not None)
            tokens += t.tokens if at is None else at + 1
        position += size
        if threshold is None:
            threshold = warmup_threshold([stats.of(t, s.window).lowest_group for t in drawn], s.eta)
        if settled():
            break
        size = s.wave
    voters = [i for i, t in enumerate(drawn) if not cut[i]]
    kept = [drawn[i] for i in voters]
    choice = confidence_vote(kept, stats, s.window, s.statistic, s.eta, s.with_reward)
    return choice, tokens, len(drawn)


@dataclass(frozen=True)
class Race:
    """N samples started at once and read as they finish (``race: true``): stop once at least
    ``min_n`` answered and either one has the reward's probability ``accept`` or the leader holds
    ``tau`` of the weights (confidence x reward); then choose the best-scored (``select`` best)
    or by the weighted vote."""

    window: int
    statistic: str
    eta: float
    min_n: int
    tau: float
    accept: float | None = None
    select: str = "best"
    n: int = 8
    threshold: float | None = None  # fixed: traces below it are ended by the engine
    quantile: float | None = None  # the tune traces' lowest-group quantile it was set at


def race_replay(traces: Sequence[Trace], s: Race, stats: Stats) -> tuple[Trace | None, float]:
    """(choice, the stop's share of the wait for all): samples that start together finish in
    order of length, so the answer comes at the stopping sample's length, best_of_n's at the
    longest one's (a proxy of latency: ``latency.py`` measures it)."""
    longest = max(t.tokens for t in traces)
    ends = {}
    for t in traces:  # a trace the engine ends stops at its cut (and its sentinel)
        at = None if s.threshold is None else first_cut(t.curve, s.window, s.threshold)
        ends[id(t)] = (t.tokens, False) if at is None else (at + 1, True)
    order = sorted(traces, key=lambda t: ends[id(t)][0])
    arrived: list[Trace] = []
    finished_at = 0
    for t in order:
        finished_at = ends[id(t)][0]
        if ends[id(t)][1]:
            continue  # cut: no answer, no vote
        arrived.append(t)
        if len(arrived) < s.min_n:
            continue
        if s.accept is not None and any(
            a.score is not None and a.score >= s.accept for a in arrived
        ):
            break
        weights = []
        for a in arrived:
            value = stats.of(a, s.window).get(s.statistic)
            weights.append(None if value is None or a.score is None else value * a.score)
        vote = weighted_vote([a.group for a in arrived], weights)
        if vote.leader is not None and vote.share >= s.tau:
            break
    if s.select == "best":
        choice = best_score(arrived)
    else:
        choice = confidence_vote(arrived, stats, s.window, s.statistic, s.eta, with_reward=True)
    return choice, finished_at / max(longest, 1)


def race_per_question(
    questions: Sequence[Question], s: Race, stats: Stats, subsets: int, seed: int = 0
) -> tuple[list[float], list[float]]:
    acc, share = [], []
    for q_index, q in enumerate(questions):
        rng = random.Random(seed * 100003 + q_index)
        a = w = 0.0
        for _ in range(subsets):
            choice, waited = race_replay(rng.sample(q.traces, s.n), s, stats)
            a += bool(choice is not None and choice.correct)
            w += waited
        acc.append(a / subsets)
        share.append(w / subsets)
    return acc, share


# ---- averaging over subsets ----------------------------------------------------------------------


def per_question(
    questions: Sequence[Question], n: int, rule: Callable[[Sequence[Trace]], Trace | None],
    subsets: int, seed: int = 0,
) -> list[float]:  # fmt: skip
    """Each question's accuracy under ``rule`` on random n-subsets (all 32 once at n = 32)."""
    out = []
    for q_index, q in enumerate(questions):
        rng = random.Random(seed * 100003 + q_index)
        draws = 1 if n >= len(q.traces) else subsets
        hits = 0
        for _ in range(draws):
            pick = q.traces if draws == 1 else rng.sample(q.traces, n)
            choice = rule(pick)
            hits += bool(choice is not None and choice.correct)
        out.append(hits / draws)
    return out


def online_per_question(
    questions: Sequence[Question], s: Online, stats: Stats, orders: int, seed: int = 0
) -> tuple[list[float], list[float], list[float]]:
    """Each question's (accuracy, tokens, traces) of the online mode over random orders."""
    acc, tokens, drawn = [], [], []
    for q_index, q in enumerate(questions):
        rng = random.Random(seed * 100003 + q_index)
        a = t = d = 0.0
        for _ in range(orders):
            order = rng.sample(q.traces, len(q.traces))
            choice, used, count = replay(order, s, stats)
            a += bool(choice is not None and choice.correct)
            t += used
            d += count
        acc.append(a / orders)
        tokens.append(t / orders)
        drawn.append(d / orders)
    return acc, tokens, drawn


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    diff, lo, hi = paired_diff(a, b)
    return {"diff": diff, "lo": lo, "hi": hi}


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    lo, hi = bootstrap(values)
    return {"mean": statistics.fmean(values), "lo": lo, "hi": hi}


# ---- choosing on the tune set --------------------------------------------------------------------


def choose_offline(tune: Sequence[Question], stats: Stats, subsets: int) -> tuple[dict, list]:
    base = statistics.fmean(per_question(tune, 32, majority, subsets))
    tried = []
    for window, statistic, eta in itertools.product(WINDOWS, STATISTICS, ETAS):

        def rule(ts, w=window, st=statistic, e=eta):
            return confidence_vote(ts, stats, w, st, e)

        acc = statistics.fmean(statistics.fmean(per_question(tune, n, rule, subsets)) for n in NS)
        tried.append({"window": window, "statistic": statistic, "eta": eta, "accuracy": acc})
    best = max(tried, key=lambda v: v["accuracy"])
    return {**best, "majority@32": base}, tried


def choose_online(
    tune: Sequence[Question], stats: Stats, offline: dict, orders: int
) -> tuple[Online, list]:
    """The cheapest online setting (tokens) whose tune accuracy is within one point of majority
    vote at 32; the window, statistic and eta are the offline choice's."""
    maj = per_question(tune, 32, majority, 1)
    full = statistics.fmean(sum(t.tokens for t in q.traces) for q in tune)
    tried = []
    for warmup, wave, tau, eta in itertools.product((4, 8), (4, 8), (0.9, 0.95), (0.1, 0.9)):
        s = Online(offline["window"], offline["statistic"], eta, warmup, wave, tau)
        acc, tokens, _ = online_per_question(tune, s, stats, orders)
        tried.append({"setting": s, "accuracy": statistics.fmean(acc),
                      "token_share": statistics.fmean(tokens) / full})  # fmt: skip
    good = [v for v in tried if v["accuracy"] >= statistics.fmean(maj) - 0.01]
    if good:
        best = min(good, key=lambda v: (v["token_share"], -v["accuracy"]))
    else:
        best = max(tried, key=lambda v: (v["accuracy"], -v["token_share"]))
    return best["setting"], tried


def choose_race(
    tune: Sequence[Question], stats: Stats, offline: dict, subsets: int
) -> tuple[Race, list]:
    """The fastest race (length share) whose tune accuracy is within a point of best_of_n@8
    (none: the most accurate)."""
    bon = statistics.fmean(per_question(tune, 8, best_score, subsets))
    tried = []
    window, statistic, eta = offline["window"], offline["statistic"], offline["eta"]
    lowest = [stats.of(t, window).lowest_group for q in tune for t in q.traces]
    known = [v for v in lowest if v is not None]
    thresholds = {None: None} | {q: float(np.quantile(known, q)) for q in (0.05, 0.1, 0.2)}
    grid = itertools.product(
        (2, 3, 4), (0.7, 0.8, 0.9, 0.99), (None, 0.3, 0.5), ("best", "vote"), thresholds
    )
    for min_n, tau, accept, select, quantile in grid:
        s = Race(window, statistic, eta, min_n, tau, accept, select, 8, thresholds[quantile],
                 quantile)  # fmt: skip
        acc, share = race_per_question(tune, s, stats, subsets)
        tried.append({"setting": s, "accuracy": statistics.fmean(acc),
                      "wait_share": statistics.fmean(share)})  # fmt: skip
    good = [v for v in tried if v["accuracy"] >= bon - 0.01]
    if good:
        best = min(good, key=lambda v: (v["wait_share"], -v["accuracy"]))
    else:
        best = max(tried, key=lambda v: (v["accuracy"], -v["wait_share"]))
    return best["setting"], tried


# ---- the report ----------------------------------------------------------------------------------


def evaluate(
    questions: Sequence[Question], stats: Stats, offline: dict, online: Online, race: Race,
    subsets: int, orders: int,
) -> dict[str, Any]:  # fmt: skip
    w, st, eta = offline["window"], offline["statistic"], offline["eta"]

    def conf(ts):
        return confidence_vote(ts, stats, w, st, eta)

    def conf_reward(ts):
        return confidence_vote(ts, stats, w, st, eta, with_reward=True)

    out: dict[str, Any] = {"questions": len(questions), "by_n": {}}
    for n in NS:
        maj = per_question(questions, n, majority, subsets)
        rows = {"majority": mean_ci(maj)}
        rules = (
            ("confidence_vote", conf),
            ("best_of_n", best_score),
            ("reward_vote", reward_vote),
            ("confidence_x_reward", conf_reward),
        )
        for name, rule in rules:
            acc = per_question(questions, n, rule, subsets)
            rows[name] = {**mean_ci(acc), "vs_majority": paired(acc, maj)}
            if name == "confidence_x_reward":
                bon = per_question(questions, n, best_score, subsets)
                rows[name]["vs_best_of_n"] = paired(acc, bon)
        out["by_n"][n] = rows
    maj32 = per_question(questions, 32, majority, 1)
    full = [float(sum(t.tokens for t in q.traces)) for q in questions]
    bon8 = per_question(questions, 8, best_score, subsets)
    acc, share = race_per_question(questions, race, stats, subsets)
    out["race_x_reward"] = {
        **mean_ci(acc),
        "vs_best_of_n@8": paired(acc, bon8),
        "wait_share": mean_ci(share),
    }
    with_reward = Online(**{**online.__dict__, "with_reward": True})
    for name, s in (("online", online), ("online_x_reward", with_reward)):
        acc, tokens, drawn = online_per_question(questions, s, stats, orders)
        out[name] = {
            **mean_ci(acc),
            "vs_majority@32": paired(acc, maj32),
            "token_share": statistics.fmean(tokens) / statistics.fmean(full),
            "token_share_ci": _ratio_ci(tokens, full),
            "traces": statistics.fmean(drawn),
        }
    return out


def _ratio_ci(
    num: Sequence[float], den: Sequence[float], rounds: int = 2000
) -> tuple[float, float]:
    rng = random.Random(0)
    n = len(num)
    ratios = []
    for _ in range(rounds):
        pick = [rng.randrange(n) for _ in range(n)]
        ratios.append(sum(num[i] for i in pick) / sum(den[i] for i in pick))
    ratios.sort()
    return ratios[int(0.025 * rounds)], ratios[int(0.975 * rounds) - 1]


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def interval(d: dict[str, float], key: str = "mean") -> str:
    return f"{pct(d[key])} [{pct(d['lo'])}, {pct(d['hi'])}]"


def signed(d: dict[str, float]) -> str:
    return f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def _race(r: dict[str, Any]) -> str:
    cut = (
        "no cut"
        if r["threshold"] is None
        else (f"cut below {r['threshold']:.3f} (the tune traces' {r['quantile']:.0%} quantile)")
    )
    return (f"min_n {r['min_n']}, tau {r['tau']}, accept {r['accept']}, "
            f"select {r['select']}, {cut}")  # fmt: skip


def report(summary: dict[str, Any]) -> str:
    off, on = summary["offline_choice"], summary["online_choice"]
    lines = [
        "# DeepConf: the policy's own confidence, offline and online",
        "",
        f"Command: `{summary['command']}`. Answers: `{summary['rows']}` ({summary['n']} per "
        f"question, recorded by `benchmarks/deepconf/collect.py`). Accuracy in %, 95% bootstrap "
        f"intervals over questions; N < 32 averaged over {summary['subsets']} random N-subsets "
        f"per question, the online mode over {summary['orders']} random orders.",
        "",
        f"Chosen on the tune set only ({summary['tune_questions']} training-split questions): "
        f"offline vote window {off['window']}, statistic {off['statistic']}, eta {off['eta']} "
        f"(of {summary['offline_variants']} variants); online warm-up {on['warmup']}, waves of "
        f"{on['wave']}, tau {on['tau']}, threshold eta {on['eta']} (of "
        f"{summary['online_variants']} variants, the cheapest within a point of majority@32); "
        f"race {_race(summary['race_choice'])} (of {summary['race_variants']}, the fastest "
        f"within a point of best_of_n@8).",
        "",
    ]
    for name, ev in summary["sets"].items():
        lines += [f"## {name} ({ev['questions']} questions)", ""]
        header = ["N", "majority", "confidence vote", "vs majority", "best_of_n (reward)",
                  "confidence x reward", "vs majority", "vs best_of_n"]  # fmt: skip
        rows = []
        for n, r in ev["by_n"].items():
            cr = r["confidence_x_reward"]
            vote = r["confidence_vote"]
            rows.append([n, interval(r["majority"]), interval(vote), signed(vote["vs_majority"]),
                         interval(r["best_of_n"]), interval(cr), signed(cr["vs_majority"]),
                         signed(cr["vs_best_of_n"])])  # fmt: skip
        lines += [*md_table(header, rows, "r" * len(header)), ""]
        rows = []
        for mode in ("online", "online_x_reward"):
            o = ev[mode]
            lo, hi = o["token_share_ci"]
            rows.append([mode.replace("_x_", " x "), interval(o), signed(o["vs_majority@32"]),
                         f"{pct(o['token_share'])} [{pct(lo)}, {pct(hi)}]",
                         f"{o['traces']:.1f}"])  # fmt: skip
        header = ["online (budget 32)", "accuracy", "vs majority@32",
                  "tokens, % of majority@32's", "traces drawn"]  # fmt: skip
        lines += md_table(header, rows, "lrrrr")
        r = ev["race_x_reward"]
        lines += [
            "",
            f"Race at N=8 with the reward ({_race(summary['race_choice'])}): accuracy "
            f"{interval(r)}, vs best_of_n@8 "
            f"{signed(r['vs_best_of_n@8'])}; the answer comes at "
            f"{interval(r['wait_share'])}% of the longest sample's length (latency proxy).",
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=Path, default=HERE / "samples.rows.jsonl")
    p.add_argument("--subsets", type=int, default=50)
    p.add_argument("--orders", type=int, default=20)
    p.add_argument("--out", type=Path, default=HERE / "offline")
    args = p.parse_args(argv)
    questions = load(args.rows)
    stats = Stats()
    tune = [q for q in questions if q.set == "tune"]
    offline, tried_off = choose_offline(tune, stats, args.subsets)
    online, tried_on = choose_online(tune, stats, offline, args.orders)
    race, tried_race = choose_race(tune, stats, offline, args.subsets)
    sets: dict[str, list[Question]] = {}
    for q in questions:
        if q.set != "tune":
            sets.setdefault(q.set, []).append(q)
    if "fresh" in sets:
        sets["fresh, not near a training question"] = [
            q for q in sets["fresh"] if not q.near_duplicate
        ]
    summary = {
        "command": common.command(__file__, sys.argv[1:] if argv is None else argv),
        "rows": common.shown(args.rows),
        "n": max(len(q.traces) for q in questions),
        "subsets": args.subsets,
        "orders": args.orders,
        "tune_questions": len(tune),
        "offline_choice": offline,
        "offline_variants": len(tried_off),
        "online_choice": online.__dict__,
        "online_variants": len(tried_on),
        "race_choice": race.__dict__,
        "race_variants": len(tried_race),
        "tried_race": [{**v, "setting": v["setting"].__dict__} for v in tried_race],
        "tried_offline": tried_off,
        "tried_online": [{**v, "setting": v["setting"].__dict__} for v in tried_on],
        "sets": {
            name: evaluate(qs, stats, offline, online, race, args.subsets, args.orders)
            for name, qs in sets.items()
        },
    }
    common.save(args.out, summary, report(summary), script=__file__, argv=argv)


if __name__ == "__main__":
    main()
