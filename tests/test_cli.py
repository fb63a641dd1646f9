"""The `winnow` command: option parsing, and `winnow serve` as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.conftest import free_port
from winnow.cli import build_parser, parse_engine_args


def test_engine_options_pass_through_to_vllm():
    args, extra = build_parser().parse_known_args(
        ["serve", "--port", "9000", "--tensor-parallel-size", "2", "--max-model-len", "1024"]
    )
    assert args.port == 9000
    engine_args = parse_engine_args(extra)
    assert engine_args["tensor_parallel_size"] == 2
    assert engine_args["max_model_len"] == 1024
    assert "port" not in engine_args


def test_unknown_engine_option_is_refused():
    with pytest.raises(SystemExit):
        parse_engine_args(["--no-such-engine-flag", "3"])


@pytest.mark.engine
def test_winnow_serve_answers_the_openai_sdk(default_model_dir):
    port = free_port()
    cmd = [
        sys.executable, "-m", "winnow.cli", "serve", "--port", str(port), "--api-key", "k",
        "--served-model-name", "smol", "--kv-cache-gib", "1", "--max-model-len", "1024",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ})  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k")
        r = client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=20,
            temperature=0,
        )
        assert "Paris" in r.choices[0].message.content
        models = client.models.list().data
        assert [m.id for m in models] == ["smol"]
        assert models[0].model_extra["max_model_len"] == 1024  # the passed-through engine arg
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: uvicorn drains, the engine shuts down
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
