"""Quality and speed measurement, always next to a reference measured in the
same run (DESIGN.md, "How quality and speed are measured").

Super-resolution: HR cropped to a multiple of the scale, LR made with Pillow's
bicubic resize, PSNR/SSIM on BT.601 Y of the 8-bit outputs with `scale` pixels
of border cropped; bicubic upscaling of the same LR is the baseline.
"""

from __future__ import annotations

import math
import time
from io import BytesIO
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .color import rgb_to_y
from .train.data import list_images


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float().div_(255)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    return t[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


def _y255(a: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float64 BT.601 Y on 0..255."""
    return rgb_to_y(to_tensor(a))[0, 0].double().numpy() * 255.0


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) 0..255 images, Gaussian window 11, sigma 1.5."""
    x = torch.from_numpy(a)[None, None].double()
    y = torch.from_numpy(b)[None, None].double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx**2
    syy = F.conv2d(y * y, w) - my**2
    sxy = F.conv2d(x * y, w) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(m.mean())


def sr_pair(path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8 arrays as the benchmark defines them."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        hr = im.crop((0, 0, w - w % scale, h - h % scale))
        lr = hr.resize((hr.width // scale, hr.height // scale), Image.BICUBIC)
        return np.asarray(lr), np.asarray(hr)


def sr_scores(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """PSNR and SSIM on Y with `scale` pixels of border cropped."""
    ys, yh = _y255(sr), _y255(hr)
    c = scale
    ys, yh = ys[c:-c, c:-c], yh[c:-c, c:-c]
    return psnr(ys, yh), ssim(ys, yh)


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.BICUBIC))


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


def eval_sr(upscale: Callable[[np.ndarray], np.ndarray], folder: str | Path, scale: int) -> SRResult:
    """Run `upscale` (uint8 LR -> uint8 SR) over a folder of HR images."""
    res = SRResult(str(folder), scale)
    for path in list_images([folder]):
        lr, hr = sr_pair(path, scale)
        sr = upscale(lr)
        p, s = sr_scores(sr, hr, scale)
        pb, sb = sr_scores(bicubic_up(lr, scale), hr, scale)
        res.images.append({"name": path.name, "psnr": p, "ssim": s, "psnr_bicubic": pb, "ssim_bicubic": sb})
    return res


def model_upscaler(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a raw SR model as uint8 -> uint8 (whole image, no tiling)."""

    def run(lr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return to_uint8(model(to_tensor(lr)))

    return run


def time_call(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best-of-`repeat` seconds for `fn()` (after `warmup` calls)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _speed_rows(restorer, size: int, folders: list[str]) -> list[dict]:
    """Speed of the model next to bicubic (Pillow) and an FSRCNN-shaped
    network (random weights: only its cost matters), same inputs, same run."""
    from .models.sr import FSRCNN

    s = restorer.scale
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if folders:  # a real photo crop is a fairer input than noise for the encoder-free timing
        files = list_images([folders[0]])
        with Image.open(files[0]) as im:
            im = im.convert("RGB").resize((size, size), Image.BICUBIC)
            big = np.asarray(im).copy()
    out_mp = (size * s) ** 2 / 1e6
    rows = []

    def add(test, method, seconds, mp):
        rows.append({"test": test, "method": method, "seconds": seconds, "mp_per_s": mp / seconds})

    from .defaults import DEFAULT_TILE

    add(f"{size}x{size} -> x{s}", f"imgrestore {restorer.name} (uint8 in, uint8 out, tile {DEFAULT_TILE})",
        time_call(lambda: restorer.run_pixels(big)), out_mp)
    add(f"{size}x{size} -> x{s}", f"imgrestore {restorer.name} (uint8 in, uint8 out, untiled)",
        time_call(lambda: restorer.run_pixels(big, tile=None)), out_mp)
    add(f"{size}x{size} -> x{s}", "bicubic (Pillow)", time_call(lambda: bicubic_up(big, s)), out_mp)
    # the reference gets its best layout too: channels_last, whole or tiled
    fsr = FSRCNN(s).eval().to(memory_format=torch.channels_last)
    best = None
    for t in (size, 256, 128):
        if t > size:
            continue
        tiles = [torch.rand(1, 1, t, t).to(memory_format=torch.channels_last) for _ in range((size // t) ** 2)]

        def run_fsrcnn(tiles=tiles):
            with torch.inference_mode():
                for y in tiles:
                    fsr(y)

        sec = time_call(run_fsrcnn)
        if best is None or sec < best[0]:
            best = (sec, t)
    add(f"{size}x{size} -> x{s}", f"FSRCNN-shaped (Y only, d56 s12 m4; network only, best tile {best[1]})",
        best[0], out_mp)
    for folder in folders:
        lrs = [sr_pair(p, s)[0] for p in list_images([folder])]
        mp = sum(a.shape[0] * a.shape[1] * s * s for a in lrs) / 1e6
        name = f"folder {Path(folder).name} ({len(lrs)} images)"
        add(name, f"imgrestore {restorer.name}",
            time_call(lambda: [restorer.run_pixels(a) for a in lrs], repeat=2), mp)
        add(name, "bicubic (Pillow)", time_call(lambda: [bicubic_up(a, s) for a in lrs], repeat=2), mp)
    return rows


def bench_upscale(restorer, folders: list[str], threads: int, size: int = 512, speed: bool = True) -> dict:
    from .registry import count_params

    quality = {}
    for folder in folders:
        res = eval_sr(lambda lr: restorer.run_pixels(lr), folder, restorer.scale)
        quality[Path(folder).name] = res.summary()
    return {
        "model": restorer.name, "scale": restorer.scale, "params": count_params(restorer.model),
        "threads": threads, "torch": torch.__version__, "quality": quality,
        "speed": _speed_rows(restorer, size, folders) if speed else [],
    }


# ---------------------------------------------------------------------------- colorize

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


AUC_MAX = 150  # a*b* distance thresholds 0..150 (Zhang et al. 2016)


def ab_auc(out: np.ndarray, truth: np.ndarray) -> float:
    """Zhang et al.'s hue accuracy: the share of pixels whose a*b* is within t
    of the truth's, averaged over t = 0, 1, ..., 150 (1 = every pixel exact).
    Since sum_t [d <= t] = max(0, 151 - ceil(d)), one pass suffices."""
    from .color import rgb_to_lab

    d = (rgb_to_lab(to_tensor(out))[:, 1:] - rgb_to_lab(to_tensor(truth))[:, 1:]).norm(dim=1)
    return float((AUC_MAX + 1 - torch.ceil(d)).clamp(min=0).mean() / (AUC_MAX + 1))


def eval_colorize(model, folder: str | Path | list[Path], render_size: int | None = None,
                  limit: int | None = None, saturation: float = 1.0) -> ColorResult:
    """The model sees only the luminance of each original colour image; PSNR
    (RGB) and colourfulness of its output against the original, next to the
    gray image (same L, no chroma) from the same run."""
    from .color import colorfulness, lab_to_rgb
    from .defaults import DEFAULT_RENDER
    from .restorer import colorize_pixels, pixels_to_l
    from .train.colorize import is_gray

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
        gray = to_uint8(lab_to_rgb(torch.cat([l, torch.zeros(1, 2, *l.shape[2:])], dim=1)))
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


def contact_sheet(restorer, files: list[Path], out: Path, rows: int = 8, height: int = 192) -> int:
    """A picture a person can judge: one row per colour photo, original |
    gray | colorized, each `height` pixels high; the photos are taken evenly
    from `files`. Returns the rows written."""
    from .io import write_atomic

    picks = files if len(files) <= rows else [files[round(i * (len(files) - 1) / (rows - 1))]
                                              for i in range(rows)]
    strips = []
    for path in picks:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im = im.resize((max(1, round(im.width * height / im.height)), height), Image.BICUBIC)
        rgb = np.asarray(im)
        gray = np.asarray(im.convert("L").convert("RGB"))
        strips.append(np.concatenate([rgb, gray, restorer(gray)], axis=1))
    width = max(s.shape[1] for s in strips)
    sheet = np.full((height * len(strips) + 4 * (len(strips) - 1), width, 3), 255, np.uint8)
    for i, s in enumerate(strips):
        sheet[i * (height + 4):i * (height + 4) + height, :s.shape[1]] = s
    buf = BytesIO()
    Image.fromarray(sheet).save(buf, "PNG")
    write_atomic(buf.getvalue(), Path(out), overwrite=True)
    return len(strips)


def bench_colorize(restorer, folders: list[str], threads: int, speed: bool = True) -> dict:
    from .registry import count_params
    from .restorer import colorize_pixels

    quality = {Path(f).name: eval_colorize(restorer.model, f, restorer.render_size,
                                           saturation=restorer.saturation).summary() for f in folders}
    rows = []
    if speed:
        rng = np.random.default_rng(0)
        for side in (1000, 4900):  # 1 MP and 24 MP
            img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            if folders:
                with Image.open(list_images([folders[0]])[0]) as im:
                    img = np.asarray(im.convert("RGB").resize((side, side), Image.BICUBIC))
            sec = time_call(lambda: colorize_pixels(restorer.model, img, restorer.render_size,
                                                    saturation=restorer.saturation),
                            repeat=2 if side > 2000 else 3)
            ref = time_call(lambda: np.asarray(Image.fromarray(img).convert("L").convert("RGB")),
                            repeat=2 if side > 2000 else 3)
            mp = side * side / 1e6
            rows.append({"test": f"{side}x{side} ({mp:.0f} MP)", "method": f"imgrestore {restorer.name}",
                         "seconds": sec, "mp_per_s": mp / sec})
            rows.append({"test": f"{side}x{side} ({mp:.0f} MP)", "method": "Pillow gray->RGB (reference)",
                         "seconds": ref, "mp_per_s": mp / ref})
    return {"model": restorer.name, "params": count_params(restorer.model), "threads": threads,
            "render_size": restorer.render_size, "saturation": restorer.saturation, "torch": torch.__version__,
            "quality": quality, "speed": rows}
