"""The reward tap's channel (:mod:`winnow.engine.processors.tap`): one file per tapped engine
request, created by the server before the request is sent, written by the engine core, read by
the server when the request ends and deleted in every case (finished, failed, cancelled).

The files live in a private directory of this server process: ``tempfile.mkdtemp`` (mode 0700,
an unpredictable name ``winnow-tap-XXXXXXXX``) in ``/dev/shm`` where it is usable (memory, no
disk writes), else the temporary directory. The server names it to vLLM's engine-core process,
which inherits the environment, in ``$WINNOW_TAP_DIR``; the tap opens only files directly in
that directory, created here (``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600, named by a uuid),
never a symbolic link or anything but a regular file of this user (:func:`open_tap_file`).
A process without the variable (a ``winnow worker``) has no channel and refuses every tap
request. The server reads a file only if it is a regular file, and at most the records it
expects (:func:`read_tap_file`): a FIFO or a huge file cannot hang or flood it.

The directory is removed at exit. This process holds an exclusive ``flock`` on it while it
lives, so the next server can tell a directory whose server was killed (no lock) from a live
one, whatever PID namespace either runs in, and removes it (:func:`sweep`): only directories
named as winnow names them, owned by this user, and never following a symbolic link.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import re
import shutil
import stat
import struct
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from winnow.engine.processors.specs import TAP_RECORD_FLAG, tap_record_size

log = logging.getLogger("winnow.engine.tap")

TAP_DIR_ENV = "WINNOW_TAP_DIR"
_PREFIX = "winnow-tap-"
_DIR_NAME = re.compile(r"winnow-tap-[a-z0-9_]{8}")  # tempfile.mkdtemp's 8 random characters
_FILE_NAME = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
MAX_TAP_RECORDS = 1 << 20  # read at most this many records of a file whose length is not known

_dir: Path | None = None
_owner: int | None = None  # the pid that made _dir (a forked child makes its own)
_lock_fd: int | None = None  # held open (and flocked) while this process lives


def _root() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def tap_dir() -> Path:
    """This process's private directory of tap files, named in ``$WINNOW_TAP_DIR`` (made at
    first use, stale ones swept then)."""
    global _dir, _owner, _lock_fd
    if _dir is None or _owner != os.getpid():
        root = _root()
        sweep(root)
        path, fd = _locked_dir(root)
        _dir, _owner, _lock_fd = Path(path), os.getpid(), fd
        atexit.register(_remove, path, os.getpid())
    if os.environ.get(TAP_DIR_ENV) != str(_dir):
        os.environ[TAP_DIR_ENV] = str(_dir)  # vLLM's engine core, started after, inherits it
    return _dir


def _locked_dir(root: Path, tries: int = 8) -> tuple[str, int]:
    """A new private directory (``mkdtemp``: mode 0700, a name nobody had) and a descriptor that
    holds its lock. Between ``mkdtemp`` and ``flock`` another server's sweep may find the new
    directory unlocked and take it for stale: then its lock is taken, the sweep removes it, and
    a fresh one is made."""
    for _ in range(tries):
        path = tempfile.mkdtemp(prefix=_PREFIX, dir=root)  # mode 0700, fails if it exists
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a sweep holds it and is removing it
            os.close(fd)
            continue
        except OSError:  # no flock on this file system: a sweep cannot tell, so it keeps it
            pass
        return path, fd
    raise OSError(f"could not make a private tap directory in {root}")


def _remove(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the handler
        shutil.rmtree(path, ignore_errors=True)


def sweep(root: Path) -> None:
    """Remove the tap directories in ``root`` whose server is gone: named as winnow names them,
    real directories of this user, and not locked. Never raises."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        try:
            if _DIR_NAME.fullmatch(entry.name) and _stale(root, entry.name):
                shutil.rmtree(os.path.join(root, entry.name), ignore_errors=True)
        except Exception:  # any name, any race: leave it
            continue


