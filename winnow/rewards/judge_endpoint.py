"""The judge's other endpoint: any OpenAI-compatible server (vLLM, SGLang, a hosted API) asked
for one verdict token with its top log-probabilities, as the LLM-as-judge setups its-hub users
have. The key is read from the environment variable the configuration names (never written in
the configuration, never shown by ``GET /v1/rewards``).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from winnow.rewards.base import RewardError
from winnow.rewards.configs import JudgeConfig, RewardConfigError


class JudgeEndpoint:
    """``POST {base_url}/chat/completions`` with ``max_tokens=1, temperature=0, logprobs``."""

    def __init__(self, config: JudgeConfig, top_logprobs: int) -> None:
        assert config.base_url is not None and config.model is not None
        self.name = config.name
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.model = config.model
        self.top_logprobs = top_logprobs
        self.timeout = config.timeout
        self.headers: dict[str, str] = {}
        if config.api_key_env is not None:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise RewardConfigError(
                    f"reward {config.name!r}: the environment variable {config.api_key_env} "
                    "holding the judge's API key is not set"
                )
            self.headers["Authorization"] = f"Bearer {key}"
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)
        return self._client

    async def verdict(self, content: str) -> tuple[list[tuple[int, str, float]], int]:
        """The first token's candidates ``(id, text, logprob)`` (ids stand for texts: the API
        gives none) and the prompt tokens the endpoint counted."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        try:
            response = await self.client().post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise RewardError(f"reward {self.name!r}: the judge endpoint failed: {exc}") from None
        if response.status_code != 200:
            raise RewardError(
                f"reward {self.name!r}: the judge endpoint answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        try:
            data: dict[str, Any] = response.json()
            first = data["choices"][0]["logprobs"]["content"][0]
            top = [(t["token"], float(t["logprob"])) for t in first.get("top_logprobs") or []]
            top.append((first["token"], float(first["logprob"])))
            tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise RewardError(
                f"reward {self.name!r}: the judge endpoint gave no first-token logprobs ({exc!r})"
            ) from None
        ids: dict[str, int] = {}
        return [(ids.setdefault(text, len(ids)), text, lp) for text, lp in top], tokens

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
