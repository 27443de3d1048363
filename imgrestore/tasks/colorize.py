"""Colorization: what makes it a task.

The read-out: the network sees the photo's luminance at a working resolution
(`render_dims`) and predicts a*b* at half of it; the a*b* is upsampled to the
photo's full size and joined to its own full-resolution L, so every detail of
the input is kept and the network's cost does not depend on the photo's size.
The whole photo is one input (its global features colour it), so the command
does not tile.

Pairs: the L of a colour photo in, its a*b* (at half resolution) out, plus
the ImageNet class (wnid in the file name) for the classification head.
Evaluation: the model sees only the luminance of each original colour photo;
PSNR (RGB) and colourfulness of its output against the original, next to the
gray image (same L, no chroma) from the same run.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from ..defaults import DEFAULT_RENDER
from ..io import Picture
from ..restorer import Restorer, describe_output
from .base import Calibration, NetIO, Task, checkpoint_sampler, distill

RENDER_SIZE_OPTION = click.option(
    "--render-size", type=click.IntRange(32, 2048), default=DEFAULT_RENDER, show_default=True,
    help="Working resolution (long side) of the network: detail of the colours vs speed. "
    "The output keeps the input's full resolution and luminance.")
SATURATION_OPTION = click.option(
    "--saturation", type=click.FloatRange(0.0, 4.0), default=1.0, show_default=True,
    help="Scale the predicted colours: below 1 more muted (and, measured, closer to the originals "
    "on average), above 1 bolder; 0 gives the gray image.")
REFERENCE_OPTION = click.option(
    "--reference", type=click.Path(exists=True, dir_okay=False),
    help="Colour in the style of this photo (its global features are used).")

WNID = re.compile(r"(n\d{8})")
REFERENCE_RENDER = 512  # working size (long side) of a reference photo's global features
TIMING_SIDE = 256  # prune times, and `models` counts the cost, at this working size


# ---------------------------------------------------------------------------- the read-out

def bilinear_matrix(n_out: int, n_in: int):
    """(n_out, n_in) weights of 1-D bilinear resampling with the semantics of
    F.interpolate(mode="bilinear", align_corners=False): applying it to rows
    and columns resamples exactly like interpolate, band by band."""
    import torch

    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = (src - i0).clamp(0, 1)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), i0] += 1 - frac
    m[torch.arange(n_out), i1] += frac
    return m.float()


def render_dims(h: int, w: int, render: int) -> tuple[int, int]:
    """The working size: long side `render`, aspect kept, sides multiples of 8."""
    s = render / max(h, w)
    return max(8, round(h * s / 8) * 8), max(8, round(w * s / 8) * 8)


def pixels_to_l(px: np.ndarray):
    """(H, W, 1|3) uint8/uint16 -> (1, 1, H, W) Lab L, computed in row bands."""
    import torch

    from ..color import gray_to_l, luminance
    from ..tensors import to_tensor

    h, w, c = px.shape
    out = torch.empty(1, 1, h, w)
    for y in range(0, h, 512):
        band = to_tensor(px[y:y + 512])
        out[:, :, y:y + 512] = gray_to_l(band) if c == 1 else luminance(band)
    return out


def working_l(l, render: int):
    """(1, 1, H, W) L -> the same at the working size of `render`."""
    import torch.nn.functional as F

    rh, rw = render_dims(l.shape[2], l.shape[3], render)
    return F.interpolate(l, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)


def colorize_pixels(model, px: np.ndarray, render_size: int = DEFAULT_RENDER, reference_l=None,
                    band_rows: int = 256, saturation: float = 1.0) -> np.ndarray:
    """(H, W, 1|3) uint8/uint16 -> (H, W, 3) same dtype: the photo's own
    full-resolution L joined to a*b* predicted at the working resolution and
    upsampled. `saturation` scales the predicted a*b* (0: gray; the hue is
    kept); `reference_l` (a working-size L) lends its global features."""
    import torch

    from ..color import lab_to_rgb
    from ..tensors import to_pixels

    h, w = px.shape[:2]
    l_full = pixels_to_l(px)  # (1, 1, H, W)
    with torch.inference_mode():
        ab = model(working_l(l_full, render_size), global_from=reference_l)[0]  # (2, rh/2, rw/2)
    if saturation != 1.0:
        ab = ab * saturation
    ry, rx = bilinear_matrix(h, ab.shape[1]), bilinear_matrix(w, ab.shape[2])
    abx = torch.einsum("chw,Xw->chX", ab, rx)  # columns first: (2, rh/2, W)
    out = np.empty((h, w, 3), dtype=px.dtype)
    for y in range(0, h, band_rows):
        y1 = min(h, y + band_rows)
        ab_band = torch.einsum("Yh,chX->cYX", ry[y:y1], abx)  # (2, rows, W)
        lab = torch.cat([l_full[0, :, y:y1], ab_band])[None]
        out[y:y1] = to_pixels(lab_to_rgb(lab), px.dtype)
    return out


COLOUR_INPUT_NOTE = ("colour photo: its colours were replaced by predicted ones (colorize keeps only the "
                     "luminance; use it on black-and-white or faded photos)")


def picture_is_gray(pic: Picture) -> bool:
    """One channel, or three that (nearly) agree: a black-and-white photo
    stored as RGB."""
    if pic.gray:
        return True
    px = pic.pixels[::4, ::4]
    if px.dtype == np.uint16:
        px = px // 257
    return is_gray(px)


def as_picture(image) -> Picture | None:
    """A reference photo as the API takes it: a Picture, a path, a PIL image
    or an (H, W[, C]) uint8/uint16 array (or None)."""
    import os

    from .. import io

    if image is None or isinstance(image, Picture):
        return image
    if isinstance(image, (str, os.PathLike)):
        return io.read(io.Job(Path(image), Path(Path(image).name)))
    from PIL import Image

    if isinstance(image, Image.Image):
        px, alpha = io.pil_arrays(image)
        return Picture(px, alpha)
    a = np.asarray(image)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3):
        raise TypeError(f"reference: expected a path, a PIL image or a uint8/uint16 array, got {type(image)}")
    a = a[..., None] if a.ndim == 2 else a[..., :3]
    return Picture(np.ascontiguousarray(a), None)


class ColorizeRestorer(Restorer):
    """Colorization: scale 1; color input is reduced to its luminance and
    recolorized; alpha, EXIF and ICC are kept. `render_size` is the working
    resolution, `saturation` scales the predicted a*b*, and `reference` (a
    Picture) lends its global features (colours in the style of another
    photo)."""

    def __init__(self, *args, render_size: int = DEFAULT_RENDER, saturation: float = 1.0,
                 reference=None):
        super().__init__(*args)
        if not 32 <= int(render_size) <= 2048:
            raise ValueError(f"render_size must be in 32..2048, got {render_size}")
        if not 0.0 <= float(saturation) <= 4.0:
            raise ValueError(f"saturation must be in 0..4, got {saturation}")
        self.render_size = int(render_size)
        self.saturation = float(saturation)
        reference = as_picture(reference)
        self.reference_l = None if reference is None else working_l(pixels_to_l(reference.pixels),
                                                                     REFERENCE_RENDER)
        if reference is not None and picture_is_gray(reference):
            self.notes.append("the reference is a gray photo: that works as well as a colour one (a "
                              "reference steers the colours by what it shows, its luminance, never by "
                              "its own colours)")

    def input_notes(self, pic: Picture) -> list[str]:
        if picture_is_gray(pic):
            return []
        return [COLOUR_INPUT_NOTE]

    def restore_picture(self, pic: Picture, tile=None, overlap=None, on_tile=None) -> Picture:
        out = colorize_pixels(self.model, pic.pixels, self.render_size, self.reference_l,
                              saturation=self.saturation)
        if on_tile:
            on_tile(1, 1)
        return Picture(out, pic.alpha, pic.exif, pic.icc, pic.format, list(pic.notes))

    def picture_bands(self, pic, tile=None, overlap=None, on_tile=None):
        res = self.restore_picture(pic, on_tile=on_tile)
        desc = describe_output(res, res.pixels.shape, res.pixels.dtype, res.alpha is not None)
        return desc, iter([(0, res.pixels, res.alpha)])


# ---------------------------------------------------------------------------- pairs

def is_gray(a: np.ndarray) -> bool:
    small = a[::4, ::4].astype(np.int16)
    return int(np.abs(small - small[..., :1]).max()) <= 6


def load_color_images(files: list[Path], short_side: int) -> tuple[list[np.ndarray], list[str | None]]:
    """Decode, skip gray ones, resize so the short side is `short_side`;
    returns the images and the ImageNet wnid in each file's name (or None)."""
    from PIL import Image

    from ..io import open_rgb

    images, wnids = [], []
    for f in files:
        im = open_rgb(f)
        if im is None:  # unreadable: skipped
            continue
        s = short_side / min(im.size)
        im = im.resize((max(short_side, round(im.width * s)), max(short_side, round(im.height * s))),
                       Image.BICUBIC)
        a = np.asarray(im).copy()
        if is_gray(a):
            continue
        m = WNID.search(f.name)
        images.append(a)
        wnids.append(m.group(1) if m else None)
    return images, wnids


