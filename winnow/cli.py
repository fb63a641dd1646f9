"""The `winnow` command: serve, start a remote worker, build the default model.

`winnow serve` takes winnow's own options; any other option is handed to vLLM's engine argument
parser (e.g. --tensor-parallel-size 2 --distributed-executor-backend ray), so every engine
setting vLLM has is available without winnow repeating it. `winnow worker` starts vLLM's OpenAI
server with winnow's logits processors, for `winnow serve --backend remote`; options it does not
know go to `vllm serve`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from winnow.settings import Settings, default_data_dir


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="start the OpenAI-compatible server",
        description="Start winnow. Options not listed here go to vLLM's engine arguments.",
    )
    # Defaults live in winnow.settings.Settings (so WINNOW_* variables apply): None = not given.
    p.add_argument("--model", help="model directory (default: the embedded SmolLM2-135M)")
    p.add_argument("--served-model-name", help="name clients use (default: the model's name)")
    p.add_argument("--host", help="default 127.0.0.1")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--backend", choices=["local", "remote"], help="default local")
    p.add_argument(
        "--remote-url",
        dest="remote_urls",
        action="append",
        help="a vLLM OpenAI server for --backend remote (repeat for round-robin)",
    )
    p.add_argument("--remote-api-key", help="API key of the remote vLLM servers")
    p.add_argument("--data-dir", type=Path, help="default $WINNOW_DATA_DIR or ~/.cache/winnow")
    p.add_argument("--rewards-config", type=Path, help="JSON list of reward configurations")
    p.add_argument("--max-n", type=int, help="largest n / strategy budget accepted (64)")
    p.add_argument("--max-tokens-cap", type=int, help="largest max_tokens accepted")
    p.add_argument("--request-timeout", type=float, help="wall time per request, s (600)")
    p.add_argument(
        "--max-request-tokens",
        type=int,
        help="largest strategy token budget per request, kept + discarded (no cap)",
    )
    p.add_argument(
        "--max-request-sequences",
        type=int,
        help="most sequences one request samples at once, prompts x candidates; most items one "
        "/v1/rewards request scores (256)",
    )
    p.add_argument(
        "--max-prompt-chars",
        type=int,
        help="most characters of prompt text per request, checked before templating (1000000)",
    )
    p.add_argument("--reward-timeout", type=float, help="wall time per reward call, s (120)")
    p.add_argument(
        "--reward-prefix-cache-mib",
        type=int,
        help="reward backbones' KV cache of scored prefixes, MiB; 0 turns it off (512)",
    )
    p.add_argument(
        "--shutdown-timeout", type=float, help="on SIGTERM, drain in-flight requests for s (30)"
    )
    p.add_argument("--max-running-requests", type=int, help="requests served at once (64)")
    p.add_argument("--max-queued-requests", type=int, help="requests waiting; past it 429 (256)")
    p.add_argument("--kv-cache-gib", type=int, help="KV cache on CPU machines, GiB (2)")
    p.add_argument(
        "--no-reward-tap", dest="reward_tap", action="store_false", default=None,
        help="re-encode every probe score instead of reading it from the engine's states",
    )  # fmt: skip
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def _worker_parser(sub: Any) -> None:
    from winnow.engine.remote.worker import DEFAULT_PORT

    p = sub.add_parser(
        "worker",
        help="start vLLM's OpenAI server with winnow's logits processors (remote cards, vas)",
        description="Start a vLLM OpenAI server that runs winnow's logits processors, for "
        "`winnow serve --backend remote --remote-url http://HOST:PORT`. Options not listed here "
        "go to `vllm serve` (e.g. --api-key, --served-model-name, --max-model-len, "
        "--tensor-parallel-size).",
    )
    p.add_argument("--model", help="model directory (default: the embedded SmolLM2-135M)")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--data-dir", type=Path, help="default $WINNOW_DATA_DIR or ~/.cache/winnow")
    p.add_argument("--kv-cache-gib", type=int, default=2, help="KV cache on CPU machines (2)")
    p.add_argument(
        "--allow-dir", dest="allow_dirs", action="append", default=[], metavar="DIR",
        help="a directory of value models clients may name (repeat; winnow's shipped ones are "
        "always allowed, nothing else is)",
    )  # fmt: skip
    p.add_argument(
        "--runner", choices=["generate", "pooling"], default="generate",
        help="generate: the policy with winnow's processors (default); pooling: a reward model "
        "of --rewards-config (--reward NAME) on vLLM's pooling runner, for rewards with "
        '"runner": "pooling" and "pooling": {"urls": [...]}',
    )  # fmt: skip
    p.add_argument("--rewards-config", help="with --runner pooling: the rewards config file")
    p.add_argument("--reward", help="with --runner pooling: the reward's name in it")
    p.add_argument("--print-command", action="store_true", help="print the vLLM command and exit")


SERVE_SETTINGS = (
    "model", "served_model_name", "host", "port", "api_key", "backend", "remote_urls",
    "remote_api_key", "data_dir", "rewards_config", "max_n", "max_tokens_cap", "request_timeout",
    "max_running_requests", "max_queued_requests", "kv_cache_gib", "log_level",
    "max_request_tokens", "reward_timeout", "shutdown_timeout", "reward_prefix_cache_mib",
    "reward_tap", "max_request_sequences", "max_prompt_chars",
)  # fmt: skip


def _model_parser(sub: Any) -> None:
    p = sub.add_parser("model", help="manage models")
    msub = p.add_subparsers(dest="model_command", required=True)
    b = msub.add_parser("build-default", help="build the embedded default model (offline)")
    b.add_argument("--data-dir", type=Path, default=None)
    b.add_argument("--force", action="store_true", help="rebuild even if it exists")


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train the default reward and value models (offline)")
    tsub = p.add_subparsers(dest="train_command", required=True)
    r = tsub.add_parser(
        "reward", help="train the default outcome head from the samples journal (ranking)"
    )
    r.add_argument("--out", type=Path, default=None, help="default: the package's assets")
    r.add_argument("--journal", type=Path, default=None, help="default: see `train samples`")
    r.add_argument("--max-questions", type=int, default=None, help="use the first K questions")
    r.add_argument("--seed", type=int, default=0)
    s = tsub.add_parser(
        "samples", help="sample answers to training-split questions (journaled, resumable)"
    )
    s.add_argument("--journal", type=Path, default=None, help="default: see winnow/train/cli.py")
    s.add_argument("--per-task", type=int, default=200, help="training questions per task")
    s.add_argument("--n", type=int, default=32, help="answers per question")
    s.add_argument("--max-tokens", type=int, default=96)
    s.add_argument("--temperature", type=float, default=0.7)
    s.add_argument("--seed", type=int, default=0)
    t = tsub.add_parser(
        "steps", help="Monte-Carlo step labels for the PRM: rollouts from solution prefixes"
    )
    t.add_argument(
        "--bench", action="store_true",
        help="label the benchmark's stored answers (held-out evaluation), not training samples",
    )  # fmt: skip
    t.add_argument("--journal", type=Path, default=None, help="default: see winnow/train/cli.py")
    t.add_argument("--per-question", type=int, default=3, help="solutions labelled per question")
    t.add_argument("--k", type=int, default=8, help="rollouts per step prefix")
    t.add_argument("--max-questions", type=int, default=None, help="the first K questions")
    t.add_argument("--seed", type=int, default=0)
    m = tsub.add_parser(
        "prm", help="train the default process head (default_prm) from the step-label journals"
    )
    m.add_argument("--out", type=Path, default=None, help="default: the package's assets")
    _fit_parser(tsub)
    v = tsub.add_parser("value", help="train VAS value models (Q-heads) on the default policy")
    v.add_argument(
        "--reward",
        dest="rewards",
        action="append",
        help="a configured reward name or 'brevity' (repeat; default: default and brevity)",
    )
    v.add_argument("--out", type=Path, default=None, help="default: the package's assets")
    v.add_argument("--work-dir", type=Path, default=None, help="samples, features, checkpoints")
    v.add_argument("--prompts", type=Path, default=None, help="a file of prompts (or JSONL)")
    v.add_argument("--quick", action="store_true", help="a small run, to check the pipeline")
    v.add_argument("--fresh", action="store_true", help="ignore the work dir (no resume)")
    v.add_argument("--seed", type=int, default=0)


def _fit_parser(tsub: Any) -> None:
    f = tsub.add_parser(
        "fit",
        help="questions with answers -> a reward for any model (samples, labels, fit, card)",
        description="Sample the model's answers to the questions (journaled: a re-run resumes), "
        "label them with the verifier or --checker, fit a probe head on the model's own hidden "
        "states, measure it on held-out questions (split by problem key), and write OUT/reward/ "
        "(head, card, domain) and OUT/rewards.json for `winnow serve --model DIR "
        "--rewards-config OUT/rewards.json`. Questions are asked as chats through the model's chat "
        "template; a base model without one needs --prompt-template.",
    )
    f.add_argument("--model", required=True, help="the model directory the server will serve")
    source = f.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--questions", type=Path,
        help='JSONL: {"question"|"messages", "answer"[, "group"][, "task"]} per line',
    )  # fmt: skip
    source.add_argument(
        "--tasks", help="named task sets instead, comma-separated (e.g. add_sub_3term_1digit)"
    )
    f.add_argument("--per-task", type=int, default=200, help="questions per named task set")
    f.add_argument(
        "--prompt-template", metavar="TEXT",
        help="ask each question as this completion prompt, TEXT with the question at {question} "
        "(e.g. 'Question: {question}\\nAnswer:'; \\n is a newline, {{ }} literal braces), not as "
        "a chat through the model's chat template: for a base model, which has none. Requests "
        "to the fitted reward must then send the same text to /v1/completions",
    )  # fmt: skip
    f.add_argument(
        "--seed-journal", type=Path,
        help="a samples journal (another fit's, or `winnow train samples`') whose answers to these "
        "questions are imported instead of sampled, after checking their prompts, answers, n and "
        "max_tokens against this fit (refused otherwise)",
    )  # fmt: skip
    f.add_argument("--out", type=Path, help="default: DATA_DIR/rewards/<model>-<questions>")
    f.add_argument("--name", default="fitted", help="the reward's name in rewards.json")
    f.add_argument(
        "--base-url", help="sample through this OpenAI-compatible server of the same model "
        "(default: the engine in this process)",
    )  # fmt: skip
    f.add_argument("--served-model", help="the model name at --base-url (default: its first)")
    f.add_argument("--api-key", help="API key of --base-url (not stored)")
    f.add_argument(
        "--checker", help="module:function(response, answer) -> bool (default: verifier)"
    )
    f.add_argument("--n", type=int, default=16, help="answers per question (16)")
    f.add_argument("--max-tokens", type=int, default=256)
    f.add_argument("--temperature", type=float, default=0.7)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--eval-fraction", type=float, default=0.3, help="of problem keys held out")
    f.add_argument("--domain-quantile", type=float, default=0.95, help="of held-out distances")
    f.add_argument("--concurrency", type=int, default=4, help="questions sampled at once")
    f.add_argument("--no-mlp", dest="mlp", action="store_false", help="linear heads only")
    f.add_argument(
        "--objectives", default="listwise,pairwise,pointwise",
        help="linear heads' objectives tried, comma-separated ('' for the MLP only)",
    )  # fmt: skip


def _bench_parser(sub: Any) -> None:
    from winnow.clients.bench_args import add_bench_parser

    add_bench_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _worker_parser(sub)
    _model_parser(sub)
    _train_parser(sub)
    _bench_parser(sub)
    return parser


def parse_engine_args(extra: list[str]) -> dict[str, Any]:
    """Parse leftover options with vLLM's own engine-argument parser; return the changed ones."""
    if not extra:
        return {}
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="winnow serve"))
    defaults = vars(parser.parse_args([]))
    parsed = vars(parser.parse_args(extra))
    return {k: v for k, v in parsed.items() if v != defaults.get(k) and k != "model"}


