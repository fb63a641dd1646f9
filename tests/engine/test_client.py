"""The typed client (engine): the async client against the real engine."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.serving import LiveServer
from winnow.clients import AsyncWinnowClient

# ---- the real engine -----------------------------------------------------------------------


@pytest.mark.engine
def test_async_client_against_real_engine(live_server: LiveServer):
    async def go() -> None:
        async with AsyncWinnowClient(live_server.base_url, api_key=live_server.api_key) as c:
            messages = [{"role": "user", "content": "What is 2 + 3?"}]
            r = await c.chat(messages, max_tokens=8, temperature=0, strategy="sample")
            assert r.usage is not None and r.usage.winnow is not None
            assert r.usage.winnow.generated_tokens == r.usage.completion_tokens
            assert r.usage.winnow.engine_calls == 1
            chunks = [ch async for ch in c.stream_completions("Once upon a time", max_tokens=6)]
            usage = chunks[-1].usage
            assert usage is not None and usage.completion_tokens == 6
            assert "".join(ch.choices[0].text for ch in chunks if ch.choices)

    asyncio.run(go())
