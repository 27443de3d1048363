"""The shipped models by name, and where their files are. No torch: the
command line resolves a model (and its ONNX graph, for `--backend onnx`)
before deciding whether torch is needed at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ModelNotFound

# Shipped parts that are not models a command runs: read by the models that
# name them in their config.
COMPONENTS: dict[str, str] = {
    "encoder-efficientnet-lite0": "encoder-efficientnet-lite0.safetensors",
    # the same with its blocks after the 1/16 tap fine-tuned to see gray
    # photos as colour ones (`imgrestore train gray-encoder`)
    "encoder-efficientnet-lite0-gray": "encoder-efficientnet-lite0-gray.safetensors",
}


@dataclass(frozen=True)
class ShippedModel:
    name: str
    file: str
    task: str
    scale: int
    summary: str


SHIPPED: dict[str, ShippedModel] = {
    m.name: m
    for m in [
        ShippedModel("upscale-x2", "upscale-x2.safetensors", "upscale", 2, "fast x2 (ECBSR)"),
        ShippedModel("upscale-x3", "upscale-x3.safetensors", "upscale", 3, "fast x3 (ECBSR)"),
        ShippedModel("upscale-x4", "upscale-x4.safetensors", "upscale", 4, "fast x4 (ECBSR)"),
        ShippedModel("colorize", "colorize.safetensors", "colorize", 1,
                     "U-Net decoder on a frozen EfficientNet-Lite0 (its own file), fused global vector"),
        ShippedModel("denoise", "denoise.safetensors", "denoise", 1,
                     "blind denoiser, colour and gray, sigma 0-50 (JSNet family, half resolution)"),
        ShippedModel("deblock", "deblock.safetensors", "deblock", 1,
                     "JPEG deblocker, quality 10-90 read from the file (JSNet family, half resolution)"),
    ]
}


def weights_dir() -> Path:
    """Where the shipped weights are: `IMGRESTORE_WEIGHTS` if set, else the
    installed package data (`imgrestore/_weights`), else the checkout's
    top-level `weights/` (development)."""
    env = os.environ.get("IMGRESTORE_WEIGHTS")
    if env:
        return Path(env)
    try:
        pkg = Path(str(resources.files("imgrestore") / "_weights"))
        if pkg.is_dir():
            return pkg
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "weights"


def component_path(name: str) -> Path:
    path = weights_dir() / COMPONENTS[name]
    if not path.is_file():
        raise ModelNotFound(f"shipped component {name!r} is missing its file {path}")
    return path


def resolve(name_or_path: str) -> Path:
    """A shipped model name or a path -> the weights file path."""
    if name_or_path in SHIPPED:
        path = weights_dir() / SHIPPED[name_or_path].file
        if not path.is_file():
            raise ModelNotFound(f"shipped model {name_or_path!r} is missing its file {path}")
        return path
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise ModelNotFound(f"{path}: weights file not found")
        return path
    known = ", ".join(sorted(SHIPPED))
    raise ModelNotFound(f"unknown model {name_or_path!r} (shipped models: {known}; or a .safetensors path)")
