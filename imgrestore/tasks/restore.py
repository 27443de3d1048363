"""What denoising and deblocking share: a restorer that passes a degradation
level (a hint, or blind) to the network, training crops degraded on the fly,
and an evaluation over levels next to a baseline measured in the same run.

A *level* is the hint the network sees, in [0, 1] (denoise: sigma / 50;
deblock: 1 - quality / 100), or None (blind). Each task says how its own
setting becomes a level (`Degradation`).
"""

from __future__ import annotations

import copy
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..defaults import DEFAULT_TILE
from ..io import Picture
from ..restorer import Restorer
from .base import NetIO, Task
from .upscale import augment, export_crop


@dataclass(frozen=True)
class Degradation:
    """A task's degradation, in the task's own units (sigma, JPEG quality)."""

    unit: str  # how a setting is named in reports ("sigma", "q")
    low: float  # training range of the setting
    high: float
    level: Callable[[float], float]  # setting -> the network's hint in [0, 1]
    # (clean (H, W, 3) uint8, setting, numpy Generator) -> degraded uint8 of the same shape
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    # (degraded uint8, setting) -> the baseline's output (the degraded image itself for JPEG)
    baseline: Callable[[np.ndarray, float], np.ndarray]
    baseline_name: str
    score: Callable[[np.ndarray, np.ndarray], float]  # (output, clean) -> PSNR, dB
    score_name: str  # "RGB", "Y"
    main: float  # the setting `evaluate` reports at the top (the model card's headline)
    levels: tuple[float, ...]  # the settings `evaluate` measures


# ---------------------------------------------------------------------------- the read-out

def run_net(model, rgb: np.ndarray, level: float | None = None) -> np.ndarray:
    """A raw restoration network on a whole (H, W, 3) uint8 image (padded to
    even sides by replicating the border, as the restorer does), uint8 out."""
    import torch
    import torch.nn.functional as F

    from ..tensors import to_pixels, to_tensor

    h, w = rgb.shape[:2]
    x = to_tensor(rgb)
    x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    with torch.inference_mode():
        return to_pixels(model(x, level)[..., :h, :w])


class LevelRestorer(Restorer):
    """A restorer whose network takes a level hint: `hint` (in the task's
    units, or None for blind) for every input, or what `picture_level` reads
    from each picture. The hint passes to the network with every tile."""

    degradation: Degradation
    hint_setting: str  # the settings key (the command's option) that carries the hint

    def __init__(self, *args, hint: float | None = None):
        super().__init__(*args)
        self.set_hint(hint)

    def set_hint(self, hint: float | None) -> None:
        self.hint = hint
        self.level = None if hint is None else self.degradation.level(hint)

    def picture_level(self, pic: Picture) -> float | None:
        """The level of one picture: the hint; a task may read it from the
        picture itself."""
        return self.level

    def net_call(self, x):
        return self.model(x, self.level)

    def with_level(self, level: float | None) -> "LevelRestorer":
        """The same restorer (same network) at another level."""
        r = copy.copy(self)
        r.level = level
        return r

    def picture_bands(self, pic: Picture, tile=DEFAULT_TILE, overlap=None, on_tile=None):
        return Restorer.picture_bands(self.with_level(self.picture_level(pic)), pic, tile, overlap, on_tile)

    def describe(self) -> dict:
        return dict(super().describe(), hint=self.hint)


# ---------------------------------------------------------------------------- pairs