def serve_settings(args: argparse.Namespace, extra: list[str]) -> Settings:
    """Options given on the command line win; the rest come from WINNOW_* or the defaults."""
    given = {k: getattr(args, k) for k in SERVE_SETTINGS if getattr(args, k) is not None}
    return Settings(**given, engine_args=parse_engine_args(extra))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("serve", "worker"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "model":
        from winnow.models.default_model import build_default_model

        path = build_default_model(args.data_dir or default_data_dir(), force=args.force)
        print(path)
        return 0
    if args.command == "train" and args.train_command == "value":
        from winnow.train.cli import train_value

        train_value(
            args.rewards, args.out, args.work_dir, args.prompts, args.quick, args.seed, args.fresh
        )
        return 0
    if args.command == "train" and args.train_command == "fit":
        from winnow.train.cli import train_fit

        try:
            train_fit(args)
        except ValueError as exc:  # bad questions, settings or data: said, not a traceback
            parser.exit(2, f"winnow train fit: {exc}\n")
        return 0
    if args.command == "train" and args.train_command == "prm":
        from winnow.train.cli import train_prm

        train_prm(args.out)
        return 0
    if args.command == "train" and args.train_command == "steps":
        from winnow.train.cli import collect_step_labels

        collect_step_labels(args)
        return 0
    if args.command == "train" and args.train_command == "samples":
        from winnow.train.cli import collect_samples

        collect_samples(args)
        return 0
    if args.command == "train":
        from winnow.train.cli import train_reward

        train_reward(args.out, args.journal, args.max_questions, args.seed)
        return 0
    if args.command == "bench":
        from winnow.clients.bench import main as bench_main

        return bench_main(args)
    if args.command == "worker":
        from winnow.engine.remote.worker import WorkerOptionError, run_worker
        from winnow.rewards.pooling_worker import run_pooling_worker

        try:
            if args.runner == "pooling":
                if not (args.rewards_config and args.reward):
                    parser.error("--runner pooling needs --rewards-config FILE and --reward NAME")
                return run_pooling_worker(
                    args.rewards_config,
                    args.reward,
                    args.host,
                    args.port,
                    extra,
                    data_dir=args.data_dir or default_data_dir(),
                    print_only=args.print_command,
                )
            return run_worker(
                args.model,
                args.host,
                args.port,
                extra,
                data_dir=args.data_dir or default_data_dir(),
                kv_cache_gib=args.kv_cache_gib,
                print_only=args.print_command,
                allow_dirs=args.allow_dirs,
            )
        except WorkerOptionError as exc:
            parser.error(str(exc))
    if args.command == "serve":
        from pydantic import ValidationError

        try:
            settings = serve_settings(args, extra)
        except ValidationError as exc:  # the settings' own words, never the values given
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            parser.error(f"invalid settings: {problems}")
        from winnow.server.redaction import redact_log_records
        from winnow.server.run import serve

        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        redact_log_records()  # remote URLs' credentials and queries never reach the log
        serve(settings)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
