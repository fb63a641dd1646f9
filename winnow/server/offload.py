"""The engine's text work for the server (tokenizing, chat templating, decoding), off the event
loop where it is CPU work.

The local engine's ``tokenize``, ``detokenize`` and ``apply_chat_template`` are ``async def`` but
run the tokenizer (Rust) and the chat template (Jinja) synchronously: awaited on the event loop,
a long prompt or a thousand messages would stall every other request and /health. Here such an
engine's call runs in a thread of its own (one, as vLLM's server tokenizes: the tokenizer is
shared); the coroutine is created and driven there, and must finish without suspending, which
a synchronous body does. An engine whose text calls are real I/O (the remote engine) is awaited
on the loop as before.

An engine says which it is with its ``blocking_text_ops`` attribute
(:attr:`winnow.engine.base.Engine.blocking_text_ops`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from winnow.engine.base import ChatMessage, Engine

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None


def blocks(engine: Engine) -> bool:
    """Whether ``engine``'s text calls are synchronous CPU work inside ``async def``."""
    return bool(getattr(engine, "blocking_text_ops", False))


def _drive(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine that never suspends to its end, in the calling thread."""
    coro = call()
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("an engine text call suspended; it cannot run off the event loop")


async def _run(engine: Engine, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    if not blocks(engine):
        return await call()
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(1, thread_name_prefix="winnow-text")
    return await asyncio.get_running_loop().run_in_executor(_executor, _drive, call)


async def tokenize(engine: Engine, text: str, add_special_tokens: bool = False) -> list[int]:
    return await _run(engine, lambda: engine.tokenize(text, add_special_tokens=add_special_tokens))


async def detokenize(engine: Engine, token_ids: Sequence[int]) -> str:
    return await _run(engine, lambda: engine.detokenize(token_ids))


async def apply_chat_template(
    engine: Engine, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
) -> str:
    return await _run(engine, lambda: engine.apply_chat_template(messages, add_generation_prompt))


async def apply_chat_templates(
    engine: Engine, conversations: Sequence[Sequence[ChatMessage]]
) -> list[str]:
    """Many conversations in one hop to the thread (a /v1/rewards request's items)."""
    if not blocks(engine):
        return [await engine.apply_chat_template(messages) for messages in conversations]

    async def all_of_them() -> list[str]:
        return [await engine.apply_chat_template(messages) for messages in conversations]

    return await _run(engine, all_of_them)
