"""Denoise and deblock training: a JSNet (its genotype from a search's
weights file, or the hand-picked cell) on clean photos degraded on the fly
(the task's `LevelPairs`), L1 loss, a hold-out of the training files
evaluated at every checkpoint (settings are chosen on it, never on the
validation sets)."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import weights
from ..io import list_images
from ..models.restore import JSNet, JSNetConfig, describe, hand_picked
from ..tasks import get
from ..tasks.base import checkpoint_sampler
from ..tasks.restore import LOSSES
from ..tasks.upscale import load_rgb
from .loop import TrainTask, init_from, split_holdout

HOLDOUT = 0.05  # fraction of the training files kept out (by a hash of the name)
HOLDOUT_CROP = 256  # hold-out photos are scored on their centre crop (the big ones would cost minutes)
QUICK_IMAGES = 16  # hold-out photos of the periodic evaluation


def architecture(task: str, arch_from: Path | None, channels: int, cells: int, layers: int) -> dict:
    """The config of the network to train: the genotype and width stored in
    `arch_from` (a search's or a trained model's weights file), else the
    hand-picked cell."""
    if arch_from:
        cfg = dict(weights.read(arch_from).config)
        if "cells" not in cfg:
            raise ValueError(f"{arch_from} holds no searched architecture (no 'cells' in its config)")
    else:
        cfg = dict(channels=channels, cells=hand_picked(cells, layers))
    return JSNetConfig(**dict(cfg, task=task)).__dict__


def training_data(data: list[str], holdout: float, patch: int, log=print):
    files, held = split_holdout(list_images(data), holdout)
    images = load_rgb(files, min_side=patch)
    log(f"loaded {len(images)} training images from {', '.join(map(str, data))}; {len(held)} held out")
    return images, held


def evaluator(task_name: str, held: list[Path], val: list[str] | None):
    """(model, quick=False) -> {"holdout": ..., val folder: ...}: the hold-out
    at its centre crops, the validation folders whole (only at the end)."""
    task = get(task_name)
    main = (task.restorer.degradation.main,)

    def evaluate(m, quick: bool = False):
        out = {}
        if held:
            out["holdout"] = task.evaluate(m, held[:QUICK_IMAGES] if quick else held, crop=HOLDOUT_CROP,
                                           settings=main if quick else None)
        for f in ([] if quick else val or []):
            out[Path(f).name] = task.evaluate(m, f)
        return out
    return evaluate


def make_task(task_name: str, data: list[str], *, arch_from: Path | None = None, channels: int = 32,
              cells: int = 4, layers: int = 2, patch: int = 64, batch: int = 16, holdout: float = HOLDOUT,
              val: list[str] | None = None, init: Path | None = None, loss: str = "l1", seed: int = 0,
              log=print) -> TrainTask:
    torch.manual_seed(seed)
    task = get(task_name)
    config = architecture(task_name, arch_from or init, channels, cells, layers)
    model = JSNet(**config)
    log(f"{task_name} network: {describe(config['cells'])}, {config['channels']} channels, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters")
    if init:
        init_from(model, init, log)
    images, held = training_data(data, holdout, patch, log)
    sample = checkpoint_sampler(task.pairs(images, patch, seed=seed), batch, seed)
    evaluate = evaluator(task_name, held, val)
    d = task.restorer.degradation
    return TrainTask(
        arch="jsnet", task=task_name, scale=1, model=model, config=config, batch=sample, loss=LOSSES[loss],
        evaluate=evaluate, quick_eval=lambda m: evaluate(m, quick=True),
        provenance=dict(
            data=[Path(x).name for x in data], images=len(images), patch=patch, batch=batch,
            degradation=f"{d.unit} uniform in [{d.low:g}, {d.high:g}] ({task.help.split('(')[0].strip()}); "
                        "hint withheld half the time; 15% gray crops; crops zoomed out by U(0.5, 1)",
            holdout=dict(fraction=holdout, images=len(held), crop=HOLDOUT_CROP,
                         rule="crc32(file name) % 10000 < fraction * 10000"),
            architecture=describe(config["cells"]), arch_from=Path(arch_from).name if arch_from else None,
            loss=loss.upper(), optimizer="Adam(0.9, 0.99) cosine", init=Path(init).name if init else None, seed=seed,
        ),
    )
