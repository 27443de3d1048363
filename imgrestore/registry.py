"""Architectures by id, and the shipped models by name.

Each architecture is described once: how to build it from its saved config,
what task it serves, and what the tiler needs to know. Loading never guesses:
the weights file names its `arch`, and the `ARCHS` table is the only place
that maps it to code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import ModelNotFound, WeightsError


@dataclass(frozen=True)
class ArchSpec:
    id: str
    build: Callable[[dict], nn.Module]  # config -> model (training or deploy form)
    # pixels of input context one output pixel depends on (for tile overlap)
    receptive_radius: Callable[[dict], int]
    size_multiple: int = 1  # input sides must be a multiple of this
    tile_safe: bool = True  # a tiled run equals the untiled one
    # tensors kept in another shipped file (a frozen pretrained part):
    # (weights file, built model) -> {state-dict key: tensor} to load beside its own
    external: Callable[[object, nn.Module], dict] | None = None


def _build_ecbsr(config: dict) -> nn.Module:
    from .models.sr import ECBSR

    return ECBSR(**config)


def _build_colornet(config: dict) -> nn.Module:
    from .models.colorize import FusionColorNet

    return FusionColorNet(**config)


def _build_semantic(config: dict) -> nn.Module:
    from .models.colorize import SemanticColorNet

    return SemanticColorNet(**config)


def _build_encoder(config: dict) -> nn.Module:
    from .models.encoder import EfficientLite

    return EfficientLite(**config)


def _encoder_tensors(wf, model: nn.Module) -> dict:
    """The frozen encoder a colorizer names, read from its own shipped file;
    it must be the architecture the colorizer was trained with."""
    from .weights import read

    name = model.cfg.encoder
    if name not in COMPONENTS:
        raise WeightsError(f"{wf.path}: unknown encoder {name!r} (known: {', '.join(COMPONENTS)})")
    enc = read(component_path(name))
    if enc.arch != "efficientnet-lite" or enc.config != model.encoder.config():
        raise WeightsError(f"{wf.path}: the encoder file {enc.path} is not the encoder this model was "
                           "trained with (its architecture differs)")
    return {f"encoder.{k}": v for k, v in enc.tensors.items()}


ARCHS: dict[str, ArchSpec] = {
    "ecbsr": ArchSpec(
        id="ecbsr",
        build=_build_ecbsr,
        # head + body + tail 3x3 convs, one pixel each
        receptive_radius=lambda c: c.get("blocks", 4) + 2,
    ),
    "fusion-colornet": ArchSpec(
        id="fusion-colornet",
        build=_build_colornet,
        receptive_radius=lambda c: 0,  # whole image at a working resolution: never tiled
        size_multiple=8,
        tile_safe=False,
    ),
    "semantic-colornet": ArchSpec(
        id="semantic-colornet",
        build=_build_semantic,
        receptive_radius=lambda c: 0,  # whole image at a working resolution: never tiled
        size_multiple=8,
        tile_safe=False,
        external=_encoder_tensors,
    ),
    "efficientnet-lite": ArchSpec(
        id="efficientnet-lite",
        build=_build_encoder,
        receptive_radius=lambda c: 0,
        tile_safe=False,
    ),
}

# Shipped parts that are not models a command runs: read by the models that
# name them in their config.
COMPONENTS: dict[str, str] = {
    "encoder-efficientnet-lite0": "encoder-efficientnet-lite0.safetensors",
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
                     "global+local fusion colorizer with multi-scale attention"),
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


def own_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a model's own weights file holds: its state dict less the
    parts that live in another shipped file (`EXTERNAL` prefixes)."""
    skip = tuple(getattr(model, "EXTERNAL", ()))
    return {k: v for k, v in model.state_dict().items() if not (skip and k.startswith(skip))}


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


def build_from_weights(wf) -> nn.Module:
    """Build the architecture a `WeightsFile` names and load its tensors
    strictly."""
    from .weights import load_state_strict

    spec = ARCHS.get(wf.arch)
    if spec is None:
        raise WeightsError(f"{wf.path}: unknown architecture {wf.arch!r} (known: {', '.join(ARCHS)})")
    try:
        model = spec.build(dict(wf.config))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{wf.path}: config does not fit architecture {wf.arch!r} ({e})") from None
    tensors = dict(wf.tensors)
    if spec.external is not None:
        tensors.update(spec.external(wf, model))
    load_state_strict(model, tensors, wf.path)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_output_mp(model: nn.Module, scale: int, colors: int = 3, size: int = 64) -> float:
    """Multiply-accumulates per output megapixel (the deployed form is what
    runs)."""
    return count_macs(model, torch.zeros(1, colors, size, size)) / (size * scale) ** 2 * 1e6


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, counted with hooks on
    convolutions and linear layers."""
    total = 0

    def conv_hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out.numel() * k
        elif isinstance(mod, nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.out_channels // mod.groups
            total += inp[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total
