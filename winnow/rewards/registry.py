"""Named rewards, configured at start-up and chosen per request by name.

A configuration is a list of :data:`~winnow.rewards.configs.RewardConfig` (JSON via
``--rewards-config FILE``). With the embedded default model and no configuration, winnow serves
the shipped, trained defaults: ``default`` (outcome probe), ``default_prm`` (process probe) and
``verifier`` (rule-based).
Missing files or bad settings fail at start-up with a message naming the reward.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from winnow.rewards.base import (
    Reward,
    RewardInfo,
    Scored,
    StepScored,
)
from winnow.rewards.batcher import BatchObserver
from winnow.rewards.configs import (
    CompositeConfig,
    JudgeConfig,
    ProbeConfig,
    RewardConfigError,
    RewardConfigList,
    SequenceClassifierConfig,
    StepTagPRMConfig,
    VerifierConfig,
)
from winnow.rewards.policy_check import Policy

T = TypeVar("T")
S = TypeVar("S", Scored, StepScored)
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "rewards"


def load_configs(path: str | Path) -> list[Any]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RewardConfigError(f"cannot read rewards config {path}: {exc}") from None
    return RewardConfigList.validate_python(raw)


def default_configs(default_model: bool) -> list[Any]:
    """The shipped rewards: the trained probes only fit the default model's hidden states."""
    configs: list[Any] = [VerifierConfig(name="verifier")]
    if default_model:
        for name in ("default", "default_prm"):
            if (ASSETS / name / "probe.json").exists():
                configs.insert(0, ProbeConfig(name=name))
    return configs