def zoom_crop(a: np.ndarray, rng: random.Random, crop: int, min_zoom: float) -> np.ndarray:
    """A random crop x crop square of the photo `a`: cut at a random zoom-out
    in [min_zoom, 1] (a square of side crop / zoom, Pillow-resized to
    `crop`; exactly `crop` when min_zoom is 1) at a random place, flipped
    left-right half the time (only that way: colours have an up and a down)."""
    from PIL import Image

    h, w = a.shape[:2]
    side = crop if min_zoom >= 1 else min(h, w, round(crop / rng.uniform(min_zoom, 1.0)))
    y, x = rng.randrange(h - side + 1), rng.randrange(w - side + 1)
    out = a[y:y + side, x:x + side]
    if side != crop:
        out = np.asarray(Image.fromarray(out).resize((crop, crop), Image.BICUBIC))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class ColorBatches:
    """Random (L, a*b* at half resolution, class) crops.

    With `min_zoom` < 1 every crop is cut at a random zoom-out in
    [min_zoom, 1] (a square of side crop / zoom, Pillow-resized to `crop`),
    so the network sees objects at the range of scales the working
    resolution gives them, and a few thousand photos are not memorized crop
    for crop (images must then be loaded at short side crop / min_zoom or
    more)."""

    def __init__(self, images, labels, crop: int, seed: int = 0, min_zoom: float = 1.0):
        self.images, self.labels, self.crop, self.min_zoom = images, labels, crop, min_zoom
        self.rng = random.Random(seed)

    def batch(self, n: int):
        import torch
        import torch.nn.functional as F

        from ..color import rgb_to_lab
        from ..tensors import to_tensor

        crops, labels = [], []
        for _ in range(n):
            i = self.rng.randrange(len(self.images))
            crops.append(zoom_crop(self.images[i], self.rng, self.crop, self.min_zoom))
            labels.append(self.labels[i])
        lab = rgb_to_lab(to_tensor(np.stack(crops)))
        ab_half = F.avg_pool2d(lab[:, 1:], 2)  # the network predicts at half resolution
        return lab[:, :1], ab_half, torch.tensor(labels)