class LevelPairs:
    """Random training crops of clean photos, degraded at a random setting in
    the task's range: batches of (degraded (n, 3, p, p), level (n,), clean
    (n, 3, p, p)), level -1 where the hint is withheld (`hint_share` of the
    crops keep it, so one network learns blind and hinted work). A
    `gray_share` of the crops are gray photos (three equal channels),
    degraded as gray. Crops are cut at a random zoom-out in [min_zoom, 1]
    (it softens the sources' own JPEG artefacts and noise)."""

    def __init__(self, images: list[np.ndarray], degradation: Degradation, patch: int, seed: int = 0,
                 min_zoom: float = 0.5, gray_share: float = 0.15, hint_share: float = 0.5):
        self.images = images
        self.d = degradation
        self.patch = patch
        self.min_zoom = min_zoom
        self.gray_share = gray_share
        self.hint_share = hint_share
        self.rng = random.Random(seed)
        areas = np.array([a.shape[0] * a.shape[1] for a in images], dtype=np.float64)
        self.weights = (areas / areas.sum()).tolist()

    def crop(self) -> np.ndarray:
        from PIL import Image

        rng, p = self.rng, self.patch
        img = rng.choices(self.images, weights=self.weights)[0]
        h, w = img.shape[:2]
        src = min(int(round(p / rng.uniform(self.min_zoom, 1.0))), h, w)
        y, x = rng.randrange(h - src + 1), rng.randrange(w - src + 1)
        crop = img[y:y + src, x:x + src]
        if src != p:
            crop = np.asarray(Image.fromarray(crop).resize((p, p), Image.BICUBIC))
        crop, = augment(crop, rng=self.rng)
        if rng.random() < self.gray_share:
            crop = np.repeat(np.asarray(Image.fromarray(crop).convert("L"))[..., None], 3, axis=2)
        return crop

    def sample(self) -> tuple[np.ndarray, float, np.ndarray]:
        rng = self.rng
        clean = self.crop()
        setting = rng.uniform(self.d.low, self.d.high)
        gen = np.random.default_rng(rng.getrandbits(63))
        degraded = self.d.apply(clean, setting, gen)
        level = self.d.level(setting) if rng.random() < self.hint_share else -1.0
        return degraded, level, clean

    def batch(self, n: int):
        import torch

        from ..tensors import to_tensor

        xs, levels, ys = zip(*(self.sample() for _ in range(n)))
        return to_tensor(np.stack(xs)), torch.tensor(levels, dtype=torch.float32), to_tensor(np.stack(ys))


def l1_loss(model, b):
    import torch.nn.functional as F

    x, level, y = b
    return F.l1_loss(model(x, level), y)


def l2_loss(model, b):
    """Mean squared error: what PSNR measures. Deblocking trains with it: its
    corrections are small and mostly zero, and L1's constant pull towards
    the median (zero) killed the fusion layer's ReLUs (every output zero,
    measured in three runs)."""
    import torch.nn.functional as F

    x, level, y = b
    return F.mse_loss(model(x, level), y)


Y_LOSS_RGB = 0.25  # l2y: the weight of the colour term next to luminance


def l2y_loss(model, b):
    """Mean squared error on BT.601 luminance, which is what the deblocking
    benchmark scores (and what the eye sees most), plus Y_LOSS_RGB x the
    error on RGB, so that colour is still restored."""
    import torch.nn.functional as F

    from ..color import rgb_to_y

    x, level, y = b
    out = model(x, level)
    return F.mse_loss(rgb_to_y(out), rgb_to_y(y)) + Y_LOSS_RGB * F.mse_loss(out, y)


LOSSES = {"l1": l1_loss, "l2": l2_loss, "l2y": l2y_loss}


# ---------------------------------------------------------------------------- evaluation

def seed_of(name: str, setting: float) -> int:
    """The fixed seed of one image's degradation (the same in every run)."""
    return zlib.crc32(f"{name}:{setting:g}".encode())


