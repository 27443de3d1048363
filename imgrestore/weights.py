"""Self-describing safetensors weights.

Every file carries string metadata:

    format      "imgrestore-weights/1"
    arch        architecture id in the registry ("ecbsr", ...)
    config      JSON of the constructor arguments (pruned widths included)
    task        "upscale", "colorize", ...
    scale       output/input size ratio ("1" for same-size tasks)
    provenance  JSON: data, steps, training settings, measured metrics

Loading is strict: a damaged file, unknown architecture, or tensors that do not
match the architecture raise `WeightsError` naming the file and the keys.
No pickle is ever read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import WeightsError

FORMAT = "imgrestore-weights/1"


@dataclass
class WeightsFile:
    path: Path
    arch: str
    config: dict
    task: str
    scale: int
    provenance: dict = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def save(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    *,
    arch: str,
    config: dict,
    task: str,
    scale: int,
    provenance: dict | None = None,
) -> None:
    """Write tensors + metadata atomically (io.write_atomic), replacing `path`."""
    from safetensors.torch import save as to_bytes

    from .io import write_atomic

    path = Path(path)
    meta = {
        "format": FORMAT,
        "arch": arch,
        "config": json.dumps(config, sort_keys=True),
        "task": task,
        "scale": str(int(scale)),
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    write_atomic(to_bytes(tensors, metadata=meta), path, overwrite=True)


def read(path: str | os.PathLike) -> WeightsFile:
    """Read a weights file and its metadata; raises `WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix.lower() == ".onnx":
        raise WeightsError(f"{path} is an ONNX graph: run it with --backend onnx (PyTorch reads the "
                           f"model's .safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: no imgrestore metadata (format={meta.get('format')!r}); "
            "only files written by imgrestore train/prune can be loaded"
        )
    try:
        config = json.loads(meta["config"])
        provenance = json.loads(meta.get("provenance", "{}"))
        wf = WeightsFile(
            path=path,
            arch=meta["arch"],
            config=config,
            task=meta["task"],
            scale=int(meta["scale"]),
            provenance=provenance,
            tensors=tensors,
        )
    except (KeyError, ValueError) as e:
        raise WeightsError(f"{path}: damaged metadata ({e})") from None
    if not isinstance(wf.config, dict):
        raise WeightsError(f"{path}: damaged metadata (config is not a JSON object)")
    if wf.scale < 1:
        raise WeightsError(f"{path}: damaged metadata (scale {wf.scale}; it must be 1 or more)")
    for k, t in tensors.items():
        if not t.is_floating_point():
            raise WeightsError(f"{path}: tensor {k} is {str(t.dtype).replace('torch.', '')}; "
                               "weights are floating point")
        if not bool(torch.isfinite(t).all()):
            raise WeightsError(f"{path}: tensor {k} holds NaN or infinite values")
    return wf


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    """`load_state_dict(strict=True)` with an error that names the file and the
    mismatched keys and shapes (modules may drop legacy keys they know are
    dead through their own load hooks)."""
    own = model.state_dict()
    shapes = [
        f"{k} {tuple(tensors[k].shape)} != {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(tensors))
        if tensors[k].shape != own[k].shape
    ]
    missing: list[str] = []
    unexpected: list[str] = []
    if not shapes:
        res = model.load_state_dict(dict(tensors), strict=False)
        missing, unexpected = sorted(res.missing_keys), sorted(res.unexpected_keys)
    if missing or unexpected or shapes:
        raise mismatch(path, missing, unexpected, shapes)


def mismatch(path, missing: list[str], unexpected: list[str], shapes: list[str]) -> WeightsError:
    """The error for tensors that do not match an architecture, naming the
    file and (the first eight of) each kind of mismatched key."""
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if keys:
            sep = "; " if label == "shape" else ", "
            parts.append(f"{label} " + sep.join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
    return WeightsError(f"{path}: tensors do not match the architecture: " + " | ".join(parts))
