"""The `winnow` command (engine): `winnow serve` as a user runs it, on the default model."""

from __future__ import annotations

import sys

import openai
import pytest

from winnow.clients.launch import free_port, server_process


@pytest.mark.engine
def test_winnow_serve_answers_the_openai_sdk(default_model_dir, tmp_path):
    port = free_port()
    cmd = [
        sys.executable, "-m", "winnow.cli", "serve", "--port", str(port), "--api-key", "k",
        "--served-model-name", "smol", "--kv-cache-gib", "1", "--max-model-len", "1024",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with server_process(cmd, url, tmp_path / "serve.log", timeout=300):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k")
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
