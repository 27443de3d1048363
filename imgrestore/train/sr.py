"""Super-resolution training task: bicubic-downscaled pairs, L1 loss."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..io import list_images
from ..models.sr import ECBSR
from ..tasks.base import checkpoint_sampler
from ..tasks.upscale import TASK, load_rgb
from .loop import TrainTask, init_from


def make_task(data: list[str], scale: int, *, channels: int = 32, blocks: int = 4,
              patch: int = 48, batch: int = 16, val: list[str] | None = None,
              init: Path | None = None, seed: int = 0, log=print) -> TrainTask:
    torch.manual_seed(seed)
    config = dict(scale=scale, colors=3, channels=channels, blocks=blocks, mid_mult=2.0)
    model = ECBSR(**config)
    if init:
        init_from(model, init, log)
    files = list_images(data)
    images = load_rgb(files, min_side=patch * scale)
    log(f"loaded {len(images)} training images from {', '.join(map(str, data))}")
    pairs = TASK.pairs(images, scale, patch, seed=seed)

    sample = checkpoint_sampler(pairs, batch, seed)

    def loss(m, b):
        lr, hr = b
        return F.l1_loss(m(lr), hr)

    def evaluate(m, folders=val or []):
        return {Path(f).name: TASK.evaluate(m, f) for f in folders}

    return TrainTask(
        arch="ecbsr", task=TASK.name, scale=scale, model=model, config=config,
        batch=sample, loss=loss, evaluate=evaluate,
        quick_eval=(lambda m: evaluate(m, val[:1])) if val else None,
        provenance=dict(
            data=[Path(d).name for d in data], images=len(images), patch_lr=patch, batch=batch,
            degradation="pillow bicubic downscale of HR crops zoomed out by U(0.5, 1)",
            loss="L1", optimizer="Adam(0.9, 0.99) cosine", init=str(Path(init).name) if init else None,
            seed=seed,
        ),
    )
