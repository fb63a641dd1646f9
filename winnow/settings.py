"""Server settings: one pydantic model, filled from the command line or WINNOW_* variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Where built models and caches live: $WINNOW_DATA_DIR, else $XDG_CACHE_HOME/winnow."""
    if explicit := os.environ.get("WINNOW_DATA_DIR"):
        return Path(explicit)
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "winnow"


class Settings(BaseSettings):
    # hide_input_in_errors: a refused api_key must not be printed in the error
    model_config = SettingsConfigDict(
        env_prefix="WINNOW_", extra="forbid", hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(None, description="Require this bearer key on /v1/*.")
    model: str | None = Field(None, description="Model directory; default: the embedded model.")
    served_model_name: str | None = Field(None, description="Name clients use; default: dir name.")
    backend: Literal["local", "remote"] = "local"
    remote_urls: list[str] = Field(default_factory=list, description="vLLM servers (remote).")
    remote_api_key: SecretStr | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    rewards_config: Path | None = Field(None, description="JSON list of reward configurations.")
    # per-request caps
    max_n: int = Field(64, ge=1, le=128, description="Largest n (and strategy budget) accepted.")
    max_tokens_cap: int | None = Field(None, ge=1, description="Largest max_tokens accepted.")
    request_timeout: float | None = Field(600.0, gt=0, description="Wall-time cap per request (s).")
    max_request_tokens: int | None = Field(
        None, ge=1, description="Largest strategy token budget (kept + discarded) per request."
    )
    max_request_sequences: int = Field(
        256,
        ge=1,
        description="Most sequences one request may sample at once (prompts x candidates per "
        "prompt), and most items one /v1/rewards request may score.",
    )
    max_prompt_chars: int = Field(
        1_000_000,
        ge=1,
        description="Most characters of prompt text per request (prompts and chat messages, each "
        "message counted with 32 more for its template), checked before any templating or "
        "tokenization.",
    )
    reward_timeout: float | None = Field(
        120.0, gt=0, description="Wall-time cap per reward call (s); past it the request is 504."
    )
    reward_tap: bool = Field(
        True,
        description="Score probe rewards on the policy's final layer inside the engine while it "
        "generates (no second forward pass); off: every score re-encodes the text.",
    )
    reward_prefix_cache_mib: int = Field(
        512, ge=0, description="Reward backbones' KV cache of scored prefixes (MiB); 0: off."
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish (s)."
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_running_requests: int = Field(64, ge=1, description="Requests served at once.")
    max_queued_requests: int = Field(256, ge=0, description="Requests waiting; past that, 429.")
    # engine
    kv_cache_gib: int = Field(2, ge=1, description="KV cache size on CPU machines (GiB).")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Passed through to vLLM's AsyncEngineArgs."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty key would accept a bare ``Authorization: Bearer``; a key with spaces at
        either end could never match (the header's token is stripped)."""
        if value is None:
            return None
        key = value.get_secret_value()
        if not key.strip():
            raise ValueError(
                "the API key is empty (WINNOW_API_KEY or --api-key): give a key, or unset it "
                "to serve without one"
            )
        if key != key.strip():
            raise ValueError("the API key starts or ends with whitespace; remove it")
        return value
