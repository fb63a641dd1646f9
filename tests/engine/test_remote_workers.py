"""Remote workers with winnow's processors (``winnow worker``), on the real engine: a real
``winnow worker`` on the default model, its processors found by the probe and used (the probe,
routing and the ``vllm_xargs`` against the mocked vLLM are in tests/unit/test_remote_workers.py)."""

from __future__ import annotations

import sys

import pytest

from winnow.clients.launch import free_port, server_process
from winnow.engine.base import SamplingSpec, SegmentSpec
from winnow.engine.processors.specs import VasSpec
from winnow.engine.remote.backend import RemoteEngine

pytestmark = pytest.mark.anyio

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.engine
async def test_winnow_worker_runs_cards_and_vas(default_model_dir: str, tmp_path) -> None:
    """A real ``winnow worker`` on the default model: the probe finds its processors, a cards
    call is cut where the model is uncertain, a vas call is steered."""
    from winnow.heads.value import available

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "winnow.cli", "worker", "--model", default_model_dir,
        "--port", str(port), "--kv-cache-gib", "1", "--max-model-len", "2048",
    ]  # fmt: skip
    with server_process(command, url, tmp_path / "worker.log", timeout=600):
        engine = RemoteEngine([url])
        await engine.start()
        try:
            assert engine.info.extra["steering"] == ["segment", "vas"]
            assert engine.info.tap_model is None
            sentinel = engine._sentinel
            assert sentinel is not None
            prompt = tuple(await engine.tokenize(await engine.apply_chat_template(QUESTION)))
            cards = SamplingSpec(
                prompt=prompt, n=4, max_tokens=48, seed=7, segment=SegmentSpec(entropy=1.0)
            )
            gen = await engine.generate(cards)
            cuts = [c for c in gen.completions if c.stop_reason == "segment"]
            assert cuts, [(c.finish_reason, c.stop_reason) for c in gen.completions]
            for c in cuts:
                assert c.finish_reason == "stop" and c.unseen_tokens == 1
                assert sentinel not in c.token_ids and len(c.token_ids) >= 4
            streamed = [d async for e in engine.stream(cards.replace(n=1)) for d in e.deltas]
            assert streamed[-1].finish_reason is not None
            assert all(sentinel not in d.token_ids for d in streamed)

            values = {str(available()["default"]): 3.0}
            vas = SamplingSpec(
                prompt=prompt, max_tokens=16, temperature=0, vas=VasSpec(values=values)
            )
            (c,) = (await engine.generate(vas)).completions
            assert c.token_ids and c.text
        finally:
            await engine.shutdown()
