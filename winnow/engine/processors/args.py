"""How a processor reads its request from ``SamplingParams.extra_args``, and answers the probe.

The local engine hands a spec's ``extra_args`` to vLLM as they are: the processor's key holds an
object. A remote worker (``winnow worker``) gets them through ``vllm_xargs``, which carries only
strings, numbers and flat lists: the same object arrives as a JSON string under the same key
(``SegmentSpec.xargs``, ``VasSpec.xargs``). :func:`request_args` reads both the same way, for
every processor.

The capability probe: a request whose ``extra_args[PROBE_KEY]`` names a processor is refused by
that processor's ``validate_params`` with :func:`~.specs.probe_answer` (vLLM answers 400 with the
message, before any generation). A plain vLLM server ignores the unknown argument and answers
200, so a remote backend learns per worker which processors run there.

Nothing here imports vLLM or torch (``params`` is a ``vllm.SamplingParams``, read duck-typed).
"""

from __future__ import annotations

import json
import math
from typing import Any

from winnow.engine.processors.specs import PROBE_KEY, probe_answer

MAX_ARGS_CHARS = 65536
"""The longest JSON string a processor decodes (a request's arguments are a few hundred)."""


def request_args(params: Any, key: str) -> dict[str, Any] | None:
    """``extra_args[key]`` of a request as an object, or None when the request does not carry
    the key. A JSON string is decoded (a remote worker's form); a value that is not an object
    reads as ``{}``, so the processor's own checks say what is missing. ``ValueError`` (a 400)
    for a string that is not JSON, longer than :data:`MAX_ARGS_CHARS` or nested too deep."""
    extra = getattr(params, "extra_args", None) if params is not None else None
    if not extra or key not in extra:
        return None
    value = extra[key]
    if isinstance(value, str):
        if len(value) > MAX_ARGS_CHARS:
            raise ValueError(f"extra_args.{key}: longer than {MAX_ARGS_CHARS} characters")
        try:
            value = json.loads(value)
        except RecursionError:
            raise ValueError(f"extra_args.{key}: JSON nested too deep") from None
        except ValueError as exc:
            raise ValueError(f"extra_args.{key}: a string here must be JSON ({exc})") from None
    return value if isinstance(value, dict) else {}


def answer_probe(params: Any, name: str) -> None:
    """Refuse the capability probe that names processor ``name`` (see the module docstring)."""
    extra = getattr(params, "extra_args", None) if params is not None else None
    if extra and extra.get(PROBE_KEY) == name:
        raise ValueError(probe_answer(name))


def finite(number: float) -> bool:
    """``math.isfinite`` that says False for an integer too large for a float (JSON allows one of
    400 digits; ``math.isfinite`` raises ``OverflowError`` on it, which vLLM would not turn into
    a 400)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False
