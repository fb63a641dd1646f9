"""What goes over the wire to a remote vLLM server and back, as plain functions: the
``/v1/completions`` body of one engine call, vLLM's error bodies and statuses as the seam's
errors, and its responses (logprobs named ``token_id:N``, prompt logprobs, SSE events) read into
the seam's shapes. :class:`winnow.engine.remote.backend.RemoteEngine` does the sending.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from winnow.engine.base import (
    SEGMENT_STOP,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    SamplingSpec,
    TokenLogprob,
)
from winnow.engine.processors.specs import SEGMENT, SEGMENT_KEY, VAS, VAS_KEY, as_xargs

TOKEN_ID_PREFIX = "token_id:"
XARG_SCALARS = (str, int, float)
STEERING_KEYS = (SEGMENT_KEY, VAS_KEY)
REFUSAL = (
    "cards and vas steer decoding with winnow's logits processors, which run in winnow's local "
    "engine or on servers started with `winnow worker`: none of the remote vLLM servers does"
)
CONFIDENCE_REFUSAL = (
    "token confidence (deepconf, selection 'confidence') is read inside winnow's local engine; "
    "a remote engine cannot serve it"
)


# ---- errors -------------------------------------------------------------------------------------


def error_message(text: str) -> str:
    """The message of a vLLM error body (``{"error": {"message": ...}}``), else the raw text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip() or "(empty response)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return text.strip()


def error_for_status(status: int, message: str, url: str = "") -> EngineError:
    """Map a remote HTTP status to the seam's errors: 4xx is the caller's fault."""
    where = f" at {url}" if url else ""
    if status in (401, 403):
        return EngineError(f"remote vLLM{where} refused our credentials ({status}): {message}")
    if status in (429, 502, 503, 504):
        return EngineUnavailable(f"remote vLLM{where} is not taking work ({status}): {message}")
    if 400 <= status < 500:
        return EngineRequestError(message)
    return EngineError(f"remote vLLM{where} failed ({status}): {message}")


async def raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    await response.aread()
    raise error_for_status(response.status_code, error_message(response.text), origin(response))


def origin(response: httpx.Response) -> str:
    """``scheme://host:port`` of the server that sent ``response`` (for messages)."""
    url = response.request.url
    return f"{url.scheme}://{url.netloc.decode()}"


# ---- requests -----------------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """``http://host:8000/v1/`` and ``http://host:8000`` name the same server."""
    url = url.strip().rstrip("/")
    return url.removesuffix("/v1")


def vllm_xargs(extra_args: Mapping[str, Any]) -> dict[str, Any]:
    """vLLM's ``vllm_xargs`` carries strings, numbers and flat lists of them, nothing nested."""
    for key, value in extra_args.items():
        items = value if isinstance(value, list | tuple) else [value]
        if not all(isinstance(item, XARG_SCALARS) for item in items):
            raise EngineRequestError(
                f"extra_args[{key!r}]: a remote vLLM takes only strings, numbers or lists of "
                f"them (got {type(value).__name__})"
            )
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in extra_args.items()
    }


def refusal() -> EngineRequestError:
    return EngineRequestError(REFUSAL)


def needed(spec: SamplingSpec) -> frozenset[str]:
    """winnow's processors that a call needs on the server that runs it."""
    extra = spec.extra_args or {}
    needs = set()
    if spec.segment is not None or SEGMENT_KEY in extra:
        needs.add(SEGMENT)
    if spec.vas is not None or VAS_KEY in extra:
        needs.add(VAS)
    return frozenset(needs)


def completion_payload(
    spec: SamplingSpec,
    model: str,
    *,
    stream: bool,
    steered: bool = False,
    sentinel: int | None = None,
) -> dict[str, Any]:
    """The ``/v1/completions`` body for one engine call (text prompts get vLLM's BOS handling).

    ``steered``: the call goes to a worker that runs winnow's processors (``winnow worker``),
    so the segment and vas specs go as JSON strings in ``vllm_xargs`` (the segment's
    ``sentinel`` joins the stop token ids, as in the local engine); else they are refused.
    """
    if needed(spec) and not steered:
        raise refusal()
    if spec.confidence is not None:
        raise EngineRequestError(CONFIDENCE_REFUSAL)
    payload: dict[str, Any] = {
        "model": model,
        "prompt": spec.prompt if isinstance(spec.prompt, str) else list(spec.prompt),
        **spec.vllm_settings(),
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }
    if spec.logprobs is not None:
        payload["logprobs"] = spec.logprobs
    # vLLM refuses prompt logprobs when streaming, and a StreamEvent has no place for them.
    if spec.prompt_logprobs is not None and not stream:
        payload["prompt_logprobs"] = spec.prompt_logprobs
    extra = dict(spec.extra_args or {})
    if steered:  # raw processor arguments too: as the typed specs, JSON strings
        extra.update(
            as_xargs({k: extra[k] for k in STEERING_KEYS if isinstance(extra.get(k), dict)})
        )
    if steered and spec.segment is not None:
        if sentinel is None:
            raise EngineRequestError("this model has no sentinel token to end uncertainty segments")
        payload["stop_token_ids"] = [*payload["stop_token_ids"], sentinel]
        extra.update(spec.segment.xargs(sentinel))
    if steered and spec.vas is not None:
        extra.update(spec.vas.xargs())
    if extra:
        payload["vllm_xargs"] = vllm_xargs(extra)
    if stream:
        payload["stream"] = True
    return payload


