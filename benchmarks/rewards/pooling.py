"""Reward models on vLLM's pooling runner (issue #30): scoring throughput vs transformers, and
best-of-8 with a pooled outcome reward vs a naive client-side pipeline.

Two parts, each one run with its arms measured side by side, alternating:

* ``--part scoring``: one reward model, run by transformers (``"runner": "hf"``) and by vLLM's
  pooling runner in this process (``"runner": "pooling"``), scores 64 candidates of 100-300
  tokens (2-4 steps each) sharing one prompt of 100+ tokens, in one reward call. The PRM is the
  default model (SmolLM2-135M) read as a Math-Shepherd ``label_token`` PRM (tag " к", good
  "+", bad "-"; scores are meaningless, the cost is the figure); the outcome variant is a
  ``LlamaForSequenceClassification`` built from it (random score head, seed 0). Each rep uses a
  fresh prompt (no cache carries over between reps); the arms alternate which goes first.
  Figures: items/s and wall seconds per arm (median, 95% bootstrap interval over reps), the
  pooling/hf ratio of median items/s (paired bootstrap over reps), reward tokens computed and
  read from cache, and the largest score difference between the runners.
* ``--part pipeline``: ``best_of_n`` N=8 on ``winnow serve`` with that outcome reward on the
  pooling runner (in process) vs the naive client pipeline: one ``n=8`` chat request to a plain
  vLLM server of the policy, the 8 conversations rendered with the RM's chat template and sent
  as token ids to a vLLM pooling server of the RM (``POST /classify``), the client keeping the
  best. Same questions and seeds for both arms (vLLM and winnow sample candidate i with seed +
  i); per round each arm sends ``clients`` requests at once, the arm going first alternating.
  Figures per concurrency level: median latency per arm (95% bootstrap interval) and the
  winnow/naive ratio of median latencies (paired bootstrap over questions), tokens generated and
  reward tokens per request.

Candidate lengths are drawn uniformly in 100-300 tokens and met to within a sentence (about
-10..+20 tokens; each candidate's measured length is in the rows). The reward model of the
outcome variant and of the pipeline is built once under ``<data dir>/bench/smollm2-135m-seqcls``.
The naive side's RM server gets the engine settings winnow gives its in-process pooling engine
(:func:`winnow.rewards.pooling.engine_args`); all three servers of the pipeline stay up for the
run, started one after the other, and are stopped however it ends.

    python -m benchmarks rewards pooling --part scoring [--quick]
    python -m benchmarks rewards pooling --part pipeline [--quick]

Writes ``benchmarks/results/pooling/pooling_{scoring,pipeline}{_quick}.{json,md,rows.jsonl}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import common

OUT = common.results_dir("pooling")
CANDIDATES = 64
TOKENS = (100, 300)  # candidate length range, tokens
STEPS = (2, 4)  # steps per candidate
PROMPT_TOKENS = 110  # the shared prompt: at least this many tokens
TAG, GOOD, BAD = "к", "+", "-"  # " к" is one token in SmolLM2's tokenizer (" ки" is two)
RM_NAME = "smollm2-135m-seqcls"  # under <data dir>/bench/
N = 8
MAX_TOKENS = 128
TEMPERATURE = 0.8
SEED = 2030  # request seeds start here (issue #30)


# ---- intervals ---------------------------------------------------------------------------------


def bootstrap_stat(
    samples: Sequence[Any],
    stat: Callable[[Sequence[Any]], float],
    rounds: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% bootstrap interval of ``stat`` over ``samples`` (resampled with replacement; a sample
    may be a pair, resampled together)."""
    if not samples:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    values = sorted(stat(rng.choices(samples, k=len(samples))) for _ in range(rounds))
    return values[int(0.025 * rounds)], values[int(0.975 * rounds) - 1]


