"""``winnow worker``: the ``vllm serve`` command it runs, built and checked with vLLM's own
argument parser. No process is started."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from winnow.cli import build_parser, main
from winnow.engine.processors import PROCESSORS
from winnow.engine.remote.worker import (
    VLLM_SERVER,
    engine_flags,
    given_options,
    worker_command,
    worker_environment,
)


def values_after(command: list[str], flag: str) -> list[str]:
    """The tokens after ``flag`` up to the next option."""
    start = command.index(flag) + 1
    end = next((i for i in range(start, len(command)) if command[i].startswith("--")), None)
    return command[start:end]


def test_the_command_loads_winnow_processors_with_winnow_engine_settings(tmp_path: Path) -> None:
    command = worker_command(str(tmp_path), "0.0.0.0", 8123, cpu=True)
    assert command[:3] == [sys.executable, "-m", VLLM_SERVER]
    assert values_after(command, "--model") == [str(tmp_path)]
    assert values_after(command, "--host") == ["0.0.0.0"]
    assert values_after(command, "--port") == ["8123"]
    assert values_after(command, "--logits-processors") == list(PROCESSORS)
    assert values_after(command, "--dtype") == ["float32"]
    assert values_after(command, "--block-size") == ["32"]
    assert values_after(command, "--max-num-batched-tokens") == ["8192"]  # no config.json
    assert values_after(command, "--seed") == ["0"]
    for flag in ("--enforce-eager", "--no-enable-chunked-prefill", "--enable-prefix-caching",
                 "--enable-tokenizer-info-endpoint", "--enable-prompt-tokens-details"):  # fmt: skip
        assert flag in command, flag
    on_gpu = worker_command(str(tmp_path), "h", 1, cpu=False)
    assert "--dtype" not in on_gpu and "--enforce-eager" not in on_gpu
    assert values_after(on_gpu, "--logits-processors") == list(PROCESSORS)


def test_given_options_replace_winnow_defaults(tmp_path: Path) -> None:
    extra = ["--max-model-len", "1024", "--dtype=bfloat16", "--no-enforce-eager",
             "--no-enable-prompt-tokens-details", "--api-key", "k"]  # fmt: skip
    assert given_options(extra) == {
        "max_model_len": "1024",
        "dtype": "bfloat16",
        "enforce_eager": None,
        "enable_prompt_tokens_details": None,
        "api_key": "k",
    }
    command = worker_command(str(tmp_path), "h", 1, extra, cpu=True)
    assert command[-len(extra) :] == extra  # passed through, last
    assert "--enforce-eager" not in command and "float32" not in command
    assert "--enable-prompt-tokens-details" not in command
    assert values_after(command, "--max-num-batched-tokens") == ["2048"]  # sized to 1024


def test_engine_flags() -> None:
    args = {"a_b": True, "c": False, "d": [1, "x"], "e": None, "f": 2.5}
    assert engine_flags(args) == ["--a-b", "--no-c", "--d", "1", "x", "--f", "2.5"]
    assert engine_flags({"pooler_config": {"task": "token_classify"}}) == [
        "--pooler-config", '{"task": "token_classify"}'
    ]  # fmt: skip


def test_vllm_reads_the_command_as_meant(tmp_path: Path) -> None:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    command = worker_command(
        str(tmp_path), "127.0.0.1", 8123, ["--max-model-len", "1024"], cpu=True
    )
    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(command[3:])
    assert parsed.model == str(tmp_path) and parsed.port == 8123
    assert parsed.logits_processors == list(PROCESSORS)
    assert (parsed.dtype, parsed.block_size, parsed.max_model_len) == ("float32", 32, 1024)
    assert parsed.enforce_eager and parsed.enable_prefix_caching
    assert parsed.enable_chunked_prefill is False
    assert parsed.enable_tokenizer_info_endpoint and parsed.enable_prompt_tokens_details


def test_environment_is_winnow_engine_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "5")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # an engine started earlier in this process set these (configure_environment)
    for key in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR",
                "VLLM_NO_USAGE_STATS"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    env = worker_environment(tmp_path, 3, cpu=True)
    assert "VLLM_CPU_KVCACHE_SPACE" not in env  # already set: kept
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "cache" / "vllm")


def test_winnow_worker_prints_its_command(tmp_path: Path, capsys) -> None:
    args, extra = build_parser().parse_known_args(["worker", "--api-key", "k"])
    assert (args.host, args.port, extra) == ("127.0.0.1", 8001, ["--api-key", "k"])
    argv = ["worker", "--model", str(tmp_path), "--port", "9001", "--print-command",
            "--data-dir", str(tmp_path), "--served-model-name", "smol"]  # fmt: skip
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert f"-m {VLLM_SERVER} --model {tmp_path}" in line
    assert "--port 9001" in line and line.endswith("--served-model-name smol")
    with pytest.raises(SystemExit):
        main(["model", "build-default", "--no-such-flag"])  # other commands still refuse extras
