"""What a client can make the engine-side processors touch (issue #28), without an engine.

The reward tap writes only files of the server's private directory, and a worker (no such
directory) none at all; the tap's directory is private, unpredictable and swept safely; the
server never reads a FIFO or more than it expects; value and probe directories are read only
from the allow-list, with one answer for any path outside it, and cached once per real path in
bounded caches; deeply nested JSON arguments are a 400; ``winnow worker`` never prints a secret.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from winnow.cli import main
from winnow.engine import tap_files as channel
from winnow.engine.processors import tap, vas
from winnow.engine.processors.allowed import ALLOWED_DIRS_ENV, Loaded
from winnow.engine.processors.args import MAX_ARGS_CHARS, request_args
from winnow.engine.processors.segment import UncertaintySegmenter
from winnow.engine.processors.specs import (
    SEGMENT_KEY,
    TAP_KEY,
    TAP_RECORD_FLAG,
    VAS_KEY,
    as_xargs,
    tap_record_size,
)
from winnow.engine.processors.tap import RewardTap
from winnow.engine.processors.vas import ValueGuide
from winnow.engine.remote.worker import exec_environment, redacted, worker_environment
from winnow.engine.tap_files import (
    TAP_DIR_ENV,
    RecordReader,
    open_tap_file,
    read_records,
    sweep,
    tap_dir,
    tap_files,
)
from winnow.heads.probe import save_head
from winnow.heads.value import EmbeddingInverse, QHead, available, save_value_model

HEAD = Path(__file__).resolve().parents[2] / "winnow" / "assets" / "rewards" / "default"
VICTIM = b"precious bytes that must stay as they are\n"
V, H = 12, 4


def tapped(file: str, heads: tuple[str, ...] = (str(HEAD),)) -> list[SamplingParams]:
    """A tap request naming ``file``, as the local engine and as a worker's client send it."""
    extra = {TAP_KEY: {"heads": list(heads), "file": file}}
    return [SamplingParams(extra_args=extra), SamplingParams(extra_args=as_xargs(extra))]


def admitted(proc: RewardTap, params: SamplingParams) -> None:
    """vLLM adds the request to the batch (the engine core builds the row's rule)."""
    proc.update_state(BatchUpdate(1, [], [(0, params, [1, 2], [7])], []))


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(VICTIM)
    return path


@pytest.fixture
def no_timeout_hang() -> Iterator[None]:
    """Fail instead of hanging (a FIFO read would block forever)."""

    def fail(*_: object) -> None:
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---- the tap writes nothing a client names ------------------------------------------------------


def test_a_worker_refuses_every_tap_request_and_writes_nothing(
    victim: Path, monkeypatch: pytest.MonkeyPatch
):
    """A worker has no private tap directory: every tap request is a 400, and a row that
    reaches the engine anyway is left untapped, the file it names untouched."""
    monkeypatch.delenv(TAP_DIR_ENV, raising=False)
    proc = RewardTap(None, torch.device("cpu"), False)
    for params in tapped(str(victim)):
        with pytest.raises(ValueError, match="only inside winnow's own engine"):
            RewardTap.validate_params(params)
        admitted(proc, params)
        assert proc.rows == {}
    assert victim.read_bytes() == VICTIM


def test_a_client_named_file_outside_the_private_directory_is_refused(
    victim: Path, monkeypatch: pytest.MonkeyPatch
):
    """In winnow's own engine too: only a tap file of its private directory is opened; not a
    file elsewhere, not one reached through ``..``, not a symbolic link planted there."""
    directory = tap_dir()
    monkeypatch.setenv(TAP_DIR_ENV, str(directory))
    proc = RewardTap(None, torch.device("cpu"), False)
    through = f"{directory}/../{victim.parent.name}/{victim.name}"
    for file in (str(victim), through, str(directory / "victim")):
        for params in tapped(file):
            with pytest.raises(ValueError, match="not a tap file of this engine"):
                RewardTap.validate_params(params)
            admitted(proc, params)
            assert proc.rows == {}
    planted = directory / ("ab" * 16)  # a tap file's name, but a link to the victim
    planted.symlink_to(victim)
    try:
        for params in tapped(str(planted)):
            RewardTap.validate_params(params)  # by name it is one: opening it refuses
            admitted(proc, params)
            assert proc.rows == {}
        with pytest.raises(OSError):
            open_tap_file(str(planted))
    finally:
        planted.unlink()
    assert victim.read_bytes() == VICTIM
    with tap_files(1) as (file,):  # the seam's own file is tapped
        admitted(proc, tapped(file)[0])
        assert list(proc.rows) == [0]
        proc.update_state(BatchUpdate(1, [0], [], []))


