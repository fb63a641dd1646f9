"""The `winnow` command (unit): option parsing. `winnow serve` as a user runs it is in
tests/engine/test_cli.py."""

from __future__ import annotations

import pytest

from winnow.cli import build_parser, parse_engine_args, serve_settings


def test_engine_options_pass_through_to_vllm():
    args, extra = build_parser().parse_known_args(
        ["serve", "--port", "9000", "--tensor-parallel-size", "2", "--max-model-len", "1024"]
    )
    assert args.port == 9000
    engine_args = parse_engine_args(extra)
    assert engine_args["tensor_parallel_size"] == 2
    assert engine_args["max_model_len"] == 1024
    assert "port" not in engine_args


def test_settings_come_from_options_then_environment(monkeypatch):
    monkeypatch.setenv("WINNOW_API_KEY", "from-env")
    monkeypatch.setenv("WINNOW_MAX_N", "8")
    args, extra = build_parser().parse_known_args(["serve", "--max-n", "4"])
    settings = serve_settings(args, extra)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-env"
    assert settings.max_n == 4  # the option wins over the variable
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    args, extra = build_parser().parse_known_args(["serve", "--api-key", "opt"])
    assert serve_settings(args, extra).api_key.get_secret_value() == "opt"


def test_unknown_engine_option_is_refused():
    with pytest.raises(SystemExit):
        parse_engine_args(["--no-such-engine-flag", "3"])
