"""The PRM label kernel (interpreted) against its torch reference and a full-vocabulary softmax."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from winnow.kernels.prm_labels import prm_label_probs_torch, prm_label_probs_triton

pytestmark = [
    pytest.mark.usefixtures("triton_interpret"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter"),
]

HIDDEN = 48
VOCAB = 300
LABELS = torch.tensor([17, 250])


def assert_same(
    hidden: torch.Tensor, positions: torch.Tensor, lm_head: torch.Tensor, label_ids: torch.Tensor
) -> torch.Tensor:
    got = prm_label_probs_triton(hidden, positions, lm_head, label_ids)
    want = prm_label_probs_torch(hidden, positions, lm_head, label_ids)
    assert got.dtype == torch.float32
    assert got.shape == want.shape == (positions.shape[0], label_ids.shape[0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    return got


def full_vocab_probs(
    hidden: torch.Tensor, positions: torch.Tensor, lm_head: torch.Tensor, label_ids: torch.Tensor
) -> torch.Tensor:
    """What the ops avoid: every logit, then the softmax over the label columns."""
    logits = hidden[positions].double() @ lm_head.double().T
    return torch.softmax(logits[:, label_ids], dim=-1).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("label_ids", [LABELS, torch.tensor([3, 299, 42])])
def test_matches_reference_and_full_vocabulary(dtype: torch.dtype, label_ids: torch.Tensor) -> None:
    hidden = torch.randn(64, HIDDEN, dtype=dtype)
    lm_head = (torch.randn(VOCAB, HIDDEN) / 4).to(dtype)
    positions = torch.randint(0, 64, (19,))
    got = assert_same(hidden, positions, lm_head, label_ids)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(19))
    want = full_vocab_probs(hidden, positions, lm_head, label_ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_smollm2_shapes() -> None:
    """H=576 spans several blocks; a 49152-row LM head is only read at the label rows."""
    hidden = torch.randn(200, 576)
    lm_head = torch.randn(49152, 576) / 24
    positions = torch.randint(0, 200, (17,))
    assert_same(hidden, positions, lm_head, torch.tensor([12, 49151]))


def test_padding_and_out_of_range_positions_give_nan_rows() -> None:
    hidden = torch.randn(10, HIDDEN)
    lm_head = torch.randn(VOCAB, HIDDEN)
    got = assert_same(hidden, torch.tensor([2, -1, 10, 9]), lm_head, LABELS)
    assert torch.isnan(got[[1, 2]]).all()
    assert torch.isfinite(got[[0, 3]]).all()


@pytest.mark.parametrize("bad_id", [-1, VOCAB])
def test_out_of_range_label_id_gives_all_nan(bad_id: int) -> None:
    hidden = torch.randn(10, HIDDEN)
    lm_head = torch.randn(VOCAB, HIDDEN)
    got = assert_same(hidden, torch.tensor([0, 5]), lm_head, torch.tensor([3, bad_id]))
    assert torch.isnan(got).all()


def test_empty_inputs() -> None:
    lm_head = torch.randn(VOCAB, HIDDEN)
    got = assert_same(torch.randn(5, HIDDEN), torch.zeros(0, dtype=torch.int64), lm_head, LABELS)
    assert got.shape == (0, 2)
    got = assert_same(torch.randn(0, HIDDEN), torch.tensor([0]), lm_head, LABELS)
    assert torch.isnan(got).all()


def test_non_contiguous_inputs() -> None:
    hidden = torch.randn(HIDDEN, 30).T
    lm_head = torch.randn(HIDDEN, VOCAB).T  # e.g. a transposed output embedding
    positions = torch.arange(29, -1, -1)[::2]
    label_ids = torch.tensor([9, 0, 123, 7])[::2]
    assert not any(t.is_contiguous() for t in (hidden, lm_head, positions, label_ids))
    got = assert_same(hidden, positions, lm_head, label_ids)
    torch.testing.assert_close(
        got, full_vocab_probs(hidden, positions, lm_head, label_ids), rtol=1e-4, atol=1e-5
    )


class _LargestOutput(TorchDispatchMode):
    """Records the largest number of elements any torch op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(
        self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def test_reference_never_materialises_full_vocabulary_logits() -> None:
    """(The kernel holds only ``[BLOCK_P, BLOCK_L]`` logits by construction.)"""
    n_pos, vocab = 8, 5000
    hidden = torch.randn(20, HIDDEN)
    lm_head = torch.randn(vocab, HIDDEN)
    positions = torch.randint(0, 20, (n_pos,))
    with _LargestOutput() as recorder:
        prm_label_probs_torch(hidden, positions, lm_head, LABELS)
    assert 0 < recorder.largest < n_pos * vocab


def test_invalid_inputs_are_rejected() -> None:
    hidden = torch.randn(4, HIDDEN)
    positions = torch.tensor([0])
    with pytest.raises(ValueError, match="hidden size"):
        prm_label_probs_triton(hidden, positions, torch.randn(VOCAB, HIDDEN + 1), LABELS)
    with pytest.raises(ValueError, match="must not be empty"):
        prm_label_probs_triton(hidden, positions, torch.randn(VOCAB, HIDDEN), LABELS[:0])
    with pytest.raises(TypeError, match="label_ids"):
        prm_label_probs_triton(hidden, positions, torch.randn(VOCAB, HIDDEN), LABELS.float())
