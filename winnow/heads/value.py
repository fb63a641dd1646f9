"""Value models for value-augmented sampling (VAS): a Q-head on the policy's own hidden state.

A value model here is a small head on the *policy's* final hidden state ``h`` (after the final
norm: the vector the LM head multiplies), giving a value for every possible next token ``a``::

    Q(h, a) = e_a . (W h + c) + b_a + (w . h + w0)

``e_a`` is row ``a`` of the policy's output embedding (SmolLM2 ties it to the input embedding),
so one ``h`` gives the Q of every candidate at once, and the head owns only ``W`` (H x H), ``c``,
``b`` (one bias per token) and the state term ``w, w0``. The state term is the same for every
candidate (it cancels when VAS centres Q over the top-k) but carries most of the value for
training. Everything starts at zero, as in the paper, so an untrained head changes nothing.

Why the policy itself and not a separate small LM: inside vLLM the logits row of a request *is*
``E h``, so ``h`` is recovered exactly from the logits a logits processor already sees
(:class:`EmbeddingInverse`) and the whole VAS step runs in the engine's sampler, batched over all
VAS requests of the step, with no extra forward pass and no round trip per token.

Q is trained in units of the reward's standard deviation on the policy's own samples (the card
records mean and std), so betas mean the same across value models and compose.

A value model directory holds ``value.safetensors`` and ``value.json``::

    {"kind": "q_head", "hidden_size": 576, "vocab_size": 49152, "reward": "default",
     "reward_mean": ..., "reward_std": ..., "model": "SmolLM2-135M-Instruct", ...}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "values"
HEAD_FILE = "value.safetensors"
META_FILE = "value.json"


# ---- the head -----------------------------------------------------------------------------------


@dataclass(slots=True)
class QHead:
    """``Q(h, a) = e_a . (W h + c) + b_a + w . h + w0`` (see the module docstring)."""

    W: torch.Tensor  # [H, H]
    c: torch.Tensor  # [H]
    b: torch.Tensor  # [V]
    w: torch.Tensor  # [H]
    w0: torch.Tensor  # [1]

    @classmethod
    def zeros(cls, hidden: int, vocab: int) -> QHead:
        return cls(
            torch.zeros(hidden, hidden),
            torch.zeros(hidden),
            torch.zeros(vocab),
            torch.zeros(hidden),
            torch.zeros(1),
        )

    @property
    def hidden_size(self) -> int:
        return int(self.W.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.b.shape[0])

    @property
    def device(self) -> torch.device:
        return self.W.device

    def to(self, device: torch.device | str) -> QHead:
        """This head in float32 on ``device`` (itself if already there)."""
        device = torch.device(device)
        if device == self.device and all(t.dtype == torch.float32 for t in self.parameters()):
            return self
        return QHead(*(t.to(device=device, dtype=torch.float32) for t in self.parameters()))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"W": self.W, "c": self.c, "b": self.b, "w": self.w, "w0": self.w0}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.tensors().values())

    def q(self, h: torch.Tensor, tokens: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Q of ``tokens`` [B, K] (or [B]) at hidden states ``h`` [B, H] -> same shape as tokens."""
        g = h @ self.W.T + self.c  # [B, H]
        state = h @ self.w + self.w0  # [B]
        e = embedding[tokens]  # [B, K, H] or [B, H]
        if tokens.dim() == 1:
            return (e * g).sum(-1) + self.b[tokens] + state
        return torch.einsum("bkh,bh->bk", e, g) + self.b[tokens] + state[:, None]

    def advantage(
        self, h: torch.Tensor, tokens: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        """The token-dependent part of Q for ``tokens`` [B, K], centred over K (what VAS adds)."""
        g = h @ self.W.T + self.c
        q = torch.einsum("bkh,bh->bk", embedding[tokens], g) + self.b[tokens]
        return q - q.mean(dim=1, keepdim=True)


def save_value_model(directory: Path, head: QHead, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().float() for k, v in head.tensors().items()}
    save_file(tensors, str(directory / HEAD_FILE))
    meta = {
        "kind": "q_head",
        "hidden_size": head.hidden_size,
        "vocab_size": head.vocab_size,
        **meta,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load_value_model(directory: str | Path) -> tuple[QHead, dict[str, Any]]:
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = json.loads((directory / META_FILE).read_text())
    t = load_file(str(directory / HEAD_FILE))
    return QHead(t["W"], t["c"], t["b"], t["w"], t["w0"]), meta


def read_meta(directory: str | Path) -> dict[str, Any]:
    return dict(json.loads((Path(directory) / META_FILE).read_text()))


def available(root: Path | None = None) -> dict[str, Path]:
    """Value models by name: every directory holding a ``value.json`` under ``root``, or else
    under the shipped assets and the directories of ``$WINNOW_VALUES_DIR`` (``:``-separated;
    these win on a name clash)."""
    import os

    roots = [root] if root is not None else [ASSETS]
    if root is None and os.environ.get("WINNOW_VALUES_DIR"):
        roots += [Path(p) for p in os.environ["WINNOW_VALUES_DIR"].split(os.pathsep) if p]
    found: dict[str, Path] = {}
    for directory in roots:
        if directory.is_dir():
            for p in sorted(directory.iterdir()):
                if (p / META_FILE).is_file():
                    found[p.name] = p.resolve()
    return found


# ---- td(lambda) ---------------------------------------------------------------------------------


def td_lambda_targets(
    values: Sequence[float] | torch.Tensor, reward: float, gamma: float = 1.0, lam: float = 0.95
) -> torch.Tensor:
    """TD(lambda) value targets of one response, reward on the last token.

    ``values[t]`` is V of the state after token t (t = 0..T-1); the state after the last token
    is terminal (V = 0). delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1},
    target_t = A_t + V_t (the paper's recursion; lam = 1 gives the Monte-Carlo return).
    """
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    n = v.shape[0]
    out = torch.empty(n, dtype=torch.float64)
    advantage = 0.0
    for t in range(n - 1, -1, -1):
        next_v = float(v[t + 1]) if t + 1 < n else 0.0
        r = reward if t == n - 1 else 0.0
        delta = r + gamma * next_v - float(v[t])
        advantage = delta + gamma * lam * advantage
        out[t] = advantage + float(v[t])
    return out


# ---- hidden states from logits ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogitsMap:
    """How a model's logits follow from its final hidden state, as vLLM computes them:
    ``l = scale * (E h + bias)`` (``E`` the LM head, tied or not)."""

    embedding: torch.Tensor  # [V, H]
    scale: float = 1.0
    bias: torch.Tensor | None = None  # [V]


def _text_config(model_dir: Path) -> dict[str, Any]:
    """The language model's config (``text_config`` of a multimodal model), with the class's
    defaults filled in where transformers knows the model type (vLLM reads it the same way)."""
    raw = json.loads((model_dir / "config.json").read_text())
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        return dict(config.get_text_config().to_dict())
    except Exception:  # a model type transformers does not know: the file as written
        return dict(raw.get("text_config") or raw)


def _logits_scale(config: dict[str, Any], name: str) -> float:
    """The factor vLLM multiplies the logits by; soft-capped logits are refused."""
    softcap = config.get("final_logit_softcapping")
    if softcap:
        raise ValueError(
            f"{name} soft-caps its logits (final_logit_softcapping={softcap}): its hidden state "
            "cannot be recovered from them, so value-augmented sampling cannot run on it"
        )
    scale = float(config.get("logit_scale") or 1.0) * float(config.get("lm_head_multiplier") or 1.0)
    return scale / float(config.get("logits_scaling") or 1.0)


def vas_unavailable(model_dir: str | Path) -> str | None:
    """Why value-augmented sampling cannot run on a model, from its config alone (checked when
    the server starts), or None."""
    try:
        _logits_scale(_text_config(Path(model_dir)), Path(model_dir).name)
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


def logits_map(model_dir: str | Path) -> LogitsMap:
    """The LM head of a safetensors model directory and the affine map around it.

    Handled exactly: an ``lm_head`` bias, ``logit_scale`` (Cohere, Llama-family, ...),
    ``logits_scaling`` (Granite: logits are divided by it) and ``lm_head_multiplier``
    (Falcon-H1), read from the language model's config (nested ``text_config`` too). Refused:
    final-logit soft-capping (Gemma 2), a tanh that cannot be undone where it saturates.
    """
    model_dir = Path(model_dir)
    config = _text_config(model_dir)
    scale = _logits_scale(config, model_dir.name)
    from safetensors import safe_open

    found: dict[str, list[tuple[str, Path]]] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                for suffix in ("lm_head.weight", "lm_head.bias", "embed_tokens.weight"):
                    if key.endswith(suffix):
                        found.setdefault(suffix, []).append((key, file))
    weight = _pick(found.get("lm_head.weight") or found.get("embed_tokens.weight"), config)
    if weight is None:
        raise ValueError(f"no lm_head or embed_tokens weights in {model_dir}")
    bias = _pick(found.get("lm_head.bias"), config)
    return LogitsMap(weight.float(), scale, None if bias is None else bias.float())


def _pick(candidates: list[tuple[str, Path]] | None, config: dict[str, Any]) -> torch.Tensor | None:
    """The tensor of the language model's vocabulary among same-named ones (a multimodal model
    may hold several): the one whose first dimension is the text vocabulary, else the first."""
    from safetensors import safe_open

    tensors = []
    for key, file in candidates or []:
        with safe_open(str(file), "pt") as f:
            tensors.append(f.get_tensor(key))
    vocab = config.get("vocab_size")
    sized = [t for t in tensors if vocab and t.shape[0] == vocab]
    return (sized or tensors or [None])[0]


def output_embedding(model_dir: str | Path) -> torch.Tensor:
    """The LM head matrix ``E`` [V, H] of a safetensors model directory (tied or not); refuses
    a model whose logits are soft-capped (see :func:`logits_map`)."""
    return logits_map(model_dir).embedding


class EmbeddingInverse:
    """Recover ``h`` from a logits row ``l = scale * (E h + bias)`` (:class:`LogitsMap`).

    ``E`` has full column rank (SmolLM2: condition number 91), so ``h`` is determined by any few
    thousand of its rows: ``h = pinv(scale E_S) (l_S - scale b_S)`` over a fixed set ``S`` of
    anchor tokens. 2,048 anchors recover ``h`` to a relative error of ~1e-6 from float32 logits
    at 1/24 of the cost of the full pseudo-inverse (measured on the real model; from bfloat16
    logits see the README). Anchors skip the first 1,000 ids, where special tokens live (a
    sentinel or stop token may be masked by another processor).

    It is built on the CPU; :meth:`to` gives a copy on the device of the engine's logits. The
    logits are read in float32 whatever their dtype.
    """

    def __init__(
        self,
        embedding: torch.Tensor,
        anchors: int = 2048,
        seed: int = 0,
        *,
        scale: float = 1.0,
        bias: torch.Tensor | None = None,
    ) -> None:
        vocab, hidden = embedding.shape
        low = min(1000, max(0, vocab - anchors))
        g = torch.Generator().manual_seed(seed)
        pool = torch.arange(low, vocab)
        self.anchors = pool[torch.randperm(len(pool), generator=g)[: min(anchors, len(pool))]]
        self.anchors = self.anchors.sort().values
        if len(self.anchors) < hidden:
            self.anchors = torch.arange(vocab)
        pinv = torch.linalg.pinv(embedding[self.anchors].double() * scale)
        self.pinv_t = pinv.T.contiguous().float()  # [S, H]
        self.offset = None if bias is None else (scale * bias[self.anchors].double()).float()
        self.embedding = embedding.float().contiguous()

    @classmethod
    def of_model(cls, model_dir: str | Path, **kwargs: Any) -> EmbeddingInverse:
        """The inverse of a model directory's logits (:func:`logits_map`)."""
        m = logits_map(model_dir)
        return cls(m.embedding, scale=m.scale, bias=m.bias, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.pinv_t.device

    def to(self, device: torch.device | str) -> EmbeddingInverse:
        """This inverse with every tensor on ``device`` (itself if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = object.__new__(EmbeddingInverse)
        moved.anchors = self.anchors.to(device)
        moved.pinv_t = self.pinv_t.to(device)
        moved.offset = None if self.offset is None else self.offset.to(device)
        moved.embedding = self.embedding.to(device)
        return moved

    def hidden(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[B, V] logits (or only ``rows`` of them) -> [B, H] float32 hidden states. Only the
        anchor columns are gathered: copying whole vocabulary rows first costs more than all the
        rest."""
        if rows is None:
            picked = logits[:, self.anchors]
        else:
            picked = logits[rows[:, None], self.anchors[None, :]]
        picked = picked.float()
        if self.offset is not None:
            picked = picked - self.offset
        return picked @ self.pinv_t