class FeatureCache:
    """Training crops with a frozen encoder's maps computed once.

    `count` crops are cut from `source` (a `ColorBatches`: random zoom-out,
    position and flip), encoded once by `model.encode`, and kept as float16
    memory maps in `folder` (rebuilt when its `key` changes): a training
    step then costs only the decoder. A new seed cuts new crops, so each
    warm-started session sees fresh ones."""

    def __init__(self, folder: Path, model, source: ColorBatches, count: int, key: dict, log=print,
                 chunk: int = 32):
        import json

        import torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.count = count
        l, ab, _ = source.batch(1)
        with torch.no_grad():
            feats = model.encode(l)
        shapes = dict(l=tuple(l.shape[1:]), ab=tuple(ab.shape[1:]), **{f"f{i}": tuple(f.shape[1:])
                                                                         for i, f in enumerate(feats)})
        key = dict(key, count=count, shapes={k: list(v) for k, v in shapes.items()})
        done = folder / "key.json"
        fresh = not (done.is_file() and json.loads(done.read_text()) == key)
        mode = "w+" if fresh else "r"
        self.arrays = {k: np.lib.format.open_memmap(folder / f"{k}.npy", mode=mode, dtype=np.float16,
                                                    shape=(count, *shp)) for k, shp in shapes.items()}
        self.labels = np.lib.format.open_memmap(folder / "labels.npy", mode=mode, dtype=np.int64, shape=(count,))
        if fresh:
            done.unlink(missing_ok=True)
            t0 = time.time()
            for i in range(0, count, chunk):
                n = min(chunk, count - i)
                l, ab, y = source.batch(n)
                with torch.no_grad():
                    feats = model.encode(l)
                for k, v in zip(shapes, [l, ab, *feats]):  # the arrays' names, in the same order
                    self.arrays[k][i:i + n] = v.numpy().astype(np.float16)
                self.labels[i:i + n] = y.numpy()
                if (i // chunk) % 100 == 0:
                    log(f"encoding training crops: {i + n}/{count} ({time.time() - t0:.0f} s)")
            for a in [*self.arrays.values(), self.labels]:
                a.flush()
            done.write_text(json.dumps(key))
            log(f"encoded {count} crops into {folder} in {time.time() - t0:.0f} s")
        else:
            log(f"reusing the {count} encoded crops in {folder}")
        self.nfeats = len(feats)
        self.rng = random.Random(0)

    def batch(self, n: int):
        import torch

        idx = sorted(self.rng.randrange(self.count) for _ in range(n))
        get = lambda k: torch.from_numpy(self.arrays[k][idx].astype(np.float32))  # noqa: E731
        feats = [get(f"f{j}") for j in range(self.nfeats)]
        return get("l"), get("ab"), torch.from_numpy(self.labels[idx]), feats


# ---------------------------------------------------------------------------- evaluation

@dataclass
class ColorResult:
    folder: str
    images: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        m = lambda k: float(np.mean([r[k] for r in self.images]))  # noqa: E731
        out = {k: round(m(k), 4) for k in ("psnr", "psnr_gray", "colorfulness", "colorfulness_original",
                                             "auc", "auc_gray")}
        out["gain_db"] = round(out["psnr"] - out["psnr_gray"], 4)
        out["colorfulness_ratio"] = round(out["colorfulness"] / max(1e-6, out["colorfulness_original"]), 4)
        out["seconds_per_mp"] = round(sum(r["seconds"] for r in self.images)
                                      / sum(r["mp"] for r in self.images), 4)
        out["images"] = len(self.images)
        return out


def eval_colorize(model, folder: str | Path | list[Path], render_size: int | None = None,
                  limit: int | None = None, saturation: float = 1.0) -> ColorResult:
    """PSNR (RGB), colourfulness and a*b* AuC of the colorized luminance of
    each colour photo against the original, next to the gray image from the
    same run."""
    import torch
    from PIL import Image

    from ..bench import ab_auc, psnr
    from ..color import colorfulness, lab_to_rgb
    from ..io import list_images
    from ..tensors import to_pixels, to_tensor

    if isinstance(folder, list):
        res, files = ColorResult(f"{len(folder)} files"), folder
    else:
        res, files = ColorResult(str(folder)), list_images([folder])
    for path in files:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        if is_gray(rgb):
            continue  # nothing to compare colours against
        t = time.perf_counter()
        out = colorize_pixels(model, rgb, render_size or DEFAULT_RENDER, saturation=saturation)
        sec = time.perf_counter() - t
        # the gray baseline: the same L with a = b = 0
        l = pixels_to_l(rgb)
        gray = to_pixels(lab_to_rgb(torch.cat([l, torch.zeros(1, 2, *l.shape[2:])], dim=1)))
        res.images.append({
            "name": path.name, "psnr": psnr(out, rgb), "psnr_gray": psnr(gray, rgb),
            "colorfulness": float(colorfulness(to_tensor(out))[0]),
            "colorfulness_original": float(colorfulness(to_tensor(rgb))[0]),
            "auc": ab_auc(out, rgb), "auc_gray": ab_auc(gray, rgb),
            "seconds": sec, "mp": rgb.shape[0] * rgb.shape[1] / 1e6,
        })
        if limit and len(res.images) >= limit:
            break
    return res


def evaluate(model, folder: str | Path | list[Path], limit: int | None = None) -> dict:
    return eval_colorize(model, folder, limit=limit).summary()


# ---------------------------------------------------------------------------- prune

def calibration(data: list[str], scale: int, seed: int, crop: int = 128) -> Calibration:
    import torch
    import torch.nn.functional as F

    from ..bench import psnr
    from ..color import lab_to_rgb
    from ..io import list_images

    images, _ = load_color_images(list_images(data), short_side=crop + crop // 8)
    if len(images) < 2:
        raise ValueError("colorizer pruning needs colour calibration images (--data DIR)")
    labels = [-100] * len(images)
    batches = ColorBatches(images, labels, crop, seed)
    held = ColorBatches(images, labels, crop, seed + 1).batch(24)

    def loss(net, b):
        return F.mse_loss(net(b[0]), b[1]) / 100.0

    def to_rgb(l, ab_half):
        ab = F.interpolate(ab_half, size=l.shape[2:], mode="bilinear", align_corners=False)
        return lab_to_rgb(torch.cat([l, ab], dim=1))

    def quality(net, b):
        with torch.no_grad():
            return psnr(to_rgb(b[0], net(b[0])).clamp(0, 1), to_rgb(b[0], b[1]).clamp(0, 1), peak=1.0)

    # 48 crops for the compensation: the refit of a 1x1 layer on 16 overfits
    # them (weights/MODEL_CARD.md, "Pruning")
    return Calibration(checkpoint_sampler(batches, 12, seed), batches.batch(48)[0], held, loss, quality,
                       checkpoint_sampler(batches, 12, seed + 3), distill, 5e-4,
                       "L1 to the unpruned model's a*b*, batch 12 of 128x128 crops, Adam 5e-4 cosine")


def timing_input():
    """L in [0, 100] at a working size of TIMING_SIDE."""
    import torch

    return torch.rand(1, 1, TIMING_SIDE, TIMING_SIDE) * 100


def gmacs_per_image(model, scale: int) -> float:
    """Fixed cost per image: the network runs at the working size."""
    from ..bench import count_macs

    return count_macs(model.eval(), timing_input()) / 1e9


# ---------------------------------------------------------------------------- export

def _ab_range() -> tuple[float, float]:
    from ..models.colorize import AB_RANGE

    return -AB_RANGE, AB_RANGE


def export_sample(rgb: np.ndarray):
    """A photo as the colorizer's network sees it: its L at the default
    working size, (1, 1, h, w)."""
    return working_l(pixels_to_l(rgb), DEFAULT_RENDER)


# the network alone: the caller joins the upsampled a*b* to the photo's own
# L (colorize_pixels); a reference photo's global features are not an input
NET = NetIO(
    input="l", output="ab",
    doc="l: (N, 1, H, W) Lab L in [0, 100] at the working size (H and W multiples of 8; long side "
        f"{DEFAULT_RENDER} by default) -> ab: (N, 2, H/2, W/2) a*b* (within out_range)",
    sample=export_sample, out_range=_ab_range,
)


# ---------------------------------------------------------------------------- the command

def settings(values: dict, max_pixels: int) -> dict:
    """The colorize command's options -> ColorizeRestorer's arguments (the
    reference photo read here, a bad one a usage error)."""
    from .. import io
    from ..errors import ImgRestoreError

    reference = values.get("reference")
    pic = None
    if reference:
        try:
            pic = io.read(io.Job(Path(reference), Path(reference).name), max_pixels)
        except ImgRestoreError as e:
            raise click.BadParameter(f"{reference}: {e}", param_hint="--reference") from None
    return dict(render_size=values["render_size"], saturation=values["saturation"], reference=pic)


TASK = Task(
    name="colorize",
    noun="a colorizer",
    help="Colorize black-and-white or faded photos (colour input is recolorized from its luminance).",
    restorer=ColorizeRestorer,
    suffix=lambda r: "_color",
    output_suffixes=("_color",),
    options=(REFERENCE_OPTION, RENDER_SIZE_OPTION, SATURATION_OPTION),
    default_model=lambda values: "colorize",
    settings=settings,
    tiled=False,
    pairs=ColorBatches,
    evaluate=evaluate,
    calibration=calibration,
    timing_input=timing_input,
    cost=gmacs_per_image,
    cost_key=f"gmacs_per_image_at_{TIMING_SIDE}",
    cost_unit=f"per image (render {TIMING_SIDE})",
    net=NET,
)
