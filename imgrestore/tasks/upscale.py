"""Upscaling x2, x3, x4: what makes it a task.

Pairs and evaluation as DESIGN.md defines them: HR cropped to a multiple of
the scale, LR its Pillow bicubic downscale (`bicubic_down`, the one both
training and the benchmark use); PSNR/SSIM on BT.601 Y of the 8-bit outputs
with `scale` pixels of border cropped, next to bicubic upscaling of the same
LR measured in the same run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click
import numpy as np

from ..restorer import Restorer
from .base import Calibration, NetIO, Task, checkpoint_sampler, distill

# the scale group: which upscaler (`upscale` and `bench upscale`)
# (each its own parameter, so that `--x2 --x4` is seen and refused; `parse_scale`)
SCALE_OPTIONS = (
    click.option("--x2", "x2", is_flag=True, help="Upscale 2x."),
    click.option("--x3", "x3", is_flag=True, help="Upscale 3x."),
    click.option("--x4", "x4", is_flag=True, help="Upscale 4x (default)."),
    click.option("--scale", "scale", type=click.IntRange(2, 4), help="Upscale N x (2, 3 or 4)."),
)
# any output size: the smallest trained scale at or above it, then a Lanczos
# resize (`wrap`); the upscale command's own, next to SCALE_OPTIONS
SIZE_OPTIONS = (
    click.option("-s", "--outscale", "outscale", metavar="F|P%",
                 help="Any output scale: a number (3.5) or a percentage (250%): the smallest trained "
                 "scale at or above it, then a high-quality downscale; above 4, x4 then a resize."),
    click.option("--width", type=click.IntRange(1), help="Output width in pixels (height in proportion, "
                 "unless --height is given too)."),
    click.option("--height", type=click.IntRange(1), help="Output height in pixels (width in proportion, "
                 "unless --width is given too)."),
)
TRAINED_SCALES = (2, 3, 4)
# which family of upscalers (`--quality` already means the output's JPEG
# quality): fast (the default), quality (slower, sharper), photo (the quality
# tier trained on LR that carries JPEG compression and noise, as camera
# photos do)
TIERS = ("fast", "quality", "photo")
TIER_OPTIONS = (
    click.option("--tier", type=click.Choice(TIERS), default="fast", show_default=True,
                 help="Which upscalers: fast, quality (a hybrid attention network: sharper, slower) or photo "
                 "(the quality tier trained on JPEG-compressed, slightly noisy inputs, as camera photos are)."),
)


def tier_model(scale: int, tier: str = "fast") -> str:
    """The shipped model's name for a scale and tier: upscale-x4,
    upscale-x4-quality, upscale-x4-photo."""
    return f"upscale-x{scale}" + ("" if tier == "fast" else f"-{tier}")


def tier_scales(tier: str) -> tuple[int, ...]:
    """The scales the tier has a shipped model for."""
    from ..catalog import SHIPPED

    return tuple(s for s in TRAINED_SCALES if tier_model(s, tier) in SHIPPED)


def parse_scale(values: dict) -> dict:
    """The scale options given -> {"scale": 2 | 3 | 4 | None, ...the rest};
    two that ask for different scales are a usage error."""
    values = dict(values)
    asked = [(f"--x{n}", n) for n in (2, 3, 4) if values.pop(f"x{n}", False)]
    if values.get("scale") is not None:
        asked.append((f"--scale {values['scale']}", values["scale"]))
    if len({n for _, n in asked}) > 1:
        raise click.UsageError(f"{' and '.join(a for a, _ in asked)} ask for different scales; give one")
    values["scale"] = asked[0][1] if asked else None
    out = values.get("outscale")
    if out is not None:
        text = str(out).strip()
        try:
            f = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise click.BadParameter(f"{out!r} is not a number (3.5) or a percentage (250%)",
                                     param_hint="-s/--outscale") from None
        if not 0 < f <= 16:
            raise click.BadParameter(f"{out!r}: give a scale above 0 and at most 16", param_hint="-s/--outscale")
        if values.get("width") or values.get("height"):
            raise click.UsageError("--outscale and --width/--height ask for the size twice; give one")
        values["outscale"] = f
    return values


def _trained_scale(factor: float, scales: tuple[int, ...] = TRAINED_SCALES) -> int:
    """The smallest trained scale at or above `factor`, or the largest."""
    return next((s for s in scales if s >= factor - 1e-9), scales[-1])


def _default_model(values: dict) -> str:
    tier = values.get("tier") or "fast"
    scales = tier_scales(tier) if tier != "fast" else TRAINED_SCALES
    scale = values.get("scale") or (_trained_scale(values["outscale"], scales) if values.get("outscale") and scales
                                     else 4)
    if scale not in scales:
        have = ", ".join(f"x{s}" for s in scales) or "none yet"
        raise click.UsageError(f"--tier {tier} has no x{scale} upscaler (shipped: {have}); "
                               f"use another scale or --tier fast")
    return tier_model(scale, tier)


def _wrap(restorer, values: dict, load, chosen: bool):
    """The upscaler, or, for -s/--width/--height, a `Resized` one: a chosen
    model (--model, --xN) always, else the smallest trained scale at or above
    each image's factor."""
    from ..restorer import Resized

    f, width, height = values.get("outscale"), values.get("width"), values.get("height")
    if not (f or width or height):
        return restorer
    if f:
        label = f"_x{f:g}"

        def size(w, h):
            return max(1, round(w * f)), max(1, round(h * f))
    else:
        label = "".join([f"_w{width}" if width else "", f"_h{height}" if height else ""])

        def size(w, h):
            if width and height:
                return width, height
            if width:
                return width, max(1, round(h * width / w))
            return max(1, round(w * height / h)), height
    models = {restorer.scale: restorer}
    tier = values.get("tier") or "fast"
    scales = tier_scales(tier) if tier != "fast" else TRAINED_SCALES

    chosen = chosen or bool(values.get("scale"))  # --model, or --xN / --scale

    def pick(factor: float):
        if chosen:
            return restorer
        s = _trained_scale(factor, scales)
        if s not in models:
            models[s] = load(tier_model(s, tier))
        return models[s]

    return Resized(restorer, pick, size, label)  # above the model's scale: a note per batch (input_notes)


