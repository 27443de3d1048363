"""Super-resolution training task: bicubic-downscaled pairs, L1 loss."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.sr import ECBSR
from .data import SRPairs, checkpoint_sampler, list_images, load_rgb
from .loop import TrainTask, init_from


def make_task(data: list[str], scale: int, *, channels: int = 32, blocks: int = 4,
              patch: int = 48, batch: int = 16, val: list[str] | None = None,
              init: Path | None = None, seed: int = 0, log=print) -> TrainTask:
    from ..bench import eval_sr, model_upscaler

    torch.manual_seed(seed)
    config = dict(scale=scale, colors=3, channels=channels, blocks=blocks, mid_mult=2.0)
    model = ECBSR(**config)
    if init:
        init_from(model, init, log)
    files = list_images(data)
    images = load_rgb(files, min_side=patch * scale)
    log(f"loaded {len(images)} training images from {', '.join(map(str, data))}")
    pairs = SRPairs(images, scale, patch, seed=seed)

    sample = checkpoint_sampler(pairs, batch, seed)

    def loss(m, b):
        lr, hr = b
        return F.l1_loss(m(lr), hr)

    def evaluate(m):
        out = {}
        for folder in val or []:
            out[Path(folder).name] = eval_sr(model_upscaler(m), folder, scale).summary()
        return out

    return TrainTask(
        arch="ecbsr", task="upscale", scale=scale, model=model, config=config,
        batch=sample, loss=loss, evaluate=evaluate,
        quick_eval=(lambda m: {Path(val[0]).name: eval_sr(model_upscaler(m), val[0], scale).summary()})
        if val else None,
        provenance=dict(
            data=[Path(d).name for d in data], images=len(images), patch_lr=patch, batch=batch,
            degradation="pillow bicubic downscale of HR crops zoomed out by U(0.5, 1)",
            loss="L1", optimizer="Adam(0.9, 0.99) cosine", init=str(Path(init).name) if init else None,
            seed=seed,
        ),
    )
