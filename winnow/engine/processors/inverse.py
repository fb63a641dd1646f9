"""One :class:`~winnow.heads.value.EmbeddingInverse` per model in the engine-core process, shared by
the processors that read the policy's final hidden state back from its logits (the reward tap,
value-augmented sampling).

Building it reads the LM head and takes a pseudo-inverse (seconds to tens of seconds on two busy
cores), so :func:`warm` starts that in a background thread when the engine starts; the tap never
waits for it (a row that arrives earlier is left untapped and the server re-encodes), VAS does.
"""

from __future__ import annotations

import logging
import threading

from winnow.heads.value import EmbeddingInverse

log = logging.getLogger("winnow.engine.inverse")

_lock = threading.Lock()
_built: dict[str, EmbeddingInverse] = {}
_failed: dict[str, str] = {}
_warming: set[str] = set()


def shared_inverse(model: str) -> EmbeddingInverse | None:
    """The model's inverse, built now if it is not yet (None, logged once: it cannot be)."""
    with _lock:
        if model in _built or model in _failed:
            return _built.get(model)
        try:
            _built[model] = EmbeddingInverse.of_model(model)
        except Exception as exc:  # the engine must still serve everything else
            _failed[model] = f"{type(exc).__name__}: {exc}"
            log.error("hidden states cannot be read from %s's logits: %s", model, _failed[model])
        return _built.get(model)


def ready_inverse(model: str) -> EmbeddingInverse | None:
    """The model's inverse if it is built; never waits."""
    return _built.get(model)


def inverse_error(model: str) -> str | None:
    return _failed.get(model)


def warm(model: str) -> None:
    """Build the model's inverse in a background thread (once)."""
    with _lock:
        if model in _built or model in _failed or model in _warming:
            return
        _warming.add(model)
    threading.Thread(
        target=shared_inverse, args=(model,), name="winnow-inverse", daemon=True
    ).start()