def median_ci(values: Sequence[float]) -> dict[str, float]:
    """The median and its 95% bootstrap interval."""
    if not values:
        return {"median": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    lo, hi = bootstrap_stat(list(values), statistics.median)
    return {"median": statistics.median(values), "lo": lo, "hi": hi, "n": len(values)}


def ratio_ci(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """median(a) / median(b) and its 95% interval, the pairs (a[i], b[i]) resampled together."""
    pairs = list(zip(a, b, strict=True))

    def ratio(ps: Sequence[tuple[float, float]]) -> float:
        den = statistics.median(p[1] for p in ps)
        return statistics.median(p[0] for p in ps) / den if den else float("nan")

    if not pairs:
        return {"ratio": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    lo, hi = bootstrap_stat(pairs, ratio)
    return {"ratio": ratio(pairs), "lo": lo, "hi": hi, "n": len(pairs)}


def _ci(c: dict[str, float], fmt: str = ".2f") -> str:
    return f"{c['median']:{fmt}} [{c['lo']:{fmt}}, {c['hi']:{fmt}}]"


def _ratio(c: dict[str, float]) -> str:
    return f"{c['ratio']:.2f}x [{c['lo']:.2f}, {c['hi']:.2f}]"


# ---- the workload: deterministic step-structured arithmetic ------------------------------------

TokenCount = Callable[[str], int]


def _sentence(rng: random.Random, value: int) -> tuple[str, int]:
    """One arithmetic sentence continuing from ``value``, and the new value."""
    a = rng.randint(2, 99)
    kind = rng.randrange(4)
    if kind == 0:
        return f"Adding {a} to {value} gives {value + a}.", value + a
    if kind == 1:
        return f"Then {value} minus {a} is {value - a}.", value - a
    if kind == 2:
        k = rng.randint(2, 9)
        return f"Multiplying {value} by {k}, we get {value * k}.", value * k
    return f"We check: {value} - {a} + {a} = {value}, which holds.", value


def candidate_steps(
    rng: random.Random, target_tokens: int, steps: int, count: TokenCount
) -> tuple[str, ...]:
    """Arithmetic sentences ending with the answer, as close to ``target_tokens`` tokens as a
    sentence allows (counted sentence by sentence), split into ``steps`` steps of consecutive
    sentences ("\\n\\n" after every step but the last)."""
    value = rng.randint(10, 500)
    sentences = [f"We start from {value}."]
    tokens = count(sentences[0])
    while True:
        text, new = _sentence(rng, value)
        more = count(" " + text) + count(f" So the answer is {new}.")
        if len(sentences) >= steps and tokens + more > target_tokens:
            end = count(f" So the answer is {value}.")
            if target_tokens - (tokens + end) <= tokens + more - target_tokens:
                break
        sentences.append(text)
        tokens, value = tokens + count(" " + text), new
        if (
            len(sentences) >= steps
            and tokens + count(f" So the answer is {value}.") >= target_tokens
        ):
            break
    sentences[-1] += f" So the answer is {value}."
    cuts = [round(len(sentences) * k / steps) for k in range(steps + 1)]
    parts = [" ".join(sentences[a:b]) for a, b in itertools.pairwise(cuts)]
    return (*(p + "\n\n" for p in parts[:-1]), parts[-1])


def prompt_text(rng: random.Random, rep: int, min_tokens: int, count: TokenCount) -> str:
    """A word problem of at least ``min_tokens`` tokens, different for every ``rep``."""
    names = ["Ana", "Bo", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]
    parts = [f"Problem {rep}: {rng.choice(names)} keeps a ledger of crates in a warehouse."]
    while count(" ".join(parts)) < min_tokens:
        who, n, m = rng.choice(names), rng.randint(3, 400), rng.randint(2, 60)
        parts.append(f"On day {len(parts)}, {who} moves {n} crates and then returns {m} of them.")
    parts.append("How many crates are left at the end? Reason step by step.")
    return " ".join(parts)


@dataclass(frozen=True)
class Workload:
    prompt: str
    candidates: list[tuple[str, ...]]  # the steps of each candidate
    lengths: list[int]  # each candidate's tokens (its steps joined)


def workload(
    rep: int, count: TokenCount, n: int = CANDIDATES, seed: int = 0, tokens=TOKENS, steps=STEPS
) -> Workload:
    """Rep ``rep``'s prompt and ``n`` candidates (lengths uniform in ``tokens``, steps uniform
    in ``steps``): the same for every arm, a fresh prompt for every rep."""
    rng = random.Random(f"pooling-bench/{seed}/{rep}")
    prompt = prompt_text(rng, rep, PROMPT_TOKENS, count)
    candidates = [
        candidate_steps(rng, rng.randint(*tokens), rng.randint(*steps), count) for _ in range(n)
    ]
    return Workload(prompt, candidates, [count("".join(c)) for c in candidates])


def pipeline_questions(n: int, seed: int = 0) -> list[str]:
    """``n`` multi-step arithmetic word problems (deterministic)."""
    rng = random.Random(f"pooling-pipeline/{seed}")
    things = ["apples", "books", "coins", "stamps", "marbles", "pencils"]
    out = []
    for i in range(n):
        a, b, c, d = rng.randint(20, 90), rng.randint(2, 19), rng.randint(5, 40), rng.randint(2, 6)
        thing = things[i % len(things)]
        out.append(
            f"A box holds {a} {thing}. Someone takes {b} away, then adds {c} more, then the "
            f"{thing} are shared equally among {d} friends. How many does each friend get, and "
            "how many are left over? Explain each step."
        )
    return out


def best_index(scores: Sequence[float]) -> int:
    return max(range(len(scores)), key=lambda i: scores[i])


# ---- the reward model checkpoint ---------------------------------------------------------------


def build_rm(data_dir: Path, model_dir: Path) -> Path:
    """A ``LlamaForSequenceClassification`` with SmolLM2-135M's weights, dims and tokenizer and
    a random one-output score head (seed 0): real cost, meaningless scores. Built once."""
    out = Path(data_dir) / "bench" / RM_NAME
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    print(f"building the reward model {out} from {model_dir}", flush=True)
    tmp = out.with_name(out.name + ".tmp")
    for stale in (tmp, out):  # what an interrupted build left
        shutil.rmtree(stale, ignore_errors=True)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=1, dtype=torch.float32
    )
    torch.manual_seed(0)
    torch.nn.init.normal_(model.score.weight, std=0.02)  # not left to the loader's init
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _counter(tok: Any) -> TokenCount:
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


# ---- part 1: scoring ---------------------------------------------------------------------------


def scoring_configs(model_dir: Path, rm_dir: Path | None, kv_cache_gib: int) -> list[dict]:
    prm = {
        "backend": "step_tag_prm", "style": "label_token", "format": "question",
        "step_tag": TAG, "good_token": GOOD, "bad_token": BAD, "path": str(model_dir),
    }  # fmt: skip
    pooling = {"kv_cache_gib": kv_cache_gib}
    configs = [
        {"name": "prm_hf", **prm, "runner": "hf"},
        {"name": "prm_pooling", **prm, "runner": "pooling", "pooling": pooling},
    ]
    if rm_dir is not None:
        rm = {"backend": "seq_cls", "path": str(rm_dir)}
        configs += [
            {"name": "outcome_hf", **rm, "runner": "hf"},
            {"name": "outcome_pooling", **rm, "runner": "pooling", "pooling": pooling},
        ]
    return configs


async def _score(reward: Any, family: str, work: Workload) -> tuple[list, int, int]:
    """One reward call over the rep's candidates: (scores, tokens computed, tokens cached)."""
    from winnow.rewards.base import ChatPrompt, OutcomeItem, ProcessItem

    if family == "prm":
        scored = await reward.score_steps([ProcessItem(work.prompt, c) for c in work.candidates])
    else:
        prompt = ChatPrompt(work.prompt, [{"role": "user", "content": work.prompt}])
        scored = await reward.score([OutcomeItem(prompt, "".join(c)) for c in work.candidates])
    if len(scored.scores) != len(work.candidates):
        raise RuntimeError(f"{family}: {len(scored.scores)} scores for {len(work.candidates)}")
    return list(scored.scores), scored.tokens, scored.cached_tokens


def _flat(scores: list) -> list[float]:
    return [x for s in scores for x in (s if isinstance(s, list) else [s])]


async def run_scoring(args: argparse.Namespace) -> dict[str, Any]:
    from winnow.engine.vllm_config import configure_environment, has_cuda
    from winnow.models.default_model import build_default_model
    from winnow.rewards.configs import RewardConfigList
    from winnow.rewards.registry import build_rewards
    from winnow.settings import default_data_dir

    data_dir = default_data_dir()
    configure_environment(data_dir / "cache", args.kv_cache_gib, cpu=not has_cuda())
    model_dir = build_default_model(data_dir)
    families = ["prm", "outcome"] if args.family == "both" else [args.family]
    rm_dir = build_rm(data_dir, model_dir) if "outcome" in families else None
    count = _counter(_tokenizer(model_dir))
    configs = scoring_configs(model_dir, rm_dir, args.kv_cache_gib)
    rewards = build_rewards(RewardConfigList.validate_python(configs), default_model_dir=None)
    t = time.monotonic()
    await rewards.start()
    started_s = time.monotonic() - t
    print(f"rewards up in {started_s:.0f} s: {rewards.names()}", flush=True)
    rows: list[dict[str, Any]] = []
    try:
        for family in families:
            arms = {"hf": rewards.get(f"{family}_hf"), "pooling": rewards.get(f"{family}_pooling")}
            for rep in range(-1, args.reps):  # rep -1: the warm-up, not kept
                work = workload(rep, count, args.candidates, args.seed)
                order = ["hf", "pooling"] if rep % 2 == 0 else ["pooling", "hf"]
                got: dict[str, list[float]] = {}
                for arm in order:
                    t = time.perf_counter()
                    scores, tokens, cached = await asyncio.wait_for(
                        _score(arms[arm], family, work), args.timeout
                    )
                    wall = time.perf_counter() - t
                    got[arm] = _flat(scores)
                    row = {
                        "family": family, "rep": rep, "arm": arm, "first": arm == order[0],
                        "items": len(work.candidates), "wall_s": wall,
                        "items_per_s": len(work.candidates) / wall, "reward_tokens": tokens,
                        "reward_cached_tokens": cached,
                        "candidate_tokens": sum(work.lengths),
                        "prompt_tokens": count(work.prompt), "warmup": rep < 0,
                    }  # fmt: skip
                    rows.append(row)
                    print(f"[{family} rep {rep}] {arm:<8} {wall:6.2f} s "
                          f"{row['items_per_s']:6.2f} items/s, tokens {tokens} computed, "
                          f"{cached} cached", flush=True)  # fmt: skip
                diff = max(
                    (abs(a - b) for a, b in zip(got["hf"], got["pooling"], strict=True)),
                    default=0.0,
                )
                for row in rows[-2:]:
                    row["max_abs_score_diff"] = diff
    finally:
        await rewards.shutdown()
    return {"rows": rows, "startup_s": started_s, "families": families,
            "model_dir": str(model_dir), "rm_dir": str(rm_dir) if rm_dir else None,
            "configs": configs}  # fmt: skip


def summarize_scoring(rows: list[dict[str, Any]], families: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for family in families:
        kept = [r for r in rows if r["family"] == family and not r["warmup"]]
        by = {arm: sorted((r for r in kept if r["arm"] == arm), key=lambda r: r["rep"])
              for arm in ("hf", "pooling")}  # fmt: skip
        reps = sorted({r["rep"] for r in by["hf"]} & {r["rep"] for r in by["pooling"]})
        per = {arm: {r["rep"]: r for r in by[arm]} for arm in by}
        arms = {}
        for arm in ("hf", "pooling"):
            rs = [per[arm][k] for k in reps]
            arms[arm] = {
                "items_per_s": median_ci([r["items_per_s"] for r in rs]),
                "wall_s": median_ci([r["wall_s"] for r in rs]),
                "reward_tokens": statistics.median(r["reward_tokens"] for r in rs) if rs else None,
                "reward_cached_tokens": (
                    statistics.median(r["reward_cached_tokens"] for r in rs) if rs else None
                ),
            }
        out[family] = {
            "reps": len(reps),
            "arms": arms,
            "pooling_over_hf_items_per_s": ratio_ci(
                [per["pooling"][k]["items_per_s"] for k in reps],
                [per["hf"][k]["items_per_s"] for k in reps],
            ),
            "candidate_tokens": statistics.median(per["hf"][k]["candidate_tokens"] for k in reps)
            if reps
            else None,
            "prompt_tokens": statistics.median(per["hf"][k]["prompt_tokens"] for k in reps)
            if reps
            else None,
            "max_abs_score_diff": max((per["hf"][k]["max_abs_score_diff"] for k in reps),
                                      default=None),
        }  # fmt: skip
    return out


def scoring_report(data: dict[str, Any]) -> str:
    what = {
        "prm": f"step_tag_prm label_token (question format, tag {TAG!r}) on SmolLM2-135M",
        "outcome": "seq_cls LlamaForSequenceClassification (SmolLM2-135M, random head)",
    }
    lines = [
        "# Reward scoring: vLLM pooling runner vs transformers (same model, same inputs)",
        "",
        f"- {data['date']} · {data['machine']}" + (" — **quick run**" if data["quick"] else ""),
        f"- one reward call = {data['candidates']} candidates ({TOKENS[0]}-{TOKENS[1]} tokens, "
        f"{STEPS[0]}-{STEPS[1]} steps) sharing one prompt ({PROMPT_TOKENS}+ tokens, fresh per "
        "rep); arms alternate which goes first; one warm-up rep per arm not counted",
        "- figures: median over reps [95% bootstrap interval]; ratio: median items/s pooling / "
        "hf, pairs of one rep resampled together",
        f"- command: `{data['command']}`",
        "",
        *common.md_table(
            ["reward", "runner", "reps", "items/s", "wall s", "tokens computed", "tokens cached"],
            [
                [
                    fam,
                    arm,
                    s["reps"],
                    _ci(a["items_per_s"]),
                    _ci(a["wall_s"]),
                    f"{a['reward_tokens']:.0f}",
                    f"{a['reward_cached_tokens']:.0f}",
                ]
                for fam, s in data["summary"].items()
                for arm, a in s["arms"].items()
            ],
            "llrrrrr",
        ),
        "",
        *common.md_table(
            ["reward", "pooling / hf items/s", "candidate tokens / call", "max abs score diff"],
            [
                [
                    what[fam],
                    _ratio(s["pooling_over_hf_items_per_s"]),
                    f"{s['candidate_tokens']:.0f}",
                    f"{s['max_abs_score_diff']:.2g}",
                ]
                for fam, s in data["summary"].items()
            ],
            "lrrr",
        ),
    ]
    return "\n".join(lines) + "\n"


# ---- part 2: the pipeline ----------------------------------------------------------------------


@dataclass
class Arms:
    winnow: str  # base URLs, no /v1
    vllm: str
    rm: str
    policy_model: str
    rm_model: str
    tokenizer: Any  # the RM's
    rm_path: str = "/classify"  # or "/pooling" (task classify) where /classify is not served


def rm_server_flags(rm_dir: Path) -> list[str]:
    """The flags of the naive side's RM server: the pooling engine winnow runs in process for
    the same config (:func:`winnow.rewards.pooling.engine_args`), as ``api_server`` flags."""
    from winnow.engine.remote.worker import engine_flags
    from winnow.rewards.configs import SequenceClassifierConfig
    from winnow.rewards.pooling import PoolingPlan, engine_args

    config = SequenceClassifierConfig(name="rm", path=str(rm_dir), runner="pooling")
    plan = PoolingPlan(str(rm_dir), None, lambda raw: raw[:, 0], "its score head")
    return engine_flags({k: v for k, v in engine_args(plan, config).items() if k != "model"})


def _usage(body: dict[str, Any]) -> dict[str, Any]:
    return body.get("usage") or {}


async def winnow_request(client: Any, arms: Arms, question: str, seed: int) -> dict[str, Any]:
    body = {
        "model": arms.policy_model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": MAX_TOKENS, "temperature": TEMPERATURE, "seed": seed,
        "strategy": {"name": "best_of_n", "n": N, "reward": "rm", "selection": "best"},
    }  # fmt: skip
    r = await client.post(f"{arms.winnow}/v1/chat/completions", json=body)
    _check(r, "winnow")
    data = r.json()
    extra = _usage(data).get("winnow") or {}
    return {
        "generated_tokens": extra.get("generated_tokens"),
        "reward_tokens": extra.get("reward_tokens"),
        "reward_cached_tokens": extra.get("reward_cached_tokens"),
        "chosen_chars": len(data["choices"][0]["message"]["content"] or ""),
    }


async def naive_request(client: Any, arms: Arms, question: str, seed: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": question}]
    body = {"model": arms.policy_model, "messages": messages, "max_tokens": MAX_TOKENS,
            "temperature": TEMPERATURE, "seed": seed, "n": N}  # fmt: skip
    r = await client.post(f"{arms.vllm}/v1/chat/completions", json=body)
    _check(r, "vllm")
    data = r.json()
    choices = sorted(data["choices"], key=lambda c: c["index"])
    texts = [c["message"]["content"] or "" for c in choices]
    tok = arms.tokenizer
    ids = [
        tok(tok.apply_chat_template([*messages, {"role": "assistant", "content": t}],
                                    tokenize=False), add_special_tokens=False)["input_ids"]
        for t in texts
    ]  # fmt: skip  # what winnow's seq_cls renders (:meth:`SequenceClassifierReward.job`)
    scores, reward_tokens = await rm_scores(client, arms, ids)
    best = best_index(scores)
    return {
        "generated_tokens": _usage(data).get("completion_tokens"),
        "reward_tokens": reward_tokens,
        "reward_cached_tokens": None,
        "chosen_chars": len(texts[best]),
    }


async def rm_scores(client: Any, arms: Arms, ids: list[list[int]]) -> tuple[list[float], int]:
    """The RM server's raw score of each token-id list (one request), and the tokens it read.
    ``/classify`` answers ``data[i].probs``, ``/pooling`` (task classify) ``data[i].data``."""
    body: dict[str, Any] = {"model": arms.rm_model, "input": ids, "use_activation": False}
    if arms.rm_path == "/pooling":
        body["task"] = "classify"
    r = await client.post(f"{arms.rm}{arms.rm_path}", json=body)
    _check(r, f"rm {arms.rm_path}")
    out = r.json()
    rows = sorted(out["data"], key=lambda d: d["index"])
    key = "probs" if arms.rm_path == "/classify" else "data"
    scores = [float(_first(d[key])) for d in rows]
    if len(scores) != len(ids):
        raise RuntimeError(f"rm: {len(scores)} scores for {len(ids)} inputs")
    return scores, int(_usage(out).get("prompt_tokens") or 0)


def _first(value: Any) -> float:
    while isinstance(value, list):
        value = value[0]
    return float(value)


async def choose_rm_path(arms: Arms) -> str:
    """``/classify`` if the RM server answers it, else ``/pooling`` with task classify."""
    import httpx

    ids = [arms.tokenizer("1 + 1 = 2", add_special_tokens=False)["input_ids"]]
    async with httpx.AsyncClient(timeout=120) as client:
        errors = []
        for path in ("/classify", "/pooling"):
            arms.rm_path = path
            try:
                await rm_scores(client, arms, ids)
                return path
            except Exception as exc:
                errors.append(f"{path}: {exc}")
    raise RuntimeError("the RM server scores nothing: " + "; ".join(errors))


def _check(response: Any, who: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{who}: HTTP {response.status_code} {response.text[:500]}")


ARM_CALLS = {"winnow": winnow_request, "naive": naive_request}


async def _timed(call: Any, client: Any, arms: Arms, question: str, seed: int) -> dict:
    t = time.perf_counter()
    try:
        out = await call(client, arms, question, seed)
        out["ok"], out["error"] = True, None
    except Exception as exc:  # recorded; the figures leave it out and say how many
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    out["latency_s"] = time.perf_counter() - t
    return out


async def run_pipeline_rounds(
    arms: Arms, questions: list[str], levels: Sequence[int], timeout: float
) -> list[dict[str, Any]]:
    import httpx

    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=timeout) as client:
        for name, call in ARM_CALLS.items():  # warm-up, not kept
            w = await _timed(call, client, arms, "What is 12 + 30? Explain.", SEED - 1)
            print(f"[warm-up] {name}: {w['latency_s']:.1f} s {w.get('error') or ''}", flush=True)
            if not w["ok"]:
                raise RuntimeError(f"warm-up of {name} failed: {w['error']}")
        for li, clients in enumerate(levels):
            rounds = [list(range(i, min(i + clients, len(questions))))
                      for i in range(0, len(questions), clients)]  # fmt: skip
            for r, idx in enumerate(rounds):
                order = list(ARM_CALLS) if r % 2 == 0 else list(reversed(ARM_CALLS))
                for arm in order:
                    seeds = [SEED + 1000 * li + i * N for i in idx]  # candidates take seed + j
                    done = await asyncio.gather(
                        *(_timed(ARM_CALLS[arm], client, arms, questions[i], s)
                          for i, s in zip(idx, seeds, strict=True))
                    )  # fmt: skip
                    for i, s, out in zip(idx, seeds, done, strict=True):
                        where = {"clients": clients, "round": r, "arm": arm}
                        rows.append({**where, "first": arm == order[0], "question": i,
                                     "seed": s, **out})  # fmt: skip
                    lat = ", ".join(f"{d['latency_s']:.1f}" for d in done)
                    bad = sum(not d["ok"] for d in done)
                    failed = f" ({bad} failed)" if bad else ""
                    head = f"[{clients} clients, round {r + 1}/{len(rounds)}] {arm:<6}"
                    print(f"{head} latency s: {lat}{failed}", flush=True)
    return rows


def summarize_pipeline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for clients in sorted({r["clients"] for r in rows}):
        at = [r for r in rows if r["clients"] == clients]
        by = {arm: {r["question"]: r for r in at if r["arm"] == arm} for arm in ARM_CALLS}
        both = sorted(q for q in by["winnow"] if by["winnow"][q]["ok"] and
                      q in by["naive"] and by["naive"][q]["ok"])  # fmt: skip
        arms = {}
        for arm in ARM_CALLS:
            ok = [by[arm][q] for q in both]

            def med(key: str, ok: list = ok) -> float | None:
                vals = [r[key] for r in ok if r.get(key) is not None]
                return statistics.median(vals) if vals else None

            arms[arm] = {
                "latency_s": median_ci([r["latency_s"] for r in ok]),
                "failed": sum(not r["ok"] for r in by[arm].values()),
                "generated_tokens": med("generated_tokens"),
                "reward_tokens": med("reward_tokens"),
                "reward_cached_tokens": med("reward_cached_tokens"),
            }
        out[str(clients)] = {
            "requests_paired": len(both),
            "arms": arms,
            "winnow_over_naive_latency": ratio_ci(
                [by["winnow"][q]["latency_s"] for q in both],
                [by["naive"][q]["latency_s"] for q in both],
            ),
            "errors": sorted({r["error"] for r in at if not r["ok"]})[:5],
        }
    return out


def pipeline_report(data: dict[str, Any]) -> str:
    lines = [
        f"# best_of_n N={N} with a pooled outcome reward: winnow vs a naive client pipeline",
        "",
        f"- {data['date']} · {data['machine']}" + (" — **quick run**" if data["quick"] else ""),
        f"- policy: SmolLM2-135M-Instruct; reward: `seq_cls` {data['rm_dir']} (Llama sequence "
        f"classifier with the policy's weights, random head); chat, max_tokens {MAX_TOKENS}, "
        f"temperature {TEMPERATURE}, ending at EOS, every request seeded (both arms sample the "
        f"same candidates); {data['questions']} questions per level",
        "- winnow: `winnow serve`, the reward on the pooling runner in process; naive: one n=8 "
        "request to plain vLLM, then the 8 conversations as token ids to a vLLM pooling server "
        "of the RM (`/classify`, the same engine settings), the client keeping the best",
        "- per round each arm sends `clients` requests at once, the arm going first alternating; "
        "latency: median [95% bootstrap interval]; ratio: median winnow / median naive latency, "
        "a question's two requests resampled together",
        f"- command: `{data['command']}`",
        "",
        *common.md_table(
            [
                "clients",
                "arm",
                "requests",
                "median latency s",
                "failed",
                "generated tok/req",
                "reward tok/req",
                "reward cached tok/req",
            ],
            [
                [
                    c,
                    arm,
                    s["requests_paired"],
                    _ci(a["latency_s"]),
                    a["failed"],
                    _f(a["generated_tokens"]),
                    _f(a["reward_tokens"]),
                    _f(a["reward_cached_tokens"]),
                ]
                for c, s in data["summary"].items()
                for arm, a in s["arms"].items()
            ],
            "rlrrrrrr",
        ),
        "",
        *common.md_table(
            ["clients", "winnow / naive median latency"],
            [[c, _ratio(s["winnow_over_naive_latency"])] for c, s in data["summary"].items()],
            "rr",
        ),
        "",
        "Servers:",
        "",
        *(f"- {name}: `{cmd}`" for name, cmd in data["servers"].items()),
    ]
    return "\n".join(lines) + "\n"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


@contextmanager
def started(servers: Sequence[tuple[Any, float]], logs: Path, patience_s: float) -> Iterator[dict]:
    """Start the servers one after the other, each healthy before the next (room for all still
    to come waited for first); stop them all however the run ends."""
    from benchmarks.serving.compare import wait_for_memory
    from winnow.clients.launch import server_process

    up: dict[str, float] = {}
    with ExitStack() as stack:
        for i, (server, _) in enumerate(servers):
            wait_for_memory(sum(need for _, need in servers[i:]), patience_s)
            t = time.monotonic()
            log = logs / f"{server.name}.log"
            print(f"[{server.name}] starting (log {log})", flush=True)
            stack.enter_context(server_process(server.command, f"http://127.0.0.1:{server.port}",
                                               log, env=server.env))  # fmt: skip
            up[server.name] = round(time.monotonic() - t, 1)
            print(f"[{server.name}] up in {up[server.name]} s", flush=True)
        yield up


def _served_model(base: str) -> str:
    import httpx

    r = httpx.get(f"{base}/v1/models", timeout=30)
    r.raise_for_status()
    return str(r.json()["data"][0]["id"])


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.serving.compare import Server, servers
    from winnow.clients.launch import free_port
    from winnow.models.default_model import build_default_model
    from winnow.settings import default_data_dir

    data_dir = default_data_dir()
    model_dir = build_default_model(data_dir)
    rm_dir = build_rm(data_dir, model_dir)
    logs = Path(tempfile.mkdtemp(prefix="pooling-bench-"))
    rewards = logs / "rewards.json"
    rewards.write_text(json.dumps([{"name": "rm", "backend": "seq_cls", "path": str(rm_dir),
                                    "runner": "pooling"}]))  # fmt: skip
    winnow, vllm, _ = servers(model_dir, args.kv_cache_gib, data_dir,
                              ["--rewards-config", str(rewards)])  # fmt: skip
    port = free_port()
    rm = Server(
        "rm",
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(rm_dir),
         "--served-model-name", "rm", "--host", "127.0.0.1", "--port", str(port),
         "--uvicorn-log-level", "warning", "--disable-uvicorn-access-log",
         *rm_server_flags(rm_dir)],
        {**vllm.env, "VLLM_CPU_KVCACHE_SPACE": "1"}, port,
    )  # fmt: skip
    # per server: its KV cache(s) + ~2 GiB per engine process + ~1.5 GiB per server process
    needs = [(winnow, args.kv_cache_gib + 1 + 4), (vllm, args.kv_cache_gib + 3), (rm, 3.5)]
    questions = pipeline_questions(args.questions)
    t = time.monotonic()
    with started(needs, logs, 60 * args.memory_wait) as up:
        arms = Arms(
            winnow=f"http://127.0.0.1:{winnow.port}", vllm=f"http://127.0.0.1:{vllm.port}",
            rm=f"http://127.0.0.1:{rm.port}", policy_model="", rm_model="rm",
            tokenizer=_tokenizer(rm_dir),
        )  # fmt: skip
        arms.policy_model = _served_model(arms.vllm)
        if _served_model(arms.winnow) != arms.policy_model:
            print(f"note: winnow serves {_served_model(arms.winnow)!r}, vLLM "
                  f"{arms.policy_model!r}", flush=True)  # fmt: skip
        arms.rm_path = asyncio.run(choose_rm_path(arms))
        print(f"naive side scores on the RM server's {arms.rm_path}", flush=True)
        rows = asyncio.run(run_pipeline_rounds(arms, questions, args.clients, args.timeout))
    return {
        "rows": rows, "startup_s": up, "measure_s": time.monotonic() - t,
        "model_dir": str(model_dir), "rm_dir": str(rm_dir), "logs": "LOGS (a temporary directory)",
        "servers": {s.name: shlex.join(s.command).replace(str(logs), "LOGS")
                    for s, _ in needs},
    }  # fmt: skip


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("scoring", "pipeline"), required=True)
    p.add_argument("--quick", action="store_true", help="a smoke run: few reps / questions")
    p.add_argument("--reps", type=int, help="scoring: reps per arm after a warm-up (5; quick 1)")
    p.add_argument("--candidates", type=int, default=CANDIDATES, help="scoring: items per call")
    p.add_argument("--family", choices=("prm", "outcome", "both"), default="both",
                   help="scoring: which reward model(s)")  # fmt: skip
    p.add_argument("--questions", type=int, help="pipeline: questions per level (24; quick 4)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4],
                   help="pipeline: concurrency levels")  # fmt: skip
    p.add_argument("--kv-cache-gib", type=int, default=None,
                   help="scoring: the pooling engine's KV cache, GiB (1, the config default); "
                   "pipeline: each policy engine's (2; the RM engines keep 1)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="scoring: the workload's seed")
    p.add_argument("--timeout", type=float, default=900, help="per reward call / request (s)")
    p.add_argument("--memory-wait", type=float, default=10, help="minutes to wait for memory")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    if args.questions is None:
        args.questions = 4 if args.quick else 24
    if args.kv_cache_gib is None:
        args.kv_cache_gib = 2 if args.part == "pipeline" else 1
    return args


def estimate_min(args: argparse.Namespace) -> float:
    """Minutes on a quiet 2-core machine (rough: ~1500 reward tokens/s either runner; n=8
    decode ~85 tok/s at one request, ~150 at four)."""
    if args.part == "scoring":
        families = 2 if args.family == "both" else 1
        per_call = args.candidates * 200 / 1500
        return (60 + families * 2 * (args.reps + 1) * per_call) / 60
    start = 4 * 60
    per_level = 0.0
    for c in args.clients:
        waves = -(-args.questions // c)
        wave = c * N * MAX_TOKENS * 0.7 / (85 if c == 1 else 150) + 2
        per_level += 2 * waves * wave
    return (start + per_level) / 60


def main(argv: list[str] | None = None) -> int:
    from benchmarks.serving.compare import _exit_on_sigterm, _yield_to_oom_killer

    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # unwinds: servers and engines stopped
    _yield_to_oom_killer()
    print(f"{args.part}: about {estimate_min(args):.0f} min on a quiet machine", flush=True)
    t = time.monotonic()
    stem = f"pooling_{args.part}" + ("_quick" if args.quick else "")
    if args.part == "scoring":
        run = asyncio.run(run_scoring(args))
        summary = summarize_scoring(run["rows"], run["families"])
    else:
        run = run_pipeline(args)
        summary = summarize_pipeline(run["rows"])
    rows = run.pop("rows")
    data = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "command": common.command(__file__, argv),
        "machine": common.machine_summary(),
        "machine_info": common.machine_info(),
        "wall_s": time.monotonic() - t,
        "candidates": args.candidates,
        "questions": args.questions,
        "clients": args.clients,
        "reps": args.reps,
        **run,
        "summary": summary,
    }
    report = scoring_report(data) if args.part == "scoring" else pipeline_report(data)
    out = OUT / stem
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"{stem}.rows.jsonl"
    raw.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    common.save(out, data, report, script=__file__, argv=argv, also=[raw])
    return 0


if __name__ == "__main__":
    sys.exit(main())
