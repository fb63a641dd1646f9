"""A probe knows its model (#31): the head records its backbone's identity, and the server refuses
at start-up a probe trained on another model than the one it serves, saying how to train one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from winnow.engine.fake import FakeEngine
from winnow.heads.identity import BackboneIdentity, identity_of, mismatch
from winnow.heads.probe import save_head
from winnow.rewards.configs import ProbeConfig, RewardConfigError
from winnow.rewards.policy_check import Policy
from winnow.rewards.registry import build_rewards
from winnow.server.run import policy_of, server_rewards
from winnow.settings import Settings


def model_dir(root: Path, name: str, hidden: int = 8, seed: int = 0, **config: object) -> Path:
    """A directory that looks like a model to the identity (config.json and a weights file)."""
    from safetensors.torch import save_file

    directory = root / name
    directory.mkdir(parents=True)
    values = {"model_type": "llama", "hidden_size": hidden, "transformers_version": "5.0", **config}
    (directory / "config.json").write_text(json.dumps(values))
    g = torch.Generator().manual_seed(seed)
    save_file({"w": torch.randn(hidden, 4, generator=g)}, str(directory / "model.safetensors"))
    return directory


def probe_dir(root: Path, name: str, hidden: int, identity: BackboneIdentity | None) -> Path:
    directory = root / name
    meta: dict[str, object] = {"kind": "outcome", "layer": -1, "output": "sigmoid"}
    if identity is not None:
        meta["identity"] = identity.model_dump()
    save_head(directory, {"weight": torch.ones(hidden), "bias": torch.zeros(1)}, meta)
    return directory


def test_identity_ignores_volatile_keys_and_sees_architecture_and_weights(tmp_path: Path) -> None:
    a = identity_of(model_dir(tmp_path, "a"))
    same = identity_of(model_dir(tmp_path, "a-copy", transformers_version="9.9", dtype="bf16"))
    assert (a.config_sha256, a.weights_sha256) == (same.config_sha256, same.weights_sha256)
    assert a.name == "a" and a.hidden_size == 8
    assert mismatch(a, same) is None
    wider = identity_of(model_dir(tmp_path, "wide", hidden=16))
    assert "hidden size 8" in (mismatch(a, wider) or "")
    deeper = identity_of(model_dir(tmp_path, "deep", num_hidden_layers=3))
    assert "config.json differs" in (mismatch(a, deeper) or "")
    tuned = identity_of(model_dir(tmp_path, "tuned", seed=1))
    assert "other weights" in (mismatch(a, tuned) or "")
    no_weights = a.model_copy(update={"weights_sha256": None})
    assert mismatch(no_weights, tuned) is None  # nothing to compare
    with pytest.raises(ValueError, match="not a model directory"):
        identity_of(tmp_path / "missing")


def test_a_probe_trained_on_another_model_is_refused_with_the_command_to_train_one(
    tmp_path: Path,
) -> None:
    trained_on, served = model_dir(tmp_path, "smol"), model_dir(tmp_path, "other", seed=3)
    probe = probe_dir(tmp_path, "probe", 8, identity_of(trained_on))
    config = ProbeConfig(name="mine", path=str(probe))
    with pytest.raises(RewardConfigError) as refused:
        build_rewards([config], default_model_dir=str(served), policy=Policy(str(served)))
    message = str(refused.value)
    assert "'mine'" in message and "'smol'" in message and "'other'" in message
    assert f"winnow train fit --model {served}" in message
    # on its own model it is served, and so is a waived check on the other one
    ok = build_rewards([config], default_model_dir=str(trained_on), policy=Policy(str(trained_on)))
    assert ok.names() == ["mine"]
    waived = ProbeConfig(name="mine", path=str(probe), allow_other_policy=True)
    assert build_rewards([waived], default_model_dir=str(served), policy=Policy(str(served)))
    # without a policy (a tool that builds rewards outside a server) nothing is checked
    assert build_rewards([config], default_model_dir=str(served)).names() == ["mine"]


def test_a_backbone_that_is_not_the_served_model_is_refused(tmp_path: Path) -> None:
    served, other = model_dir(tmp_path, "served"), model_dir(tmp_path, "other", seed=5)
    probe = probe_dir(tmp_path, "probe", 8, identity_of(served))
    config = ProbeConfig(name="p", path=str(probe), backbone=str(other))
    with pytest.raises(RewardConfigError, match="another model's states"):
        build_rewards([config], default_model_dir=None, policy=Policy(str(served)))
    copy = model_dir(tmp_path, "served-copy")  # the same model in another directory is fine
    config = ProbeConfig(name="p", path=str(probe), backbone=str(copy))
    assert build_rewards([config], default_model_dir=None, policy=Policy(str(served)))


def test_an_old_head_without_identity_is_accepted_only_on_the_default_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    default = model_dir(tmp_path, "default")
    old = probe_dir(tmp_path, "old", 8, None)
    config = ProbeConfig(name="old", path=str(old))
    with caplog.at_level(logging.WARNING, logger="winnow.rewards"):
        build_rewards([config], default_model_dir=str(default), policy=Policy(str(default), True))
    assert "records no backbone identity" in caplog.text
    with pytest.raises(RewardConfigError, match="not the default one"):
        build_rewards([config], default_model_dir=None, policy=Policy(str(default), False))
    narrow = probe_dir(tmp_path, "narrow", 4, None)  # the default model, but not its width
    with pytest.raises(RewardConfigError, match="no backbone identity"):
        build_rewards(
            [ProbeConfig(name="n", path=str(narrow))],
            default_model_dir=None,
            policy=Policy(str(default), True),
        )


def test_the_server_refuses_at_start_up_on_the_fake_engine(tmp_path: Path) -> None:
    """What `winnow serve --model OTHER --rewards-config FILE` does before it serves."""
    trained_on, served = model_dir(tmp_path, "smol"), model_dir(tmp_path, "gemma", hidden=16)
    probe = probe_dir(tmp_path, "probe", 8, identity_of(trained_on))
    config_file = tmp_path / "rewards.json"
    config_file.write_text(json.dumps([{"name": "mine", "backend": "probe", "path": str(probe)}]))
    settings = Settings(model=str(served), rewards_config=config_file, data_dir=tmp_path / "d")
    assert policy_of(settings, FakeEngine()) == Policy(str(served), is_default=False)
    with pytest.raises(RewardConfigError, match="hidden size 8, the model's is 16"):
        server_rewards(settings, FakeEngine())
    # trained for the served model: built, on the served model's states by default
    good = probe_dir(tmp_path, "good", 16, identity_of(served))
    config_file.write_text(json.dumps([{"name": "mine", "backend": "probe", "path": str(good)}]))
    rewards = server_rewards(settings, FakeEngine())
    assert rewards.get("mine").backbone.model_dir == str(served)  # type: ignore[attr-defined]


def test_a_remote_policy_without_a_directory_is_not_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = probe_dir(tmp_path, "probe", 8, identity_of(model_dir(tmp_path, "m")))
    settings = Settings(backend="remote", remote_urls=["http://x"], data_dir=tmp_path / "d")
    assert policy_of(settings, FakeEngine()) == Policy(None)
    with caplog.at_level(logging.WARNING, logger="winnow.rewards"):
        build_rewards(
            [ProbeConfig(name="p", path=str(probe), backbone=str(tmp_path / "m"))],
            default_model_dir=None,
            policy=Policy(None),
        )
    assert "not checked" in caplog.text