def test_a_fifo_is_never_opened_nor_read(no_timeout_hang: None, monkeypatch: pytest.MonkeyPatch):
    """A FIFO where a tap file should be: the engine does not open it, the server does not
    read it (opened without blocking, refused as not a regular file)."""
    directory = tap_dir()
    monkeypatch.setenv(TAP_DIR_ENV, str(directory))
    fifo = directory / ("cd" * 16)
    os.mkfifo(fifo, 0o600)
    try:
        with pytest.raises(OSError):
            open_tap_file(str(fifo))
        assert read_records(str(fifo), ("h",)) == []
        assert RecordReader(str(fifo), ("h",)).new_scores() == {"h": []}
    finally:
        fifo.unlink()


def test_the_server_reads_at_most_the_records_it_expects(tmp_path: Path):
    size = tap_record_size(1)
    path = tmp_path / "t"
    path.write_bytes(struct.pack("<2f", TAP_RECORD_FLAG, 0.5) * 10)
    assert len(read_records(str(path), ("h",), 3)) == 3
    reader = RecordReader(str(path), ("h",), 4)
    assert len(reader.new_scores()["h"]) == 4 and reader.new_scores() == {"h": []}
    assert len(read_records(str(path), ("h",))) == 10 == path.stat().st_size // size


# ---- the private directory and the sweep --------------------------------------------------------


@pytest.fixture
def fresh_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The channel as a new server process makes it, in ``tmp_path / "shm"`` for ``/dev/shm``."""
    root = tmp_path / "shm"
    root.mkdir(mode=0o1777)
    monkeypatch.setattr(channel, "_root", lambda: root)
    monkeypatch.setattr(channel, "_dir", None)
    monkeypatch.setattr(channel, "_owner", None)
    monkeypatch.setattr(channel, "_lock_fd", None)
    monkeypatch.setenv(TAP_DIR_ENV, "")
    yield root
    if channel._lock_fd is not None:
        os.close(channel._lock_fd)


def test_the_sweep_survives_hostile_names_and_never_follows_a_link(
    fresh_channel: Path, victim: Path
):
    root = fresh_channel
    victim_dir = victim.parent / "victim-dir"
    victim_dir.mkdir()
    (victim_dir / "keep").write_bytes(VICTIM)
    (root / "winnow-tap-99999999999999999999").write_text("")  # OverflowError in os.kill once
    (root / "winnow-tap-99999999999999999999x").mkdir()
    (root / "winnow-tap-").mkdir()
    (root / "winnow-tap--1").mkdir()
    (root / "winnow-tap-not a pid").mkdir()
    os.mkdir(os.fsencode(root) + b"/winnow-tap-\xff\xfe")  # not even UTF-8
    (root / "winnow-tap-zzzzzzzz").symlink_to(victim_dir)  # named as ours: a link to a victim
    (root / "winnow-tap-yyyyyyyy").symlink_to(victim)
    stale = root / "winnow-tap-aaaaaaaa"  # ours, its server gone (nobody holds its lock)
    stale.mkdir(mode=0o700)
    (stale / ("ef" * 16)).write_bytes(b"old")
    live = root / "winnow-tap-bbbbbbbb"  # ours, its server alive (it holds the lock)
    live.mkdir(mode=0o700)
    import fcntl

    holder = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        sweep(root)  # never raises
        directory = tap_dir()  # sweeps, then makes its own
    finally:
        os.close(holder)
    assert not stale.exists() and live.is_dir()
    assert (root / "winnow-tap-zzzzzzzz").is_symlink() and (victim_dir / "keep").exists()
    assert victim.read_bytes() == VICTIM and (victim_dir / "keep").read_bytes() == VICTIM
    for name in ("winnow-tap-99999999999999999999", "winnow-tap-", "winnow-tap-not a pid"):
        assert (root / name).exists()
    planted = {p.name for p in root.iterdir()} - {directory.name}
    assert directory.parent == root and directory.name not in planted
    st = directory.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.getuid() and os.environ[TAP_DIR_ENV] == str(directory)
    with tap_files(2) as files:
        for file in files:
            fst = os.lstat(file)
            assert stat.S_ISREG(fst.st_mode) and stat.S_IMODE(fst.st_mode) == 0o600
    sweep(root)
    assert directory.is_dir()  # a live server's directory (this one's) is kept


def test_a_directory_named_in_the_environment_must_be_a_private_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A tap directory someone else made, or an open one, is no channel: the tap refuses."""
    for mode in (0o755, 0o700):
        made = tmp_path / f"winnow-tap-{mode:08o}"
        made.mkdir(mode=mode)
        os.chmod(made, mode)
        monkeypatch.setenv(TAP_DIR_ENV, str(made))
        file = made / ("ab" * 16)
        file.write_bytes(VICTIM)
        if mode == 0o700:
            assert channel.private_tap_dir() == str(made)
            os.close(open_tap_file(str(file)))
        else:
            assert channel.private_tap_dir() is None
            with pytest.raises(ValueError, match="only inside winnow's own engine"):
                RewardTap.validate_params(tapped(str(file))[0])
    link = tmp_path / "winnow-tap-linklink"
    link.symlink_to(tmp_path / f"winnow-tap-{0o700:08o}")
    monkeypatch.setenv(TAP_DIR_ENV, str(link))
    assert channel.private_tap_dir() is None


