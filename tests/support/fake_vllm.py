"""A mocked vLLM OpenAI server for the remote engine's tests (tests/unit/test_remote_engine.py,
tests/unit/test_remote_workers.py), served to :class:`RemoteEngine` through an httpx mock
transport (:func:`mocked`).

The mocked server speaks a character tokenizer (token id = code point, ``§`` is the EOS and only
special token; ``<empty_output>`` is one token, id 16, as in SmolLM2), which keeps expected values
readable. Hosts named in ``FakeVllm.workers`` answer the capability probe as ``winnow worker``
does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from winnow.engine.processors.specs import PROBE_KEY, probe_answer
from winnow.engine.remote.backend import RemoteEngine

EOS = "§"
SPECIAL = {"<empty_output>": 16}  # one token, as in SmolLM2 (the segment sentinel)


def ids_of(text: str) -> list[int]:
    return [SPECIAL[text]] if text in SPECIAL else [ord(c) for c in text]


def text_of(ids: list[int]) -> str:
    names = {tid: text for text, tid in SPECIAL.items()}
    return "".join(names.get(i, chr(i)) for i in ids)


def lp_ids(*pairs: tuple[int, float]) -> dict[str, float]:
    return {f"token_id:{tid}": lp for tid, lp in pairs}


COMPLETION: dict[str, Any] = {
    "choices": [
        {
            "index": 1,
            "text": "No",
            "token_ids": [78, 111],
            "finish_reason": "length",
            "stop_reason": None,
            "logprobs": None,
        },
        {
            "index": 0,
            "text": "Hi",
            "token_ids": [72, 105],
            "finish_reason": "stop",
            "stop_reason": "!",
            "prompt_token_ids": [72, 105],
            "logprobs": {
                "tokens": ["token_id:72", "token_id:105"],
                "token_logprobs": [-0.1, -2.0],
                # first the sampled token, then the top-k by rank (vLLM's order)
                "top_logprobs": [
                    lp_ids((72, -0.1), (73, -2.5)),
                    lp_ids((105, -2.0), (33, -0.5), (63, -1.0)),
                ],
            },
            "prompt_logprobs": [
                None,
                {
                    "105": {"logprob": -3.0, "rank": 4, "decoded_token": "i"},
                    "33": {"logprob": -0.2, "rank": 1, "decoded_token": "!"},
                    "63": {"logprob": -1.1, "rank": 2, "decoded_token": None},
                },
            ],
        },
    ],
    "usage": {"prompt_tokens": 2, "prompt_tokens_details": {"cached_tokens": 16}},
}


def sse(*events: dict[str, Any] | str) -> bytes:
    """A server-sent event stream; strings starting with ``:`` are comments (keep-alives)."""
    lines = [
        e
        if isinstance(e, str) and e.startswith(":")
        else f"data: {e if isinstance(e, str) else json.dumps(e)}"
        for e in events
    ]
    return "".join(line + "\n\n" for line in lines).encode()


def chunk(index: int, text: str, prompt: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": index, "text": text, "token_ids": ids_of(text), "prompt_token_ids": prompt}
    return {"choices": [{**choice, **extra}]}


STREAM = sse(
    chunk(0, "H", [72, 105], logprobs={"tokens": ["token_id:72"], "top_logprobs": [None]}),
    chunk(1, "N", [72, 105]),
    ": keep-alive",
    chunk(0, "i", finish_reason="stop", stop_reason=None),
    chunk(1, "o", finish_reason="length"),
    {"choices": [], "usage": {"prompt_tokens": 2}},
    "[DONE]",
)


class FakeVllm:
    """Just enough of vLLM's HTTP API, as an ``httpx.MockTransport`` handler."""

    def __init__(
        self, model: str = "fake", *, tokenizer_info: bool = True, bos: int | None = None
    ) -> None:
        self.model = model
        self.bos = bos  # a BOS id /tokenize puts first when asked for special tokens
        self.tokenizer_info = tokenizer_info
        self.hits: Counter[str] = Counter()
        self.completions: list[dict[str, Any]] = []
        self.refuse: set[str] = set()  # hosts that refuse connections
        self.reply: tuple[int, Any] | None = None  # forced status and body for completions
        self.stream_body = STREAM
        self.healthy = True
        self.workers: dict[str, set[str]] = {}  # host -> winnow processors it runs
        self.probes: list[tuple[str, str]] = []  # (host, processor) asked
        self.completed_on: list[str] = []  # the host of each recorded completion

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.refuse:
            raise httpx.ConnectError("connection refused", request=request)
        self.hits[host] += 1
        body = json.loads(request.content) if request.content else {}
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": self.model, "max_model_len": 128}]})
        if path == "/tokenizer_info" and self.tokenizer_info:
            return httpx.Response(
                200, json={"eos_token": EOS, "added_tokens_decoder": {"167": EOS}}
            )
        if path == "/tokenize":
            text = body.get("prompt")
            if text is None:
                text = "".join(f"<{m['role']}>{m['content']}{EOS}" for m in body["messages"])
            ids = ids_of(text)
            if self.bos is not None and body.get("add_special_tokens", True):
                ids = [self.bos, *ids]
            return httpx.Response(200, json={"tokens": ids})
        if path == "/detokenize":
            return httpx.Response(200, json={"prompt": text_of(body["tokens"])})
        if path == "/health":
            return httpx.Response(200 if self.healthy else 503)
        if path == "/v1/completions" and PROBE_KEY in (body.get("vllm_xargs") or {}):
            name = body["vllm_xargs"][PROBE_KEY]
            self.probes.append((host, name))
            if name in self.workers.get(host, ()):
                error = {"message": probe_answer(name), "type": "BadRequestError", "code": 400}
                return httpx.Response(400, json={"error": error})
            return httpx.Response(200, json=COMPLETION)
        if path == "/v1/completions":
            self.completions.append(body)
            self.completed_on.append(host)
            if self.reply is not None:
                return httpx.Response(self.reply[0], json=self.reply[1])
            if body.get("stream"):
                return httpx.Response(200, content=self.stream_body)
            return httpx.Response(200, json=COMPLETION)
        return httpx.Response(404, json={"detail": "Not Found"})


@asynccontextmanager
async def mocked(
    fake: FakeVllm, urls: tuple[str, ...] = ("http://a",), **kwargs: Any
) -> AsyncIterator[RemoteEngine]:
    engine = RemoteEngine(list(urls), transport=fake.transport(), **kwargs)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()
