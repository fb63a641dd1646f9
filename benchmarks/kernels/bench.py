"""Micro-benchmark: winnow's Triton kernels against their torch references.

Shapes follow the default model, SmolLM2-135M (hidden 576, vocabulary 49152), and a packed
scoring batch of a few thousand tokens. Times are medians of several runs, in milliseconds. The
Triton column needs CUDA: under ``TRITON_INTERPRET=1`` the kernels run through a Python
interpreter and their timings say nothing about GPU speed, so on CPU only the references run.

    python -m benchmarks kernels bench [--quick]

Prints its table; writes no results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from winnow.kernels.entropy import next_token_entropy_torch, next_token_entropy_triton
from winnow.kernels.heads import LinearHead, MLPHead
from winnow.kernels.prm_labels import prm_label_probs_torch, prm_label_probs_triton
from winnow.kernels.reward_head import last_token_positions, reward_head_torch, reward_head_triton

HIDDEN = 576
VOCAB = 49152
LABEL_IDS = [12, 34]  # any two token ids: only their rows of the LM head are read


@dataclass
class Case:
    """One benchmark row: an op on fixed inputs, with its torch and Triton implementations."""

    op: str
    shape: str
    args: tuple[Any, ...]
    torch_fn: Callable[..., torch.Tensor]
    triton_fn: Callable[..., torch.Tensor] | None  # None: a torch-only baseline for contrast


def packed_batch(
    n_seqs: int, seq_len: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of ``n_seqs`` packed sequences of ragged lengths around ``seq_len``."""
    lengths = torch.randint(seq_len // 2, seq_len * 3 // 2, (n_seqs,))
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(device)
    hidden = torch.randn(int(lengths.sum()), HIDDEN, device=device, dtype=dtype)
    return hidden, cu_seqlens


def full_vocab_label_probs(
    hidden: torch.Tensor, positions: torch.Tensor, lm_head: torch.Tensor, label_ids: torch.Tensor
) -> torch.Tensor:
    """What prm_label_probs avoids: every logit of the vocabulary, then the label columns."""
    logits = hidden[positions].float() @ lm_head.float().T
    return torch.softmax(logits[:, label_ids], dim=-1)


def build_cases(device: torch.device, dtype: torch.dtype, quick: bool) -> list[Case]:
    cases = []
    for n_seqs in [8] if quick else [8, 32]:
        hidden, cu_seqlens = packed_batch(n_seqs, 512, device, dtype)
        last = last_token_positions(cu_seqlens)
        steps = torch.randint(0, hidden.shape[0], (n_seqs * 16,), device=device)
        linear = LinearHead(torch.randn(HIDDEN, device=device) / 24, torch.zeros(1, device=device))
        mlp = MLPHead(
            torch.randn(HIDDEN, HIDDEN, device=device) / 24,
            torch.zeros(HIDDEN, device=device),
            torch.randn(HIDDEN, 2, device=device) / 24,
            torch.zeros(2, device=device),
        )
        lm_head = torch.randn(VOCAB, HIDDEN, device=device, dtype=dtype) / 24
        labels = torch.tensor(LABEL_IDS, device=device)
        tokens = f"T={hidden.shape[0]}"
        step_shape = f"{tokens} P={len(steps)}"
        prm_args = (hidden, steps, lm_head, labels)
        cases += [
            Case(
                "reward_head linear",
                f"{tokens} P={len(last)}",
                (hidden, last, linear),
                reward_head_torch,
                reward_head_triton,
            ),
            Case(
                "reward_head mlp 576-576-2",
                step_shape,
                (hidden, steps, mlp),
                reward_head_torch,
                reward_head_triton,
            ),
            Case(
                "prm_label_probs L=2",
                f"{step_shape} V={VOCAB}",
                prm_args,
                prm_label_probs_torch,
                prm_label_probs_triton,
            ),
            Case(
                "  naive: full-vocab logits",
                f"{step_shape} V={VOCAB}",
                prm_args,
                full_vocab_label_probs,
                None,
            ),
        ]
    for rows in [8, 64] if quick else [8, 64, 256]:
        logits = torch.randn(rows, VOCAB, device=device, dtype=dtype) * 3
        cases.append(
            Case(
                "next_token_entropy",
                f"B={rows} V={VOCAB}",
                (logits,),
                next_token_entropy_torch,
                next_token_entropy_triton,
            )
        )
    return cases


def median_ms(
    fn: Callable[..., torch.Tensor], args: tuple[Any, ...], device: torch.device, repeats: int
) -> float:
    """Median wall time of ``fn(*args)`` after two warm-up calls (which compile Triton kernels)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        fn(*args)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn(*args)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    # bf16 is what a GPU serves in; fp32 is what the CPU build of vLLM runs fast.
    dtype = getattr(torch, args.dtype) if args.dtype else torch.bfloat16 if cuda else torch.float32
    repeats = 5 if args.quick else 20
    print(
        f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}  dtype: {dtype}  "
        f"torch: {torch.__version__}  threads: {torch.get_num_threads()}  repeats: {repeats}  "
        f"load average: {os.getloadavg()[0]:.1f}"  # other processes on the cores skew medians
    )
    if not cuda:
        print("triton: skipped (no CUDA device; interpreter timings would be meaningless)")
    print(f"{'op':<26} {'shape':<28} {'torch ms':>10} {'triton ms':>10} {'speedup':>8}")
    for case in build_cases(device, dtype, args.quick):
        torch_ms = median_ms(case.torch_fn, case.args, device, repeats)
        if cuda and case.triton_fn is not None:
            triton_ms = median_ms(case.triton_fn, case.args, device, repeats)
            triton_col, speedup = f"{triton_ms:>10.3f}", f"{torch_ms / triton_ms:>7.2f}x"
        else:
            triton_col, speedup = f"{'-':>10}", f"{'-':>8}"
        print(f"{case.op:<26} {case.shape:<28} {torch_ms:>10.3f} {triton_col} {speedup}")


if __name__ == "__main__":
    main()
