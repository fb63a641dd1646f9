"""Which class a reward checkpoint is built as, and a refusal when loading it would drop weights.

``config.json``'s ``architectures[0]`` names the class the checkpoint was saved from. The classes
transformers has (``LlamaForSequenceClassification``, ``Qwen3ForSequenceClassification``,
``MistralForCausalLM``, ``Qwen2ForTokenClassification``...) are used as they are. Some reward
families ship their class as remote code, which winnow never runs; those whose head is small are
rebuilt here (:data:`REBUILT`), on the trunk transformers has for the config's ``model_type``,
with the head modules named as the checkpoint names their weights:

- ``Qwen2ForProcessRewardModel`` (Qwen2.5-Math-PRM-7B/72B, Qwen2.5-Math-7B-PRM800K): ``score.0``
  Linear(H, H), ReLU, ``score.2`` Linear(H, 2);
- ``Qwen2ForRewardModel`` (Qwen2.5-Math-RM-72B): ``score.0`` Linear(H, H), ReLU, ``score.2``
  Linear(H, 1);
- ``Qwen2ForPrmModel`` (Skywork-o1-Open-PRM-Qwen-2.5): ``v_head.summary`` Linear(H, 1)

(their ``lm_head.weight``, when saved, is not read: the reference classes do not read it either).

Every load is checked (:func:`load_checked`): a weight the checkpoint holds that the built class
does not read, or one the class needs that the checkpoint lacks (transformers would initialise
it at random and scores would be confident nonsense), refuses the load with the keys named. A
backend then refuses a model whose head it would not read (:func:`check_reads`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from winnow.kernels.heads import LinearHead, MLPHead, RewardHead
from winnow.rewards.placement import Placement

UNREAD_LM_HEAD = r"^lm_head\."


class ValueHead(nn.Module):
    """Skywork-o1-PRM's value head: ``summary``, one linear output (its dropout is inert at
    inference and holds no weights)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden)


def _mlp(labels: int) -> Callable[[Any], nn.Module]:
    def build(config: Any) -> nn.Module:
        size = config.hidden_size
        return nn.Sequential(nn.Linear(size, size), nn.ReLU(), nn.Linear(size, labels))

    return build


REBUILT: dict[str, dict[str, Callable[[Any], nn.Module]]] = {
    "Qwen2ForProcessRewardModel": {"score": _mlp(2)},
    "Qwen2ForRewardModel": {"score": _mlp(1)},
    "Qwen2ForPrmModel": {"v_head": lambda config: ValueHead(config.hidden_size)},
}
"""Architectures winnow builds itself: head module name -> its builder from the config."""