# prune's fine-tuning of upscalers: batch of LR crops, their side, Adam lr
# (chosen in weights/MODEL_CARD.md, "Pruning": more pixels per step, and half
# of the loss from the HR crop)
TUNE_BATCH, TUNE_PATCH, TUNE_LR = 32, 64, 1e-3


# ---------------------------------------------------------------------------- pairs

def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H // scale, W // scale, 3): Pillow's bicubic
    downscale, the LR of training and of the benchmark alike."""
    from PIL import Image

    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    """The baseline: Pillow's bicubic upscale."""
    from PIL import Image

    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.BICUBIC))


# the photo variant's training degradation of an LR crop: sensor noise (half
# the crops; sigma uniform up to this, 0..255 scale), then a JPEG of a
# uniform quality in this range, 4:2:0 or 4:4:4 at random
PHOTO_NOISE_MAX = 4.0
PHOTO_JPEG_QUALITY = (60, 95)


def degrade_photo(lr: np.ndarray, rng: random.Random) -> np.ndarray:
    """What a camera JPEG does to an LR crop, at random strength."""
    a = lr
    if rng.random() < 0.5:
        sigma = rng.uniform(0.0, PHOTO_NOISE_MAX)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, sigma, a.shape)
        a = np.clip(a + noise, 0, 255).round().astype(np.uint8)
    from ..io import jpeg_roundtrip

    return jpeg_roundtrip(a, rng.randint(*PHOTO_JPEG_QUALITY), rng.choice((0, 2)))


