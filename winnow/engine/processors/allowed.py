"""The directories a processor may read, and the bounded caches of what it loaded from them.

A request names value models (VAS) and probe heads (the tap) by directory, and on a worker
(``winnow worker``) any client can send one. The processors read only directories on an
allow-list fixed when the engine starts: winnow's shipped assets, and the absolute paths in
``$WINNOW_ALLOWED_DIRS`` (``os.pathsep``-separated) with everything under them. The local engine
sets that variable to the probe and value directories its server configured
(:meth:`winnow.engine.vllm_local.VllmEngine.allow_dirs`); a worker to its ``--allow-dir``
options. vLLM's engine-core process inherits it.

A path is allowed when it lies under an allowed directory both as written (``os.path.abspath``,
checked first, so a path outside is refused without touching the filesystem) and once its
symbolic links are resolved (``os.path.realpath``). A refused path gets the same message whether
it exists or not, and so does an allowed one that is not a model directory: a client learns
nothing about the server's files. What is loaded is cached by real path (``dir/``, ``dir//``
and ``./dir`` are one entry), at most :data:`MAX_LOADED` entries per cache.

Nothing here imports vLLM or torch.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

ALLOWED_DIRS_ENV = "WINNOW_ALLOWED_DIRS"
SHIPPED = str(Path(__file__).resolve().parent.parent.parent / "assets")
"""winnow's own assets (the trained probes and value models): always allowed."""
MAX_PATH_CHARS = 4096
MAX_DIRS_PER_REQUEST = 16  # value models or probe heads one request may name
MAX_LOADED = 8  # loaded value models / probe heads kept per cache

T = TypeVar("T")


def allowed_env(dirs: Iterable[str | os.PathLike[str]]) -> str:
    """``dirs`` as the value of :data:`ALLOWED_DIRS_ENV` (real paths, in order, once each)."""
    real = (os.path.realpath(os.fspath(d)) for d in dirs)
    return os.pathsep.join(dict.fromkeys(real))


@functools.lru_cache(maxsize=4)
def _roots(raw: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(roots as written and resolved, roots resolved) of the variable's value ``raw``."""
    written = [SHIPPED, *(p for p in raw.split(os.pathsep) if os.path.isabs(p))]
    lexical = [os.path.abspath(p) for p in written]
    real = [os.path.realpath(p) for p in lexical]
    return tuple(dict.fromkeys(lexical + real)), tuple(dict.fromkeys(real))


def allowed_roots() -> tuple[str, ...]:
    """The allowed directories of this process (resolved)."""
    return _roots(os.environ.get(ALLOWED_DIRS_ENV, ""))[1]


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def allowed_dir(path: object, marker: str, refusal: str) -> str:
    """The real path of directory ``path`` if it is allowed and holds ``marker`` (``value.json``,
    ``probe.json``); else ``ValueError(refusal)``, the same whatever the reason."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\0" in path:
        raise ValueError(refusal)
    lexical, real_roots = _roots(os.environ.get(ALLOWED_DIRS_ENV, ""))
    if not _inside(os.path.abspath(path), lexical):
        raise ValueError(refusal)
    try:
        real = os.path.realpath(path)
        ok = _inside(real, real_roots) and os.path.isfile(os.path.join(real, marker))
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise ValueError(refusal)
    return real


class Loaded(Generic[T]):
    """At most ``size`` loaded things by key, the least recently used dropped first (a row that
    uses a dropped one keeps its own reference; the next request loads it again)."""

    def __init__(self, size: int = MAX_LOADED) -> None:
        self.size = size
        self._items: OrderedDict[object, T] = OrderedDict()

    def get(self, key: object, load: Callable[[], T]) -> T:
        """The thing under ``key``, loaded with ``load()`` if it is not held."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def peek(self, key: object) -> T | None:
        return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[object]:
        return iter(list(self._items))

    def clear(self) -> None:
        self._items.clear()
