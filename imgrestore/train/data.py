"""Training data: HR images held in memory, random crops, degradations.

The degradation of each task lives here, next to the others, so that a new
task is a new `make_pair` rather than a new pipeline.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(dirs: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file():
            files.append(d)
            continue
        files += sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, dirs))}")
    return files


def checkpoint_sampler(source, n: int, seed: int, every: int = 500):
    """step -> a batch of `n` from `source` (anything with `.rng` and
    `.batch(n)`), reseeded at every checkpoint (`every` steps, the training
    loop's `save_every`) so that a resumed run sees the same data."""
    def sample(step: int):
        if step % every == 0:
            source.rng.seed(seed * 1_000_003 + step)
        return source.batch(n)
    return sample


def load_rgb(files: list[Path], min_side: int) -> list[np.ndarray]:
    """Decode every file to an (H, W, 3) uint8 array; skip ones too small."""
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            if min(im.size) >= min_side:
                out.append(np.asarray(im).copy())
    return out


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """Pillow bicubic downscale: the same LR the benchmark makes."""
    h, w = hr.shape[:2]
    im = Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC)
    return np.asarray(im)


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

    Each HR crop is first taken at a random zoom-out in [min_zoom, 1] (README
    of the data: it weakens the sources' JPEG artefacts and widens the range
    of frequencies seen), then LR is its Pillow bicubic downscale.
    """

    def __init__(self, images: list[np.ndarray], scale: int, patch: int, min_zoom: float = 0.5,
                 seed: int = 0):
        self.images = images
        self.scale = scale
        self.patch = patch  # LR patch side
        self.min_zoom = min_zoom
        self.rng = random.Random(seed)
        # sample images in proportion to their area (large photos hold more crops)
        areas = np.array([a.shape[0] * a.shape[1] for a in images], dtype=np.float64)
        self.weights = (areas / areas.sum()).tolist()

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
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
        return lr, crop

    def batch(self, n: int):
        import torch

        lrs, hrs = zip(*(self.sample() for _ in range(n)))
        lr = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).float().div_(255)
        hr = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).float().div_(255)
        return lr, hr
