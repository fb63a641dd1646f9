"""The generator seam and its backends; :func:`build_engine` picks one from the settings."""

from __future__ import annotations

from winnow.engine.base import Engine, EngineError, EngineUnavailable, SamplingSpec
from winnow.settings import Settings

__all__ = ["Engine", "EngineError", "EngineUnavailable", "SamplingSpec", "build_engine"]


def build_engine(settings: Settings) -> Engine:
    """The local vLLM engine (default model unless --model), or remote vLLM servers."""
    if settings.backend == "remote":
        from winnow.engine.remote.backend import RemoteEngine

        if not settings.remote_urls:
            raise ValueError("--backend remote needs at least one --remote-url")
        key = settings.remote_api_key.get_secret_value() if settings.remote_api_key else None
        return RemoteEngine(
            settings.remote_urls, api_key=key, served_name=settings.served_model_name
        )

    from winnow.engine.vllm_local import VllmEngine

    model = settings.model
    if model is None:
        from winnow.models.default_model import build_default_model

        model = str(build_default_model(settings.data_dir))
    return VllmEngine(
        model,
        served_name=settings.served_model_name,
        engine_args=settings.engine_args,
        cache_dir=settings.data_dir / "cache",
        kv_cache_gib=settings.kv_cache_gib,
    )
