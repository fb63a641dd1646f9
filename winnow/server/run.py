"""Run the server: build the engine, wrap it in the app, serve with uvicorn."""

from __future__ import annotations

import faulthandler
import logging
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from winnow.engine import build_engine
from winnow.rewards.configs import RewardConfigError
from winnow.rewards.policy_check import Policy
from winnow.rewards.registry import RewardSet, build_rewards, default_configs, load_configs
from winnow.server.app import create_app
from winnow.server.lifecycle import Drain
from winnow.server.serving import ServerState
from winnow.settings import Settings

log = logging.getLogger("winnow.server")

# After the first SIGTERM / SIGINT the process ends by force at --shutdown-timeout plus this,
# whatever still runs: requests are aborted at the deadline, uvicorn stops waiting for
# connections 3 s later, and what is left is for the rewards' and the engine's shutdown.
HARD_EXIT_GRACE = 8.0


def serve(settings: Settings) -> None:
    engine = build_engine(settings)
    try:
        rewards = server_rewards(settings, engine)
    except RewardConfigError as exc:  # a configuration error, said as one (no traceback)
        raise SystemExit(f"winnow serve: {exc}") from None
    run_app(create_app(settings, engine, rewards), settings)


def policy_of(settings: Settings, engine: Any) -> Policy:
    """The served model: ``--model``, else the directory the local engine serves (the embedded
    default model); a remote backend without ``--model`` has none here."""
    model = settings.model or getattr(engine, "model", None)
    if model is None:
        return Policy(None)
    from winnow.models.default_model import default_model_dir

    default = default_model_dir(settings.data_dir).resolve()
    return Policy(str(model), is_default=Path(model).resolve() == default)


def server_rewards(settings: Settings, engine: Any) -> RewardSet:
    """The configured rewards (``--rewards-config``, else the shipped ones on the default model),
    probes on the served model's states unless they name a backbone, every probe checked to have
    been trained on the served model (:mod:`winnow.rewards.policy_check`)."""
    policy = policy_of(settings, engine)
    has_dir = policy.model_dir is not None and Path(policy.model_dir).is_dir()
    return build_rewards(
        load_configs(settings.rewards_config)
        if settings.rewards_config
        else default_configs(default_model=policy.is_default),
        default_model_dir=policy.model_dir if has_dir else None,
        engine=engine,
        prefix_cache_bytes=settings.reward_prefix_cache_mib * 2**20,
        policy=policy,
    )


def run_app(app: Any, settings: Settings) -> None:
    """Serve ``app`` in this process until SIGTERM / SIGINT, then drain and exit, by force at
    ``--shutdown-timeout`` + :data:`HARD_EXIT_GRACE` (``winnow serve``; tests run this in a
    subprocess: it may end the process)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # a backstop: the app's own drain aborts what is left at --shutdown-timeout
        timeout_graceful_shutdown=int(settings.shutdown_timeout) + 3,
    )
    DrainingServer(
        config, app_state(app).drain, hard_exit_after=settings.shutdown_timeout + HARD_EXIT_GRACE
    ).run()


class DrainingServer(uvicorn.Server):
    """uvicorn, telling the app at the first SIGTERM / SIGINT so that it starts draining (new
    requests 503, in-flight ones until --shutdown-timeout, then aborted) while uvicorn waits.

    With ``hard_exit_after`` (seconds; only where this server owns the process), the first
    signal also arms a watchdog that ends the process that many seconds later whatever it is
    doing: a thread wedged in a reward backend or the engine, a shutdown hook that waits for it,
    non-daemon threads that never end. It is faulthandler's, a C thread that needs no GIL: it
    writes every thread's stack to stderr (what was stuck) and exits with status 1."""

    def __init__(
        self, config: uvicorn.Config, drain: Drain | None, hard_exit_after: float | None = None
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.hard_exit_after = hard_exit_after
        self._armed = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain is not None:
            self.drain.begin()
        if self.hard_exit_after is not None and not self._armed:
            self._armed = True
            faulthandler.dump_traceback_later(self.hard_exit_after, exit=True)
            log.info("shutting down; the process ends by force in %g s", self.hard_exit_after)
        super().handle_exit(sig, frame)


def app_state(app: Any) -> ServerState:
    """The ServerState inside an app made by create_app (possibly wrapped by the body limit)."""
    inner = getattr(app, "app", app)
    return inner.state.winnow