def load_clean(path: Path, gray: bool = False, crop: int | None = None) -> np.ndarray:
    """A benchmark photo as (H, W, 3) uint8 (its centre `crop` x `crop` at
    most); gray: its luminance on three equal channels."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if gray else "RGB")
        a = np.asarray(im)
    if crop:
        y, x = max(0, (a.shape[0] - crop) // 2), max(0, (a.shape[1] - crop) // 2)
        a = a[y:y + crop, x:x + crop]
    return np.repeat(a[..., None], 3, axis=2) if gray else a.copy()


_BASELINES: dict[tuple, float] = {}  # (baseline, file, size, setting, gray) -> its score, once per process


@dataclass
class LevelResult:
    folder: str
    unit: str
    baseline_name: str
    images: dict[float, list[dict]] = field(default_factory=dict)

    def summary(self) -> dict:
        out = {}
        for setting, rows in self.images.items():
            m = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0] if k != "name"}
            m["gain_db"] = round(m["psnr"] - m["psnr_baseline"], 4)
            out[f"{self.unit}{setting:g}"] = m
        return out


def eval_levels(restore: Callable[[np.ndarray, float], np.ndarray], d: Degradation, files: list[Path],
                settings: tuple[float, ...], gray: bool = False, folder: str = "",
                crop: int | None = None) -> LevelResult:
    """`restore(degraded uint8, setting) -> uint8` over photos degraded at
    each setting (fixed seeds), scored against the clean photo next to the
    task's baseline from the same run."""
    res = LevelResult(folder, d.unit, d.baseline_name)
    for s in settings:
        rows = []
        for path in files:
            clean = load_clean(path, gray, crop)
            degraded = d.apply(clean, s, np.random.default_rng(seed_of(path.name, s)))
            key = (d.baseline_name, str(path), clean.shape, s, gray)
            if key not in _BASELINES:
                _BASELINES[key] = d.score(d.baseline(degraded, s), clean)
            rows.append({"name": path.name, "psnr": d.score(restore(degraded, s), clean),
                         "psnr_baseline": _BASELINES[key], "psnr_input": d.score(degraded, clean)})
        res.images[s] = rows
    return res


def files_of(folder) -> list[Path]:
    from ..io import list_images

    return list(folder) if isinstance(folder, list) else list_images([folder])


def evaluate_with(d: Degradation) -> Callable[..., dict]:
    """The task's `evaluate`: (raw model, folder or files, limit) -> the
    blind network at the headline setting (psnr, psnr_baseline, gain_db,
    images) and at every setting of `d.levels`."""
    def evaluate(model, folder, limit: int | None = None, settings: tuple[float, ...] | None = None,
                 crop: int | None = None) -> dict:
        files = files_of(folder)[:limit]
        settings = settings or d.levels
        res = eval_levels(lambda img, s: run_net(model, img), d, files, settings,
                          folder=str(folder) if not isinstance(folder, list) else "", crop=crop)
        by = res.summary()
        head = by.get(f"{d.unit}{d.main:g}") or next(iter(by.values()))
        return dict(head, images=len(files), setting=f"{d.unit}{d.main:g}" if f"{d.unit}{d.main:g}" in by
                    else next(iter(by)), by_setting=by)
    return evaluate


def timing_input():
    """A 256x256 RGB image."""
    import torch

    return torch.rand(1, 3, 256, 256)


def gmacs_per_mp(model, scale: int) -> float:
    from ..bench import count_macs

    x = timing_input()
    return count_macs(model.eval(), x) / (x.shape[2] * x.shape[3]) * 1e6 / 1e9


def export_sample_with(d: Degradation) -> Callable[[np.ndarray], Any]:
    """(H, W, 3) uint8 photo -> what the network sees at run time: its
    `export_crop` (even sides) degraded at the task's headline setting
    (fixed seed), (1, 3, h, w)."""
    def sample(rgb: np.ndarray):
        from ..tensors import to_tensor

        return to_tensor(d.apply(export_crop(rgb, multiple=2), d.main, np.random.default_rng(0)))
    return sample


def level_task(d: Degradation, **fields) -> Task:
    """The `Task` record of a level task (denoise, deblock): `fields` are
    its own (name, restorer, options...); pairs, evaluation and cost are
    the ones they share, made for `d`."""
    def pairs(images, patch: int, seed: int = 0, **kw) -> LevelPairs:
        return LevelPairs(images, d, patch, seed=seed, **kw)

    net = NetIO(input="x", output="y", level="level", levels=(-1.0, d.level(d.main)),
                doc=f"x: (N, 3, H, W) RGB in [0, 1], H and W even; level: (N,) the {d.unit} hint as the "
                    f"network's level in [0, 1] ({d.unit} {d.low:g}..{d.high:g}), negative for blind -> y: "
                    "(N, 3, H, W) RGB in [0, 1]",
                sample=export_sample_with(d), out_range=lambda: (0.0, 1.0))
    return Task(pairs=pairs, evaluate=evaluate_with(d), timing_input=timing_input, cost=gmacs_per_mp,
                precisions=("fp32", "bf16"), net=net, backends=("torch", "onnx"),
                cost_key="gmacs_per_mp", cost_unit="per MP", **fields)