class UnknownReward(KeyError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = list(known)

    def __str__(self) -> str:
        return f"unknown reward {self.name!r}; configured: {', '.join(self.known) or 'none'}"


class RewardSet:
    """All configured rewards of a server, by name."""

    def __init__(self, rewards: dict[str, Reward] | None = None) -> None:
        self._rewards: dict[str, Reward] = dict(rewards or {})
        self.call_timeout: float | None = None  # per reward call (the server's --reward-timeout)
        self.tap = True  # let the engine score probe rewards while it generates (--no-reward-tap)

    def names(self) -> list[str]:
        return sorted(self._rewards)

    def get(self, name: str) -> Reward:
        try:
            return self._rewards[name]
        except KeyError:
            raise UnknownReward(name, self.names()) from None

    def infos(self) -> list[RewardInfo]:
        return [self._rewards[n].info for n in self.names()]

    def add(self, reward: Reward) -> None:
        if reward.info.name in self._rewards:
            raise RewardConfigError(f"reward {reward.info.name!r} configured twice")
        self._rewards[reward.info.name] = reward

    async def start(self) -> None:
        for name in self.names():
            try:
                await self._rewards[name].start()
            except Exception as exc:
                raise RewardConfigError(f"reward {name!r} failed to start: {exc}") from exc

    async def shutdown(self) -> None:
        for reward in self._rewards.values():
            await reward.shutdown()


RewardRef = str | dict[str, float]
"""How a request names a reward: a configured name, or weights over configured names."""


def build_rewards(
    configs: Sequence[Any],
    *,
    default_model_dir: str | None,
    engine: Any = None,
    observer: BatchObserver | None = None,
    prefix_cache_bytes: int | None = None,
    policy: Policy | None = None,
) -> RewardSet:
    """Instantiate every configured reward (weights load later, in :meth:`RewardSet.start`).

    Probes on one backbone share its weights and its prefix cache (``prefix_cache_bytes``).
    With ``policy`` (the served model; a server always gives it) a probe whose head was not
    trained on that model is refused (:mod:`winnow.rewards.policy_check`)."""
    from winnow.rewards.backbone import DEFAULT_PREFIX_CACHE_BYTES, Backbone

    cache_bytes = DEFAULT_PREFIX_CACHE_BYTES if prefix_cache_bytes is None else prefix_cache_bytes

    rewards = RewardSet()
    backbones: dict[str, Backbone] = {}

    def backbone(config: ProbeConfig) -> Backbone:
        model = config.backbone or default_model_dir
        if model is None:
            raise RewardConfigError("a probe reward needs a backbone: set 'backbone'")
        placement = _placement(config)
        key = f"{model} on {placement}"  # probes on one backbone and placement share it
        if key not in backbones:
            backbones[key] = Backbone(model, prefix_cache_bytes=cache_bytes, placement=placement)
        return backbones[key]

    composites = []
    for config in configs:
        if isinstance(config, CompositeConfig):
            composites.append(config)
        else:
            if isinstance(config, ProbeConfig) and policy is not None:
                _check_policy(config, policy)
            rewards.add(_build_one(config, backbone, engine, observer, cache_bytes))
    for config in composites:
        from winnow.rewards.composite import CompositeReward

        for part in config.weights:
            rewards.get(part) if part in rewards.names() else _missing(config.name, part, rewards)
        rewards.add(CompositeReward(config.name, rewards, config.weights))
    return rewards


def probe_directory(config: ProbeConfig) -> Path:
    return Path(config.path) if config.path else ASSETS / config.name


def _check_policy(config: ProbeConfig, policy: Policy) -> None:
    from winnow.heads.probe import load_head
    from winnow.rewards.policy_check import check_probe

    if config.allow_other_policy:
        return
    directory = probe_directory(config)
    if not (directory / "probe.json").exists():
        return  # _build_one says so
    head, meta = load_head(directory)
    check_probe(config.name, directory, meta, head.in_features, policy, config.backbone)


def _missing(composite: str, part: str, rewards: RewardSet) -> None:
    raise RewardConfigError(
        f"composite reward {composite!r} names unknown reward {part!r}; "
        f"configured: {', '.join(rewards.names())}"
    )


def _build_one(
    config: Any, backbone: Any, engine: Any, observer: BatchObserver | None, cache_bytes: int
) -> Reward:
    if isinstance(config, ProbeConfig):
        from winnow.rewards.probe import ProbeReward

        directory = probe_directory(config)
        if not (directory / "probe.json").exists():
            raise RewardConfigError(f"reward {config.name!r}: no probe.json in {directory}")
        if engine is not None and hasattr(engine, "allow_dirs"):
            engine.allow_dirs([directory])  # the engine's tap loads only directories it was told
        return ProbeReward(
            config.name, directory, backbone(config), observer=observer, engine=engine
        )
    if isinstance(config, VerifierConfig):
        from winnow.rewards.verifier import VerifierReward

        return VerifierReward(config.name)
    if isinstance(config, SequenceClassifierConfig):
        from winnow.rewards.seq_cls import SequenceClassifierReward

        _placement(config)
        _require_dir(config.name, config.path)
        if config.runner == "pooling":
            from winnow.rewards.pooling import PooledSequenceClassifier

            return PooledSequenceClassifier(config, observer=observer)
        return SequenceClassifierReward(config, observer=observer, prefix_cache_bytes=cache_bytes)
    if isinstance(config, StepTagPRMConfig):
        from winnow.rewards.step_tag_prm import StepTagPRM

        _placement(config)
        _require_dir(config.name, config.path)
        if config.runner == "pooling":
            from winnow.rewards.pooling import PooledStepTagPRM

            if config.style == "value_head":
                raise RewardConfigError(
                    f"reward {config.name!r}: vLLM has no pooling model for a value_head PRM "
                    '(Skywork-o1-PRM\'s v_head); use "runner": "hf"'
                )
            return PooledStepTagPRM(config, observer=observer)
        return StepTagPRM(config, observer=observer, prefix_cache_bytes=cache_bytes)
    if isinstance(config, JudgeConfig):
        from winnow.rewards.judge import JudgeReward

        if engine is None and config.base_url is None:
            raise RewardConfigError(
                f"reward {config.name!r}: the judge needs the policy engine, or a base_url"
            )
        return JudgeReward(config, engine)
    raise RewardConfigError(f"unsupported reward backend: {config!r}")


def _placement(config: Any) -> Any:
    """The configured device and dtype, or a start-up error naming the reward."""
    from winnow.rewards.placement import resolve

    try:
        return resolve(config.device, config.dtype)
    except ValueError as exc:
        raise RewardConfigError(f"reward {config.name!r}: {exc}") from None


def _require_dir(name: str, path: str) -> None:
    if not (Path(path) / "config.json").exists():
        raise RewardConfigError(f"reward {name!r}: {path} is not a model directory")
