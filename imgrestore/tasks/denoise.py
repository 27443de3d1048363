"""Denoising: what makes it a task.

Pairs and evaluation as DESIGN.md defines them: additive white Gaussian
noise of standard deviation sigma (0-255 scale) on the 8-bit photo, the
noisy image rounded and clipped to 8 bits (what a saved noisy photo is);
colour photos get independent noise per channel, gray photos (three equal
channels) the same noise on every channel. PSNR on RGB, next to OpenCV's
non-local means (fastNlMeansDenoisingColored, h = hColor = 0.55 sigma,
template 7, search 21) on the same noisy image in the same run.

The network is blind over sigma 0-50 (trained on 0-55); `--sigma` is a hint
(the level plane of the network: sigma / 50).
"""

from __future__ import annotations

import click
import numpy as np

from .restore import Degradation, LevelRestorer, level_task

SIGMA_RANGE = (0.0, 55.0)  # training range; the command's promise is 0-50
NLM_H = 0.55  # h = hColor = NLM_H * sigma: the best of a sweep on BSD photos (issue #21)


def is_gray(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 + N(0, sigma^2), rounded and clipped to uint8; the
    same noise on every channel of a gray image."""
    shape = clean.shape[:2] + ((1,) if is_gray(clean) else (3,))
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(clean.astype(np.float32) + noise), 0, 255).astype(np.uint8)


def nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """The baseline: OpenCV non-local means, tuned (NLM_H), on RGB uint8 (the
    gray variant on a gray image)."""
    import cv2

    h = NLM_H * sigma
    if sigma <= 0:
        return noisy
    if is_gray(noisy):
        return np.repeat(cv2.fastNlMeansDenoising(np.ascontiguousarray(noisy[..., 0]), None, h, 7, 21)[..., None], 3, 2)
    bgr = cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21), cv2.COLOR_BGR2RGB)


def rgb_psnr(out: np.ndarray, clean: np.ndarray) -> float:
    from ..bench import psnr

    return psnr(out, clean)


DEGRADATION = Degradation(
    unit="sigma", low=SIGMA_RANGE[0], high=SIGMA_RANGE[1],
    level=lambda s: min(max(float(s), SIGMA_RANGE[0]), SIGMA_RANGE[1]) / 50.0,
    apply=add_noise, baseline=nlm, baseline_name=f"OpenCV NLM (h = hColor = {NLM_H} sigma, 7, 21)",
    score=rgb_psnr, score_name="RGB", main=25, levels=(15, 25, 50),
)


class DenoiseRestorer(LevelRestorer):
    """Denoising: scale 1; `hint` is the noise sigma (0-255 scale), None for blind."""

    degradation = DEGRADATION
    hint_setting = "sigma"

    def __init__(self, *args, sigma: float | None = None):
        super().__init__(*args, hint=sigma)


TASK = level_task(
    DEGRADATION,
    name="denoise",
    noun="a denoiser",
    help="Remove noise from photos, colour or gray (blind over sigma 0-50; --sigma is an optional hint).",
    restorer=DenoiseRestorer,
    suffix=lambda r: "_denoised",
    output_suffixes=("_denoised",),
    options=(click.option("--sigma", type=click.FloatRange(0, 100),
                          help="Noise level hint: its standard deviation on the 0-255 scale (trained on 0-50). "
                               "Default: blind, the network judges the noise itself."),),
    default_model=lambda values: "denoise",
    settings=lambda values, max_pixels: {"sigma": values.get("sigma")},
)
