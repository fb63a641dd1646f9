"""The options of ``winnow bench serve`` (vLLM ``bench serve``'s names). Imports nothing heavy,
so building the ``winnow`` parser stays fast."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def _rate(text: str) -> float:
    from winnow.clients.arrivals import parse_rate

    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rates(text: str) -> list[float]:
    from winnow.clients.arrivals import parse_rates

    try:
        return parse_rates(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    target = p.add_argument_group("target")
    target.add_argument(
        "--base-url", default=DEFAULT_BASE_URL, help="any OpenAI-compatible base URL (…/v1)"
    )
    target.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    target.add_argument("--model", help="model name to send (default: the first listed)")
    target.add_argument("--api-key", help="bearer key, if the server needs one")
    target.add_argument("--timeout", type=float, default=600.0, help="per request (s)")

    load = p.add_argument_group("load")
    load.add_argument(
        "--request-rate", type=_rate, default=float("inf"), help="req/s, or inf (all at once)"
    )
    load.add_argument(
        "--burstiness", type=float, default=1.0, help="1: Poisson arrivals; else gamma (shape)"
    )
    load.add_argument("--max-concurrency", type=_positive_int, help="cap on requests in flight")
    load.add_argument("--num-prompts", type=_positive_int, default=100)
    load.add_argument("--num-warmups", type=int, default=0, help="untimed requests first")
    load.add_argument("--seed", type=int, default=0, help="arrivals and reasoning-gym prompts")
    load.add_argument(
        "--rate-sweep", type=_rates, help="e.g. 1,2,4,inf: one run per rate, and a plot"
    )

    prompts = p.add_argument_group("prompts (one source)")
    source = prompts.add_mutually_exclusive_group()
    source.add_argument("--prompts-file", type=Path, help=".jsonl or .txt (one per line)")
    source.add_argument(
        "--task",
        default="basic_arithmetic",
        help="a reasoning-gym dataset name, or a winnow task (add_sub_1digit, mul_1digit, "
        "gsm_symbolic: its evaluation split, with the answer instruction)",
    )

    body = p.add_argument_group("request")
    body.add_argument("--max-tokens", type=_positive_int, default=64)
    body.add_argument("--temperature", type=float)
    body.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-tokens")
    body.add_argument(
        "--extra-body",
        type=_json_object,
        help='JSON merged into every request, e.g. \'{"strategy": {"name": "sample"}}\'',
    )
    body.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SSE streaming (default: on, except for the naive pipeline)",
    )

    kind = p.add_argument_group("client kind")
    kind.add_argument(
        "--client",
        choices=["openai", "naive_best_of_n"],
        default="openai",
        help="openai: one request per prompt; naive_best_of_n: the client-side pipeline peers "
        "use, --naive-n separate completions then one POST /v1/rewards per candidate",
    )
    kind.add_argument("--naive-n", type=_positive_int, default=8, help="candidates per prompt")
    kind.add_argument("--reward", default="default", help="reward that scores each candidate")
    kind.add_argument(
        "--reward-base-url", help="winnow server scoring the candidates (default: --base-url)"
    )
    kind.add_argument("--reward-api-key", help="its bearer key (default: --api-key)")
    kind.add_argument(
        "--naive-sequential",
        action="store_true",
        help="send the naive pipeline's calls one after the other (a for-loop client), not "
        "all at once",
    )

    out = p.add_argument_group("report")
    out.add_argument(
        "--goodput", nargs="+", metavar="KEY:MS", help="SLOs, e.g. ttft:500 tpot:100 e2el:5000"
    )
    out.add_argument("--result-file", type=Path, help="write the results as JSON")
    out.add_argument("--plot-file", type=Path, help="rate sweep plot (default: beside results)")
    out.add_argument("--disable-tqdm", action="store_true")


SERVE_EPILOG = """\
metrics (per request, then mean / median / std / p99 in ms):
  TTFT  time to the first chunk that carries text (streamed; else the whole answer)
  ITL   gaps between text chunks          TPOT  (E2EL - TTFT) / (output tokens - 1)
  E2EL  send to the end of the stream (after the usage chunk)
  plus completed / failed, request, output and total token throughput, goodput (requests
  within every --goodput SLO, per s) and winnow's usage (generated tokens incl. discarded
  candidates, engine calls, reward calls) when the server sends usage.winnow.

examples:
  # best-of-8 on winnow, 4 clients, Poisson arrivals at 2 req/s, goodput under a 10 s E2EL SLO
  winnow bench serve --base-url http://127.0.0.1:8000/v1 --endpoint chat \\
    --task add_sub_1digit --num-prompts 64 --max-tokens 64 --temperature 0.7 \\
    --request-rate 2 --burstiness 1 --max-concurrency 4 --num-warmups 2 \\
    --extra-body '{"strategy": {"name": "best_of_n", "n": 8}}' --goodput e2el:10000 \\
    --result-file bon.json
  # the same load on a plain vLLM server, as a rate sweep with a latency-vs-load plot
  winnow bench serve --base-url http://127.0.0.1:8001/v1 --endpoint chat \\
    --task add_sub_1digit --num-prompts 64 --rate-sweep 0.5,1,2,inf --result-file vllm.json
  # the naive client-side pipeline: 8 completions on vLLM, one /v1/rewards each on winnow
  winnow bench serve --base-url http://127.0.0.1:8001/v1 --endpoint chat \\
    --client naive_best_of_n --naive-n 8 --reward-base-url http://127.0.0.1:8000/v1 \\
    --task add_sub_1digit --num-prompts 64 --max-tokens 64 --temperature 0.7 \\
    --max-concurrency 4
"""


def add_bench_parser(sub: Any) -> None:
    """``winnow bench serve ...``."""
    p = sub.add_parser("bench", help="benchmark a running OpenAI-compatible server")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    serve = bsub.add_parser(
        "serve",
        help="load-test a server (vLLM bench serve conventions)",
        description="Load-test winnow or any OpenAI-compatible server; vLLM bench serve's "
        "options and metrics, so the two compare.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(serve)