# ---- value and probe directories: the allow-list ------------------------------------------------


def value_model(path: Path) -> Path:
    head = QHead.zeros(H, V)
    head.b = torch.arange(V, dtype=torch.float32)
    save_value_model(path, head, {})
    return path


def probe_dir(path: Path) -> Path:
    save_head(path, {"weight": torch.ones(H), "bias": torch.zeros(())}, {"kind": "outcome"})
    return path


def refusal_of(check, path: str) -> str:
    with pytest.raises(ValueError) as caught:
        check(path)
    return str(caught.value)


def vas_check(path: str) -> None:
    extra = as_xargs({VAS_KEY: {"values": {path: 1}}})  # as a worker's client sends it
    ValueGuide.validate_params(SamplingParams(extra_args=extra))


def tap_check(path: str) -> None:
    tap.parse_args(SamplingParams(extra_args={TAP_KEY: {"heads": [path], "file": "f"}}))


def test_a_path_outside_the_allow_list_gets_one_answer_whether_it_exists_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    monkeypatch.setenv(ALLOWED_DIRS_ENV, str(allowed))
    for check, make, marker in ((vas_check, value_model, "value model"),
                                (tap_check, probe_dir, "probe")):  # fmt: skip
        target = outside / marker.replace(" ", "_")
        spellings = [str(target), f"{allowed}/../outside/{target.name}", str(allowed / target.name)]
        before = [refusal_of(check, s) for s in spellings]  # nothing there yet
        make(target)
        (allowed / target.name).symlink_to(target)  # a link inside, to a model outside
        after = [refusal_of(check, s) for s in spellings]
        assert before == after and all(f"not a {marker} directory" in m for m in after)
        inside = make(allowed / f"real_{target.name}")
        check(str(inside))  # allowed: accepted
        missing = str(allowed / "missing")  # allowed but nothing there: the same answer
        assert refusal_of(check, missing) == before[0].replace(repr(spellings[0]), repr(missing))
    for path in available().values():  # winnow's shipped value models: always allowed
        vas_check(str(path))
    tap_check(str(HEAD))