def sr_pair(path: Path, scale: int, lr_jpeg: int | None = None,
            crop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8 arrays of one photo as the benchmark defines them;
    with `lr_jpeg` the LR is saved as a JPEG of that quality (4:2:0) first,
    as a camera photo would be; with `crop` the HR is first cut to its
    centre `crop` x `crop` pixels (at most)."""
    from PIL import Image

    from ..io import jpeg_roundtrip

    with Image.open(path) as im:
        hr = np.asarray(im.convert("RGB"))
    h, w = hr.shape[:2]
    if crop:
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        hr = hr[top:top + crop, left:left + crop]
        h, w = hr.shape[:2]
    hr = hr[:h - h % scale, :w - w % scale]
    lr = bicubic_down(hr, scale)
    return (jpeg_roundtrip(lr, lr_jpeg, subsampling=2) if lr_jpeg else lr), hr


def load_rgb(files: list[Path], min_side: int) -> list[np.ndarray]:
    """Decode every file to an (H, W, 3) uint8 array; skip ones too small
    or unreadable."""
    from ..io import open_rgb

    out = []
    for f in files:
        im = open_rgb(f)
        if im is not None and min(im.size) >= min_side:
            out.append(np.asarray(im).copy())
    return out


def augment(*arrays: np.ndarray, rng: random.Random) -> list[np.ndarray]:
    """The same random flip / 90-degree rotation for every array."""
    k = rng.randrange(4)
    flip = rng.random() < 0.5
    out = []
    for a in arrays:
        a = np.rot90(a, k)
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


class SRPairs:
    """Random (LR, HR) crops for super-resolution.

    Each HR crop is first taken at a random zoom-out in [min_zoom, 1] (it
    weakens the sources' JPEG artefacts and widens the range of frequencies
    seen), then LR is its Pillow bicubic downscale; with `degrade="photo"`
    the LR then carries what a camera JPEG does (`degrade_photo`), while
    the target stays the clean HR.
    """

    DEGRADATIONS = ("bicubic", "photo")

    def __init__(self, images: list[np.ndarray], scale: int, patch: int, min_zoom: float = 0.5,
                 seed: int = 0, degrade: str = "bicubic"):
        if degrade not in self.DEGRADATIONS:
            raise ValueError(f"degradation {degrade!r}: one of {', '.join(self.DEGRADATIONS)}")
        self.degrade = degrade
        self.images = images
        self.scale = scale
        self.patch = patch  # LR patch side
        self.min_zoom = min_zoom
        self.rng = random.Random(seed)
        # sample images in proportion to their area (large photos hold more crops)
        areas = np.array([a.shape[0] * a.shape[1] for a in images], dtype=np.float64)
        self.weights = (areas / areas.sum()).tolist()

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        rng = self.rng
        hr_side = self.patch * self.scale
        img = rng.choices(self.images, weights=self.weights)[0]
        h, w = img.shape[:2]
        zoom = rng.uniform(self.min_zoom, 1.0)
        src = min(int(round(hr_side / zoom)), h, w)
        y, x = rng.randrange(h - src + 1), rng.randrange(w - src + 1)
        crop = img[y:y + src, x:x + src]
        if src != hr_side:
            crop = np.asarray(Image.fromarray(crop).resize((hr_side, hr_side), Image.BICUBIC))
        crop, = augment(crop, rng=rng)
        lr = bicubic_down(crop, self.scale)
        return (degrade_photo(lr, rng) if self.degrade == "photo" else lr), crop

    def batch(self, n: int):
        """(LR (n, 3, p, p), HR (n, 3, p*s, p*s)) float in [0, 1]."""
        from ..tensors import to_tensor

        lrs, hrs = zip(*(self.sample() for _ in range(n)))
        return to_tensor(np.stack(lrs)), to_tensor(np.stack(hrs))


# ---------------------------------------------------------------------------- evaluation

def sr_scores(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """PSNR and SSIM on Y with `scale` pixels of border cropped."""
    from ..bench import psnr, ssim, y255

    ys, yh = y255(sr), y255(hr)
    c = scale
    ys, yh = ys[c:-c, c:-c], yh[c:-c, c:-c]
    return psnr(ys, yh), ssim(ys, yh)


@dataclass
class SRResult:
    folder: str
    scale: int
    images: list[dict] = field(default_factory=list)

    def mean(self, key: str) -> float:
        return float(np.mean([r[key] for r in self.images]))

    def summary(self) -> dict:
        keys = ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic")
        out = {k: round(self.mean(k), 4) for k in keys}
        out["gain_db"] = round(out["psnr"] - out["psnr_bicubic"], 4)
        out["images"] = len(self.images)
        return out


def eval_sr(upscale: Callable[[np.ndarray], np.ndarray], folder: str | Path | list[Path], scale: int,
            limit: int | None = None, lr_jpeg: int | None = None, crop: int | None = None) -> SRResult:
    """Run `upscale` (uint8 LR -> uint8 SR) over a folder (or a list) of HR
    images (LR saved as a JPEG of quality `lr_jpeg` first, if given; HR cut
    to its centre `crop` pixels first, if given)."""
    from ..io import list_images

    files = list_images(folder if isinstance(folder, list) else [folder])
    res = SRResult("hold-out" if isinstance(folder, list) else str(folder), scale)
    for path in files[:limit]:
        lr, hr = sr_pair(path, scale, lr_jpeg, crop)
        p, s = sr_scores(upscale(lr), hr, scale)
        pb, sb = sr_scores(bicubic_up(lr, scale), hr, scale)
        res.images.append({"name": path.name, "psnr": p, "ssim": s, "psnr_bicubic": pb, "ssim_bicubic": sb})
    return res


def model_upscaler(model) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a raw SR model as uint8 -> uint8 (whole image, no tiling)."""
    import torch

    from ..tensors import to_pixels, to_tensor

    def run(lr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return to_pixels(model(to_tensor(lr)))

    return run


def evaluate(model, folder: str | Path | list[Path], limit: int | None = None, crop: int | None = None) -> dict:
    return eval_sr(model_upscaler(model), folder, model.cfg.scale, limit, crop=crop).summary()


# ---------------------------------------------------------------------------- prune

def calibration(data: list[str], scale: int, seed: int) -> Calibration:
    import functools

    import torch
    import torch.nn.functional as F

    from ..bench import psnr
    from ..io import list_images

    images = load_rgb(list_images(data), min_side=48 * scale)
    if not images:
        raise ValueError(f"no readable calibration image is at least {48 * scale} pixels on each side")
    pairs = SRPairs(images, scale, 48, seed=seed)
    held = SRPairs(images, scale, 48, seed=seed + 1).batch(32)

    def quality(net, b):
        with torch.no_grad():
            return psnr(net(b[0]).clamp(0, 1), b[1].clamp(0, 1), peak=1.0)

    # fine-tuning sees more pixels per step (TUNE_BATCH x TUNE_PATCH^2) and
    # learns from the HR crop as much as from the unpruned model
    big = [a for a in images if min(a.shape[:2]) >= TUNE_PATCH * scale]
    tune_pairs = SRPairs(big or images, scale, TUNE_PATCH if big else 48, seed=seed + 2)
    return Calibration(
        checkpoint_sampler(pairs, 16, seed), pairs.batch(32)[0], held,
        lambda net, b: F.l1_loss(net(b[0]), b[1]), quality,
        checkpoint_sampler(tune_pairs, TUNE_BATCH, seed), functools.partial(distill, truth_share=0.5), TUNE_LR,
        f"L1 to the unpruned model's output + L1 to the HR crop (half each), batch {TUNE_BATCH} "
        f"of {TUNE_PATCH}x{TUNE_PATCH} LR crops, Adam {TUNE_LR:g} cosine")


def timing_input():
    """A 256x256 RGB image."""
    import torch

    return torch.rand(1, 3, 256, 256)


def gmacs_per_output_mp(model, scale: int) -> float:
    from ..bench import count_macs

    x = timing_input()
    return count_macs(model.eval(), x) / (x.shape[2] * x.shape[3] * scale**2) * 1e6 / 1e9


# ---------------------------------------------------------------------------- export

EXPORT_CROP = 256  # side of the centre crop of a photo the export checks and calibrates on


def export_crop(rgb: np.ndarray, multiple: int = 1) -> np.ndarray:
    """The centre crop of a photo the export checks and calibrates on: at
    most EXPORT_CROP a side, sides a multiple of `multiple`."""
    h, w = rgb.shape[:2]
    ch, cw = min(h, EXPORT_CROP) // multiple * multiple, min(w, EXPORT_CROP) // multiple * multiple
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(rgb[y:y + ch, x:x + cw])


def export_sample(rgb: np.ndarray):
    """A photo as the upscaler sees it at run time (the tile itself, no
    downscale): `export_crop`, (1, 3, h, w)."""
    from ..tensors import to_tensor

    return to_tensor(export_crop(rgb))


NET = NetIO(
    input="x", output="y",
    doc="x: (N, 3, H, W) RGB in [0, 1], any H and W -> y: (N, 3, H*scale, W*scale) RGB in [0, 1]",
    sample=export_sample, out_range=lambda: (0.0, 1.0),
)


# ---------------------------------------------------------------------------- the command

def _check(restorer: Restorer, values: dict) -> str | None:
    scale = values.get("scale")
    if scale is not None and restorer.scale != scale:
        return f"upscales x{restorer.scale}, but x{scale} was asked for"
    tier = values.get("tier") or "fast"
    if tier != "fast" and restorer.name != tier_model(restorer.scale, tier):
        return f"is not the {tier} tier's x{restorer.scale} upscaler (--model and --tier both pick it; give one)"
    return None


TASK = Task(
    name="upscale",
    noun="an upscaler",
    help="Upscale images x2, x3 or x4 (files, folders, or - for stdin).",
    restorer=Restorer,
    suffix=lambda r: getattr(r, "label", None) or f"_x{r.scale}",
    output_suffixes=(r"_x\d+(?:\.\d+)?", r"_w\d+(?:_h\d+)?", r"_h\d+"),  # --xN, -s F, --width/--height
    options=SCALE_OPTIONS + TIER_OPTIONS + SIZE_OPTIONS,
    parse=parse_scale,
    default_model=_default_model,
    wrap=_wrap,
    check=_check,
    pairs=SRPairs,
    evaluate=evaluate,
    calibration=calibration,
    timing_input=timing_input,
    cost=gmacs_per_output_mp,
    cost_key="gmacs_per_output_mp",
    cost_unit="per output MP",
    net=NET,
    backends=("torch", "onnx"),
    precisions=("fp32", "bf16"),
)