# ---- responses ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawLogprob:
    """A logprob entry before token texts are known (vLLM sends ids only, see module doc)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()

    def ids(self) -> Iterable[int]:
        yield self.token_id
        yield from (tid for tid, _ in self.top)

    def with_texts(self, texts: Mapping[int, str]) -> TokenLogprob:
        top = tuple((tid, texts.get(tid, ""), lp) for tid, lp in self.top)
        return TokenLogprob(self.token_id, texts.get(self.token_id, ""), self.logprob, top)


ChoiceTokens = tuple[list[int], list[RawLogprob] | None, Any]
"""A choice's token ids, raw logprobs and stop reason."""


def choice_tokens(choice: Mapping[str, Any], k: int | None, sentinel: int | None) -> ChoiceTokens:
    """A choice's ids, logprobs (top ``k``) and stop reason, a segment cut reported as the local
    engine does: the worker stopped on the sentinel (a stop token id), which is dropped from the
    ids and logprobs (it is not text), and the stop reason is ``"segment"``. ``sentinel``: the
    call's, None when it asked for no segment."""
    raw = completion_logprobs(choice.get("logprobs"), k)
    ids, stop_reason = [int(t) for t in choice.get("token_ids") or []], choice.get("stop_reason")
    if sentinel is None or stop_reason != sentinel:
        return ids, raw, stop_reason
    if ids and ids[-1] == sentinel:
        ids = ids[:-1]
        raw = raw[: len(ids)] if raw is not None else None
    return ids, raw, SEGMENT_STOP


def parse_token_id(token: str) -> int:
    if not token.startswith(TOKEN_ID_PREFIX):
        raise EngineError(f"remote vLLM named a token {token!r}, not {TOKEN_ID_PREFIX}N")
    return int(token[len(TOKEN_ID_PREFIX) :])


def top_k(alternatives: Mapping[str, float] | None, k: int) -> tuple[tuple[int, float], ...]:
    """The top-k alternatives of one position, by rank.

    vLLM lists the sampled token first, then the top-k by rank, merging duplicates: more than
    ``k`` entries means the sampled token is outside the top-k, else it sits among them.
    """
    if not alternatives:
        return ()
    items = [(parse_token_id(key), float(value)) for key, value in alternatives.items()]
    if len(items) > k:
        return tuple(items[1 : k + 1])
    return tuple(sorted(items, key=lambda item: -item[1]))


def completion_logprobs(
    logprobs: Mapping[str, Any] | None, k: int | None
) -> list[RawLogprob] | None:
    """The ``logprobs`` object of one choice (OpenAI completions layout) as raw entries."""
    if k is None or logprobs is None:
        return None
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or [None] * len(tokens)
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    return [
        RawLogprob(
            parse_token_id(token),
            float("-inf") if value is None else float(value),
            top_k(alternatives, k),
        )
        for token, value, alternatives in zip(tokens, values, tops, strict=True)
    ]


def prompt_logprob(
    token_id: int, entry: Mapping[str, Any] | None, k: int, texts: Mapping[int, str]
) -> TokenLogprob | None:
    """One prompt position: vLLM sends ``{id: {logprob, rank, decoded_token}}`` here."""
    if entry is None:
        return None
    parsed = {int(key): value for key, value in entry.items()}

    def text(tid: int) -> str:
        decoded = parsed[tid].get("decoded_token")
        return str(decoded) if decoded is not None else texts.get(tid, "")

    ranked = sorted(
        (
            tid
            for tid, value in parsed.items()
            if value.get("rank") is not None and value["rank"] <= k
        ),
        key=lambda tid: parsed[tid]["rank"],
    )
    top = tuple((tid, text(tid), float(parsed[tid]["logprob"])) for tid in ranked[:k])
    if token_id not in parsed:
        return TokenLogprob(token_id, texts.get(token_id, ""), float("-inf"), top)
    return TokenLogprob(token_id, text(token_id), float(parsed[token_id]["logprob"]), top)


def prompt_ids_without_text(choice: Mapping[str, Any]) -> Iterable[int]:
    for entry in choice.get("prompt_logprobs") or []:
        for key, value in (entry or {}).items():
            if value.get("decoded_token") is None:
                yield int(key)


def cached_tokens(usage: Mapping[str, Any] | None) -> int:
    """``usage.prompt_tokens_details.cached_tokens`` (vLLM fills it with
    ``--enable-prompt-tokens-details``), else 0."""
    details = (usage or {}).get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON ``data:`` events of a server-sent event stream, up to ``[DONE]``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators and ": keep-alive" comments
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if isinstance(event, dict) and "error" in event:
            error = event["error"] if isinstance(event["error"], dict) else {}
            raise error_for_status(int(error.get("code") or 500), error_message(data))
        yield event