def test_one_directory_by_any_spelling_is_loaded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(ALLOWED_DIRS_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    value, probe = value_model(tmp_path / "v"), probe_dir(tmp_path / "p")
    loads: list[str] = []
    real_value, real_head = vas.load_value_model, tap.load_head

    def count_value(path):
        loads.append(str(path))
        return real_value(path)

    def count_head(path):
        loads.append(str(path))
        return real_head(path)

    monkeypatch.setattr(vas, "load_value_model", count_value)
    monkeypatch.setattr(tap, "load_head", count_head)
    monkeypatch.setattr(ValueGuide, "_heads", Loaded())
    monkeypatch.setattr(RewardTap, "_scorers", Loaded())

    def spell(path: Path) -> list[str]:
        return [str(path), f"{path}/", f"{path}//", f"./{path.name}", f"{tmp_path}/./{path.name}"]

    guide = ValueGuide(None, torch.device("cpu"), False)
    guide.error, guide.inverse = None, EmbeddingInverse(torch.randn(V, H))
    rows = [(i, SamplingParams(extra_args={VAS_KEY: {"values": {s: 1.0}}}), [1], [])
            for i, s in enumerate(spell(value))]  # fmt: skip
    guide.update_state(BatchUpdate(len(rows), [], rows, []))
    assert {tuple(r.values) for r in guide.rows.values()} == {(str(value.resolve()),)}
    twice = vas.parse_rule(
        SamplingParams(extra_args={VAS_KEY: {"values": {f"{value}/": 1.0, f"./{value.name}": 2.0}}})
    )
    assert twice is not None and twice.values == {str(value.resolve()): 3.0}
    proc = RewardTap(None, torch.device("cpu"), False)
    scorers = {id(proc._scorer(s)) for s in spell(probe)}
    assert len(scorers) == 1 and None not in {proc._scorer(s) for s in spell(probe)}
    assert loads == [str(value.resolve()), str(probe.resolve())]


def test_the_caches_of_loaded_directories_are_bounded():
    cache: Loaded[int] = Loaded(3)
    for key in range(10):
        assert cache.get(key, lambda key=key: key * 2) == key * 2
    assert len(cache) == 3 and list(cache) == [7, 8, 9]
    assert cache.get(7, lambda: -1) == 14  # held: not loaded again, and now the newest
    cache.get(10, lambda: 20)
    assert list(cache) == [9, 7, 10]
    assert len(ValueGuide._heads) <= ValueGuide._heads.size == RewardTap._scorers.size


# ---- arguments -----------------------------------------------------------------------------------


def test_deeply_nested_or_huge_json_arguments_are_a_400():
    deep = ["[" * 50_000, '{"a":' * 20_000, "[" * (MAX_ARGS_CHARS + 1)]
    for key, processor in ((SEGMENT_KEY, UncertaintySegmenter), (VAS_KEY, ValueGuide),
                           (TAP_KEY, RewardTap)):  # fmt: skip
        for text in deep:
            params = SamplingParams(extra_args={key: text})
            with pytest.raises(ValueError, match=r"nested too deep|longer than"):
                request_args(params, key)
            with pytest.raises(ValueError):
                processor.validate_params(params)
    ok = json.dumps({"values": {}})
    assert request_args(SamplingParams(extra_args={VAS_KEY: ok}), VAS_KEY) == {"values": {}}


# ---- winnow worker -------------------------------------------------------------------------------


def test_worker_never_prints_a_secret(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    argv = ["worker", "--model", str(tmp_path), "--print-command", "--data-dir", str(tmp_path),
            "--api-key", "sekrit", "--allow-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    line = capsys.readouterr().out
    assert "sekrit" not in line and "--api-key '***'" in line
    assert f"{ALLOWED_DIRS_ENV}={os.path.realpath(tmp_path)}" in line
    given = ["x", "--api-key", "a", "b", "--port", "1", "--api_key=c", "--hf-token", "d"]
    assert redacted(given) == [
        "x", "--api-key", "***", "***", "--port", "1", "--api_key=***", "--hf-token", "***"
    ]  # fmt: skip
    launched: list[tuple] = []
    monkeypatch.setattr(os, "execve", lambda *args: launched.append(args))
    monkeypatch.setenv(TAP_DIR_ENV, "/dev/shm/winnow-tap-whatever")
    main([a for a in argv if a != "--print-command"] + ["--api-key=other"])
    printed = capsys.readouterr().err
    assert "sekrit" not in printed and "other" not in printed and "'--api-key=***'" in printed
    ((_, command, env),) = launched
    assert "sekrit" in command  # vLLM itself gets it
    assert TAP_DIR_ENV not in env and env[ALLOWED_DIRS_ENV] == os.path.realpath(tmp_path)
    with pytest.raises(SystemExit):
        main(["worker", "--print-command", "--allow-dir", str(tmp_path / "nowhere")])


def test_a_worker_environment_has_no_tap_directory_and_its_own_allow_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(TAP_DIR_ENV, str(tap_dir()))
    monkeypatch.setenv(ALLOWED_DIRS_ENV, "/")  # inherited: replaced, not widened
    env = worker_environment(tmp_path, 2, cpu=True)
    assert env[ALLOWED_DIRS_ENV] == ""  # the shipped assets only
    whole = exec_environment(env)
    assert TAP_DIR_ENV not in whole and whole[ALLOWED_DIRS_ENV] == ""


def test_the_local_engine_names_its_directories_to_the_engine_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Without starting it: the environment its engine core inherits allows the configured
    probe directories and the value models VAS can name, and names the private tap directory."""
    from winnow.engine.vllm_local import VllmEngine

    monkeypatch.setenv(ALLOWED_DIRS_ENV, "/")
    engine = VllmEngine(str(tmp_path / "model"))
    engine.allow_dirs([probe_dir(tmp_path / "probe")])
    env = engine.processor_environment()
    allowed = env[ALLOWED_DIRS_ENV].split(os.pathsep)
    assert allowed[0] == str((tmp_path / "probe").resolve())
    assert set(allowed[1:]) == {str(p) for p in available().values()}
    assert env[TAP_DIR_ENV] == str(tap_dir())