def rebuilt_class(architecture: str, config: Any) -> type[Any]:
    """The class of a :data:`REBUILT` architecture: its ``model_type``'s trunk at ``.model``
    plus the named heads, a ``PreTrainedModel`` so transformers loads it (dtype, device,
    shards, and the loading report :func:`load_checked` reads)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    heads = REBUILT[architecture]
    trunk = MODEL_MAPPING[type(config)]
    base = trunk.__mro__[1]  # the model type's PreTrainedModel (Qwen2PreTrainedModel...)

    def __init__(self: Any, config: Any) -> None:
        base.__init__(self, config)
        self.model = trunk(config)
        for name, build in heads.items():
            setattr(self, name, build(config))
        self.post_init()

    namespace = {"__init__": __init__, "_keys_to_ignore_on_load_unexpected": [UNREAD_LM_HEAD]}
    return type(architecture, (base,), namespace)


def model_class(model_dir: str, fallback: str) -> tuple[type[Any], str]:
    """The class to build the checkpoint in ``model_dir`` as, and its architecture name: the
    one its config names (rebuilt here or transformers' own), else the ``fallback`` auto class.
    Never remote code."""
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except Exception as exc:  # an unknown model_type whose code ships with the checkpoint
        raise ValueError(
            f"{model_dir}: transformers cannot read its config ({exc}); winnow never runs a "
            "checkpoint's own code"
        ) from None
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        return getattr(transformers, fallback), fallback
    architecture = names[0]
    if architecture in REBUILT:
        if type(config).__name__ != "Qwen2Config":
            raise ValueError(
                f"{model_dir}: {architecture} on model_type {config.model_type!r} (expected qwen2)"
            )
        return rebuilt_class(architecture, config), architecture
    found = getattr(transformers, architecture, None)
    if not isinstance(found, type) or not architecture[:1].isupper():
        raise ValueError(
            f"{model_dir}: architecture {architecture} is neither in transformers nor one winnow "
            f"rebuilds ({', '.join(REBUILT)}); winnow never runs a checkpoint's own code"
        )
    return found, architecture


def load_checked(model_dir: str, fallback: str, placement: Placement) -> Any:
    """The model in ``model_dir`` on ``placement``, every checkpoint weight read and every
    weight of the class loaded; else ``ValueError`` naming the keys."""
    cls, architecture = model_class(model_dir, fallback)
    kwargs: dict[str, Any] = {"dtype": placement.dtype, "output_loading_info": True}
    if placement.device.type == "cuda":
        kwargs["device_map"] = {"": placement.device}  # straight to the GPU, no CPU copy
    model, loading = cls.from_pretrained(model_dir, **kwargs)
    ignorable = getattr(cls, "_keys_to_ignore_on_load_unexpected", None) or []
    ignored = [re.compile(p) for p in ignorable]
    unexpected = sorted(
        k for k in loading.get("unexpected_keys", ()) if not any(p.search(k) for p in ignored)
    )
    missing = sorted(loading.get("missing_keys", ()))
    mismatched = sorted(
        str(k[0] if isinstance(k, tuple) else k) for k in loading.get("mismatched_keys", ())
    )
    problems = [
        f"{what}: {', '.join(keys)}"
        for what, keys in (
            ("weights in the checkpoint it would drop", unexpected),
            ("weights the checkpoint lacks (they would be random)", missing),
            ("weights of another shape", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"{model_dir} does not load as {architecture} without losing weights; "
            + "; ".join(problems)
        )
    if model.device != placement.device and placement.device.type != "cuda":
        model = model.to(placement.device)
    model.eval()
    return model


def head_keys(model: Any, modules: Iterable[str]) -> list[str]:
    """The parameter names of the model's top-level ``modules``."""
    wanted = set(modules)
    return sorted(n for n, _ in model.named_parameters() if n.split(".")[0] in wanted)


def check_reads(model: Any, reads: Iterable[str], what: str, model_dir: str | Path) -> None:
    """Refuse a model holding a head (a top-level module besides the trunk ``model``) that the
    backend ``what`` does not read: its weights would be loaded and silently ignored."""
    read = {"model", *reads}
    tied = {id(p) for name in read if (m := getattr(model, name, None)) is not None
            for p in m.parameters()}  # fmt: skip
    unread = [
        n
        for n, p in model.named_parameters(remove_duplicate=False)
        if n.split(".")[0] not in read and id(p) not in tied
    ]
    if unread:
        raise ValueError(
            f"{model_dir} ({type(model).__name__}) holds weights {what} does not read: "
            f"{', '.join(sorted(unread))}"
        )


def module_head(module: Any) -> RewardHead:
    """A model's head module as a kernel head (``[in, out]`` weights, on the module's device in
    its dtype): ``nn.Linear``, or ``nn.Sequential`` Linear-ReLU-Linear (the Qwen2.5-Math reward
    models' ``score``)."""

    def detached(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach()

    if isinstance(module, nn.Linear):
        return LinearHead(module.weight.detach().T, detached(module.bias))
    if (
        isinstance(module, nn.Sequential)
        and len(module) == 3
        and isinstance(module[0], nn.Linear)
        and isinstance(module[1], nn.ReLU)
        and isinstance(module[2], nn.Linear)
    ):
        first, second = module[0], module[2]
        return MLPHead(
            first.weight.detach().T,
            detached(first.bias),
            second.weight.detach().T,
            detached(second.bias),
        )
    raise ValueError(
        f"unsupported head {type(module).__name__} (expected nn.Linear or Linear-ReLU-Linear)"
    )
