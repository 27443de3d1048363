"""Architectures by id (the shipped models by name are `catalog`'s, which
needs no torch; they are re-exported here).

Each architecture is described once, in its family file (`models.arch.ArchSpec`):
how to build it from its saved config, what the tiler and the pruner need to
know. Loading never guesses: the weights file names its `arch`, and the
`ARCHS` table is the only place that maps it to code.
"""

from __future__ import annotations

import torch
from torch import nn

from .catalog import COMPONENTS, SHIPPED, ShippedModel, component_path, resolve, weights_dir  # noqa: F401
from .errors import WeightsError
from .models import colorize, encoder, hasn, restore, rlfn, sr
from .models.arch import ArchSpec


ARCHS: dict[str, ArchSpec] = {a.id: a for a in (sr.ARCH, hasn.ARCH, rlfn.ARCH, colorize.FUSION_ARCH,
                                                 colorize.SEMANTIC_ARCH, encoder.ARCH, restore.ARCH)}


def own_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a model's own weights file holds: its state dict less the
    parts that live in another shipped file (its `EXTERNAL` prefixes), except
    those the model has retrained itself (its `owns(key)`, if it has one)."""
    skip = tuple(getattr(model, "EXTERNAL", ()))
    owns = getattr(model, "owns", lambda key: False)
    return {k: v for k, v in model.state_dict().items() if not (skip and k.startswith(skip)) or owns(k)}


def build_from_weights(wf) -> nn.Module:
    """Build the architecture a `WeightsFile` names and load its tensors
    strictly (with those of the shipped components it names)."""
    from .weights import load_state_strict

    spec = ARCHS.get(wf.arch)
    if spec is None:
        raise WeightsError(f"{wf.path}: unknown architecture {wf.arch!r} (known: {', '.join(ARCHS)})")
    check_config(wf, spec)
    try:
        model = spec.build(dict(wf.config))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{wf.path}: config does not fit architecture {wf.arch!r} ({e})") from None
    tensors = {}
    for prefix, field in getattr(model, "EXTERNAL", {}).items():
        tensors.update(_component_tensors(wf, model, prefix, getattr(model.cfg, field)))
    tensors.update(wf.tensors)  # the file's own (and what it retrained of a component) win
    load_state_strict(model, tensors, wf.path)
    return model


def _ints(value) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in _ints(v)]
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    return []


def check_config(wf, spec: ArchSpec) -> None:
    """Refuse a config that does not describe the file's tensors before
    building anything for real: a 650 KB file asking for 6,000 channels or
    10^7 blocks would allocate gigabytes first. Every number in the config
    must be of the order of the tensors' own sizes (channels, blocks, scale
    are), a `scale` must agree with the metadata, and the architecture,
    built on the meta device (no memory), must have the file's shapes."""
    cfg = wf.config
    if "scale" in cfg and cfg["scale"] != wf.scale:
        raise WeightsError(f"{wf.path}: the config's scale {cfg['scale']!r} disagrees with the "
                           f"metadata's scale {wf.scale}")
    dims = [d for t in wf.tensors.values() for d in t.shape]
    bound = 4 * max([len(wf.tensors), *dims, 1])
    for name, value in cfg.items():
        big = [i for i in _ints(value) if i > bound or i < 0]
        if big:
            raise WeightsError(f"{wf.path}: config {name}={big[0]} does not fit the file's tensors "
                               f"(none is larger than {bound // 4} in any dimension)")
    try:
        with torch.device("meta"):
            probe = spec.build(dict(cfg))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{wf.path}: config does not fit architecture {wf.arch!r} ({e})") from None
    want = {k: tuple(v.shape) for k, v in own_state(probe).items()}
    have = {k: tuple(v.shape) for k, v in wf.tensors.items()}
    wrong = [f"{k} {have[k]} != {want[k]}" for k in sorted(set(want) & set(have)) if have[k] != want[k]]
    missing = sorted(set(want) - set(have))
    if wrong or missing:
        # (unexpected keys alone are left to the real load: modules may drop
        # legacy keys they know are dead)
        from .weights import mismatch

        raise mismatch(wf.path, missing, sorted(set(have) - set(want)), wrong)


def _component_tensors(wf, model: nn.Module, prefix: str, name: str) -> dict:
    """The tensors of the part of `model` under `prefix`, read from the
    shipped component `name`; it must be the architecture the model was
    trained with."""
    from .weights import read

    part = prefix.rstrip(".")
    if name not in COMPONENTS:
        raise WeightsError(f"{wf.path}: unknown {part} {name!r} (known: {', '.join(COMPONENTS)})")
    comp = read(component_path(name))
    sub = model.get_submodule(part)
    spec = ARCHS.get(comp.arch)
    if spec is None or not isinstance(sub, spec.model) or comp.config != sub.config():
        raise WeightsError(f"{wf.path}: the {part} file {comp.path} is not the {part} this model was "
                           "trained with (its architecture differs)")
    return {f"{prefix}{k}": v for k, v in comp.tensors.items()}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
