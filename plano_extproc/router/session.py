"""onnxruntime sessions for both routers: device, threads, and errors that say what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnxruntime as ort

from ..config import RouterSettings
from .base import RouterLoadError


def load_session(
    model: Path,
    settings: RouterSettings,
    disabled_optimizers: tuple[str, ...] = (),
    threads: int | None = None,
) -> ort.InferenceSession:
    """An inference session for ``model`` on the configured device, without the graph
    rewrites ``disabled_optimizers`` names, on ``threads`` intra-op threads (by default the
    configured count; 0: onnxruntime's choice, one per core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = settings.threads if threads is None else threads
    if threads:
        options.intra_op_num_threads = threads
    # One decision at a time runs in the router thread: a second pool would only contend.
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = ["CPUExecutionProvider"]
    if settings.device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RouterLoadError(
                "routing.device is cuda but this onnxruntime has no CUDA provider: "
                "install onnxruntime-gpu (and CUDA), or set device: cpu"
            )
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(
            str(model),
            sess_options=options,
            providers=providers,
            disabled_optimizers=list(disabled_optimizers),
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise RouterLoadError(f"{model}: onnxruntime cannot load it: {exc}") from exc


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RouterLoadError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise RouterLoadError(f"{path}: expected a JSON object")
    return data


def require_files(model_dir: Path, names: tuple[str, ...], hint: str) -> None:
    missing = [n for n in names if not (model_dir / n).is_file()]
    if missing:
        raise RouterLoadError(f"{model_dir}: missing {', '.join(missing)}. {hint}")