def _stale(root: Path, name: str) -> bool:
    path = os.path.join(root, name)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_ino != st.st_ino:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its server lives
        return True  # the lock goes with the descriptor, closed below
    finally:
        os.close(fd)


def private_tap_dir() -> str | None:
    """The private tap directory this process was given (``$WINNOW_TAP_DIR``), or None: none,
    or not one winnow made (a real directory of this user, mode 0700, named as winnow names)."""
    path = os.environ.get(TAP_DIR_ENV)
    if not path or not os.path.isabs(path) or not _DIR_NAME.fullmatch(os.path.basename(path)):
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def tap_file_name(file: str) -> str | None:
    """The name of ``file`` in this process's private tap directory, or None if it is not one
    of that directory's tap files (by name: nothing is opened)."""
    directory = private_tap_dir()
    if directory is None or not isinstance(file, str):
        return None
    head, name = os.path.split(file)
    return name if head == directory and _FILE_NAME.fullmatch(name) else None


def open_tap_file(file: str, *, readable: bool = False) -> int:
    """A descriptor, for writing (and reading, if ``readable``), of tap file ``file``:
    ``OSError`` unless it is a tap file of this process's private directory
    (:func:`tap_file_name`), a regular file of this user, opened without following a symbolic
    link and without blocking."""
    name = tap_file_name(file)
    directory = private_tap_dir()
    if name is None or directory is None:
        raise PermissionError(f"not a tap file: {file!r}")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(directory, flags)
    try:
        st = os.fstat(dir_fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermissionError(f"not a private tap directory: {directory!r}")
        mode = os.O_RDWR if readable else os.O_WRONLY
        flags = mode | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise PermissionError(f"not a regular tap file: {file!r}")
    return fd


@contextlib.contextmanager
def tap_files(count: int) -> Iterator[list[str]]:
    """``count`` new empty tap files, deleted when the block ends however it ends."""
    directory = tap_dir()
    paths = [str(directory / uuid.uuid4().hex) for _ in range(count)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        for path in paths:
            os.close(os.open(path, flags, 0o600))
        yield paths
    finally:
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)


def read_tap_file(path: str, offset: int = 0, limit: int | None = None) -> bytes:
    """Bytes ``offset`` to at most ``limit`` of tap file ``path``; nothing (logged) unless it
    is a regular file of this user. Opened without following a link, without blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            log.warning("tap file %s is not a regular file of this user: not read", path)
            return b""
        end = st.st_size if limit is None else min(st.st_size, limit)
        chunks, at = [], offset
        while at < end:
            chunk = os.pread(fd, end - at, at)
            if not chunk:
                break
            chunks.append(chunk)
            at += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_records(
    path: str, heads: Sequence[str], max_records: int = MAX_TAP_RECORDS
) -> list[list[float] | None]:
    """Every record of a tap file (``[k]``: the state of the request's k-th sequence token from
    its prompt's last one, one score per head), None where the engine wrote nothing; at most
    ``max_records`` (the ones a caller can use)."""
    size = tap_record_size(len(heads))
    return parse_records(read_tap_file(path, 0, max_records * size), len(heads))


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
    call, up to the first not yet written (a later call returns it when it is), and never more
    than ``max_records`` in all."""

    def __init__(self, path: str, heads: Sequence[str], max_records: int = MAX_TAP_RECORDS) -> None:
        self.path, self.heads = path, tuple(heads)
        self.max_records = max_records
        self.done = 0  # records already returned

    def new_scores(self) -> dict[str, list[float | None]]:
        size = tap_record_size(len(self.heads))
        data = read_tap_file(self.path, self.done * size, self.max_records * size)
        records = parse_records(data, len(self.heads), stop_at_hole=True)
        self.done += len(records)
        return {head: [r[h] for r in records if r is not None] for h, head in enumerate(self.heads)}
