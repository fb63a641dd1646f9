"""The reward tap (unit): probe heads scored on the policy's final hidden states in the engine.

Without the engine or the model: the channel's files and records, and a failed tapped request.
With the default model (tests/engine/test_reward_tap.py): the processor on logits made from known
states, the probe reading a tap only when the tokens match, and on the real engine the tap's score
against the re-encoded one.
"""

from __future__ import annotations

import asyncio
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from winnow.engine.base import Completion
from winnow.engine.processors.specs import tap_record_size
from winnow.engine.tap_files import RecordReader, read_records, tap_dir, tap_files
from winnow.engine.tapped import token_scores

# ---- the channel ---------------------------------------------------------------------------------


def test_tap_files_are_deleted_however_the_block_ends():
    with pytest.raises(RuntimeError), tap_files(2) as paths:
        assert all(Path(p).exists() and Path(p).parent == tap_dir() for p in paths)
        raise RuntimeError
    assert not any(Path(p).exists() for p in paths)


def test_records_map_to_the_prompt_state_then_each_token(tmp_path: Path):
    heads = ("h1", "h2")
    path = tmp_path / "t"
    size = tap_record_size(2)
    with path.open("wb") as f:
        f.write(struct.pack("<3f", 1.0, 0.1, 0.2))  # record 0: the prompt's last token
        f.write(bytes(size))  # record 1: unwritten
        f.write(struct.pack("<3f", 1.0, 0.5, 0.6))
    records = read_records(str(path), heads)
    assert records[1] is None and records[2] is not None
    scores = token_scores(records, heads, Completion(0, "ab", [11, 12, 13], "length"))
    assert len(scores["h1"]) == 4  # the prompt's state, then the three tokens
    assert scores["h1"][1] is None and scores["h1"][3] is None
    assert math.isclose(scores["h2"][2] or 0, 0.6, rel_tol=1e-6)


def test_a_growing_file_is_read_up_to_its_first_unwritten_record(tmp_path: Path):
    heads, path = ("h1", "h2"), tmp_path / "t"
    size = tap_record_size(2)
    path.write_bytes(
        struct.pack("<3f", 1.0, 0.1, 0.2) + bytes(size) + struct.pack("<3f", 1.0, 0.5, 0.6)
    )
    reader = RecordReader(str(path), heads)
    first = reader.new_scores()
    assert [round(v or 0, 6) for v in first["h1"]] == [0.1] and len(first["h2"]) == 1
    assert reader.new_scores() == {"h1": [], "h2": []}  # record 1 not written yet
    with path.open("r+b") as f:  # the engine writes it
        f.seek(size)
        f.write(struct.pack("<3f", 1.0, 0.3, 0.4))
    later = reader.new_scores()
    assert [round(v or 0, 6) for v in later["h2"]] == [0.4, 0.6]


def test_a_failed_tapped_request_raises_its_own_error_and_cancels_the_rest():
    """One of the n requests fails: the others are cancelled (their engine work aborted) and
    the caller sees that request's error, not an exception group (a 400 stays a 400)."""
    from winnow.engine.base import EngineRequestError
    from winnow.engine.tapped import gather_calls

    cancelled: list[int] = []

    async def slow(i: int) -> Any:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    async def bad() -> Any:
        raise EngineRequestError("prompt too long")

    async def run() -> None:
        await gather_calls([slow(0), bad(), slow(2)])

    with pytest.raises(EngineRequestError, match="prompt too long"):
        asyncio.run(run())
    assert sorted(cancelled) == [0, 2]
