"""The server's side of the reward tap's channel (:mod:`winnow.engine.processors.tap`): one file
per tapped engine request, created before the request is sent, read when it ends and deleted in
every case (finished, failed, cancelled).

Files live in ``/dev/shm`` where it exists (memory, no disk writes), in a directory of this
server process, which is removed at exit; a server that was killed leaves a directory named
after its pid, removed by the next server that finds that pid gone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import struct
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from winnow.engine.processors.specs import TAP_RECORD_FLAG, tap_record_size

_PREFIX = "winnow-tap-"
_dir: Path | None = None


def _root() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def tap_dir() -> Path:
    """This process's directory of tap files (made at first use; stale ones swept then)."""
    global _dir
    if _dir is None:
        root = _root()
        for stale in root.glob(f"{_PREFIX}*"):
            pid = stale.name.removeprefix(_PREFIX)
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        _dir = root / f"{_PREFIX}{os.getpid()}"
        _dir.mkdir(exist_ok=True)
        atexit.register(shutil.rmtree, _dir, True)
    return _dir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def tap_files(count: int) -> Iterator[list[str]]:
    """``count`` new empty tap files, deleted when the block ends however it ends."""
    paths = [str(tap_dir() / uuid.uuid4().hex) for _ in range(count)]
    try:
        for path in paths:
            Path(path).touch()
        yield paths
    finally:
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)


def read_records(path: str, heads: Sequence[str]) -> list[list[float] | None]:
    """Every record of a tap file (``[k]``: the state of the request's k-th sequence token from
    its prompt's last one, one score per head), None where the engine wrote nothing."""
    return parse_records(Path(path).read_bytes(), len(heads))


def parse_records(
    data: bytes, heads: int, *, stop_at_hole: bool = False
) -> list[list[float] | None]:
    """The records in ``data`` (one flag and ``heads`` scores each): None for one not written,
    or, with ``stop_at_hole``, the records before the first not written."""
    size = tap_record_size(heads)
    records: list[list[float] | None] = []
    for start in range(0, len(data) - size + 1, size):
        values = struct.unpack_from(f"<{heads + 1}f", data, start)
        if values[0] != TAP_RECORD_FLAG:
            if stop_at_hole:
                break
            records.append(None)
        else:
            records.append(list(values[1:]))
    return records


class RecordReader:
    """Reads a tap file as it grows: :meth:`new_scores` gives the records written since the last
    call, up to the first not yet written (a later call returns it when it is)."""

    def __init__(self, path: str, heads: Sequence[str]) -> None:
        self.path, self.heads = path, tuple(heads)
        self.done = 0  # records already returned

    def new_scores(self) -> dict[str, list[float | None]]:
        with open(self.path, "rb") as f:
            f.seek(self.done * tap_record_size(len(self.heads)))
            data = f.read()
        records = parse_records(data, len(self.heads), stop_at_hole=True)
        self.done += len(records)
        return {head: [r[h] for r in records if r is not None] for h, head in enumerate(self.heads)}
