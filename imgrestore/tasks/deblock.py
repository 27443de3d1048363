"""Deblocking JPEG artefacts: what makes it a task.

Pairs and evaluation as DESIGN.md defines them: the photo saved by Pillow as
JPEG at quality q (its default 4:2:0 chroma; gray photos as gray JPEGs) and
decoded; PSNR on BT.601 Y against the original, next to the JPEG input's own
PSNR from the same run.

The network is blind over quality 10-90; `--jpeg-quality` is a hint, and
without it the quality of a JPEG input is read from its own quantization
tables (`io.Picture.jpeg_quality`); other inputs are deblocked blind.
"""

from __future__ import annotations

import click
import numpy as np

from ..io import Picture, jpeg_roundtrip
from .denoise import is_gray
from .restore import Degradation, LevelRestorer, level_task

QUALITY_RANGE = (10.0, 90.0)


def jpeg(clean: np.ndarray, quality: float, rng=None) -> np.ndarray:
    """(H, W, 3) uint8 -> the same after a Pillow JPEG round trip at
    `quality` (gray images as gray JPEG)."""
    if is_gray(clean):
        return np.repeat(jpeg_roundtrip(clean[..., 0], round(quality))[..., None], 3, axis=2)
    return jpeg_roundtrip(clean, round(quality))


def y_psnr(out: np.ndarray, clean: np.ndarray) -> float:
    from ..bench import psnr, y255

    return psnr(y255(out), y255(clean))


DEGRADATION = Degradation(
    unit="q", low=QUALITY_RANGE[0], high=QUALITY_RANGE[1],
    level=lambda q: 1.0 - min(max(float(q), QUALITY_RANGE[0]), QUALITY_RANGE[1]) / 100.0,
    apply=jpeg, baseline=lambda img, q: img, baseline_name="the JPEG input",
    score=y_psnr, score_name="Y", main=10, levels=(10, 20, 30, 40),
)

BLIND_NOTE = "not a JPEG and no --jpeg-quality given: deblocked blind (the network judges the blocking itself)"


class DeblockRestorer(LevelRestorer):
    """Deblocking: scale 1; `hint` is the JPEG quality (1-100), None to read
    it from a JPEG input's quantization tables, else blind."""

    degradation = DEGRADATION
    hint_setting = "jpeg_quality"

    def __init__(self, *args, jpeg_quality: int | None = None):
        super().__init__(*args, hint=jpeg_quality)

    def picture_level(self, pic: Picture) -> float | None:
        if self.hint is None and pic.jpeg_quality is not None:
            return DEGRADATION.level(pic.jpeg_quality)
        return self.level

    def input_notes(self, pic: Picture) -> list[str]:
        return [BLIND_NOTE] if self.hint is None and pic.jpeg_quality is None else []


TASK = level_task(
    DEGRADATION,
    name="deblock",
    noun="a deblocker",
    help="Remove JPEG blocking and ringing (blind over quality 10-90; the quality of a JPEG input is read "
         "from its quantization tables, --jpeg-quality overrides).",
    restorer=DeblockRestorer,
    suffix=lambda r: "_deblocked",
    output_suffixes=("_deblocked",),
    options=(click.option("--jpeg-quality", "jpeg_quality", type=click.IntRange(1, 100),
                          help="The input's JPEG quality, as a hint (trained on 10-90; --quality is the output's). "
                               "Default: read from a JPEG input's quantization tables, else blind."),),
    default_model=lambda values: "deblock",
    settings=lambda values, max_pixels: {"jpeg_quality": values.get("jpeg_quality")},
)
