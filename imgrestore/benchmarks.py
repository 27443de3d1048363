"""The `bench` command's runners: a task's quality on folders of photos and
the speed of the whole read-out, always next to a reference measured in the
same run (DESIGN.md, "How quality and speed are measured"). The metrics and
the timer are `bench`'s; the pairs and the evaluation are the task's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bench import time_call
from .defaults import DEFAULT_TILE
from .io import list_images, write_atomic
from .registry import count_params
from .tasks import colorize, upscale


def _photo_or_noise(folders: list[str], side: int) -> np.ndarray:
    """A (side, side, 3) uint8 input for timing: the first photo of the
    first folder resized (a fairer input than noise), else noise."""
    if folders:
        with Image.open(list_images([folders[0]])[0]) as im:
            return np.asarray(im.convert("RGB").resize((side, side), Image.BICUBIC)).copy()
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _speed_rows(restorer, size: int, folders: list[str]) -> list[dict]:
    """Speed of the upscaler next to bicubic (Pillow) and an FSRCNN-shaped
    network (random weights: only its cost matters), same inputs, same run."""
    from .models.sr import FSRCNN

    s = restorer.scale
    big = _photo_or_noise(folders, size)
    out_mp = (size * s) ** 2 / 1e6
    rows = []

    def add(test, method, seconds, mp):
        rows.append({"test": test, "method": method, "seconds": seconds, "mp_per_s": mp / seconds})

    add(f"{size}x{size} -> x{s}", f"imgrestore {restorer.name} (uint8 in, uint8 out, tile {DEFAULT_TILE})",
        time_call(lambda: restorer.run_pixels(big)), out_mp)
    add(f"{size}x{size} -> x{s}", f"imgrestore {restorer.name} (uint8 in, uint8 out, untiled)",
        time_call(lambda: restorer.run_pixels(big, tile=None)), out_mp)
    add(f"{size}x{size} -> x{s}", "bicubic (Pillow)", time_call(lambda: upscale.bicubic_up(big, s)), out_mp)
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
        lrs = [upscale.sr_pair(p, s)[0] for p in list_images([folder])]
        mp = sum(a.shape[0] * a.shape[1] * s * s for a in lrs) / 1e6
        name = f"folder {Path(folder).name} ({len(lrs)} images)"
        add(name, f"imgrestore {restorer.name}",
            time_call(lambda: [restorer.run_pixels(a) for a in lrs], repeat=2), mp)
        add(name, "bicubic (Pillow)", time_call(lambda: [upscale.bicubic_up(a, s) for a in lrs], repeat=2), mp)
    return rows


def bench_upscale(restorer, folders: list[str], threads: int, size: int = 512, speed: bool = True,
                  lr_jpeg: int | None = None) -> dict:
    """`lr_jpeg`: each LR (the network's and bicubic's) is saved as a JPEG
    of that quality (4:2:0) first, as a camera photo would be."""
    quality = {Path(f).name: upscale.eval_sr(restorer.run_pixels, f, restorer.scale, lr_jpeg=lr_jpeg).summary()
               for f in folders}
    return {
        "model": restorer.name, "precision": restorer.precision, "scale": restorer.scale,
        "params": count_params(restorer.model),
        "threads": threads, "torch": torch.__version__, "quality": quality,
        "lr": f"Pillow bicubic, saved as JPEG quality {lr_jpeg} (4:2:0)" if lr_jpeg else "Pillow bicubic",
        "speed": _speed_rows(restorer, size, folders) if speed else [],
    }


def bench_colorize(restorer, folders: list[str], threads: int, speed: bool = True) -> dict:
    quality = {Path(f).name: colorize.eval_colorize(restorer.model, f, restorer.render_size,
                                                    saturation=restorer.saturation).summary() for f in folders}
    rows = []
    if speed:
        for side in (1000, 4900):  # 1 MP and 24 MP
            img = _photo_or_noise(folders, side)
            repeat = 2 if side > 2000 else 3
            sec = time_call(lambda: colorize.colorize_pixels(restorer.model, img, restorer.render_size,
                                                             saturation=restorer.saturation), repeat=repeat)
            ref = time_call(lambda: np.asarray(Image.fromarray(img).convert("L").convert("RGB")), repeat=repeat)
            mp = side * side / 1e6
            rows.append({"test": f"{side}x{side} ({mp:.0f} MP)", "method": f"imgrestore {restorer.name}",
                         "seconds": sec, "mp_per_s": mp / sec})
            rows.append({"test": f"{side}x{side} ({mp:.0f} MP)", "method": "Pillow gray->RGB (reference)",
                         "seconds": ref, "mp_per_s": mp / ref})
    return {"model": restorer.name, "params": count_params(restorer.model), "threads": threads,
            "render_size": restorer.render_size, "saturation": restorer.saturation, "torch": torch.__version__,
            "quality": quality, "speed": rows}


def contact_sheet(restorer, files: list[Path], out: Path, rows: int = 8, height: int = 192) -> int:
    """A picture a person can judge: one row per colour photo, original |
    gray | colorized, each `height` pixels high; the photos are taken evenly
    from `files`. Returns the rows written."""
    from io import BytesIO

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


def bench_restore(restorer, folders: list[str], settings: list[float], threads: int, gray: bool = True,
                  hint: bool = True, speed: bool = True, size: int = 1024) -> dict:
    """Denoise / deblock: PSNR over each folder at each setting (sigma, JPEG
    quality) next to the task's baseline from the same run, for the blind
    network (what the command does without a hint), with the hint, and on
    the gray versions of the photos; then speed next to the baseline's."""
    from .tasks.restore import eval_levels, load_clean

    d = restorer.degradation
    variants = [("colour, blind", None, False)]
    if hint:
        variants.append(("colour, hint", True, False))
    if gray:
        variants.append(("gray, blind", None, True))
    quality = {}
    for folder in folders:
        files = list_images([folder])
        for label, hinted, is_gray in variants:
            def restore(img, s, hinted=hinted):
                return restorer.with_level(d.level(s) if hinted else None).run_pixels(img)
            res = eval_levels(restore, d, files, tuple(settings), gray=is_gray, folder=folder)
            quality[f"{Path(folder).name} ({label})"] = dict(res.summary(), images=len(files))
    rows = []
    if speed:
        img = _photo_or_noise(folders, size)
        s = d.main
        degraded = d.apply(img, s, np.random.default_rng(0))
        mp = size * size / 1e6
        blind = restorer.with_level(None)
        for method, fn in ((f"imgrestore {restorer.name} (uint8 in, uint8 out, tile {DEFAULT_TILE})",
                            lambda: blind.run_pixels(degraded)),
                           (f"{d.baseline_name} at {d.unit} {s:g}", lambda: d.baseline(degraded, s)),
                           ("Pillow JPEG decode of the same image (q 90, reference)", _jpeg_decoder(degraded))):
            sec = time_call(fn, repeat=2)
            rows.append({"test": f"{size}x{size} ({mp:.1f} MP)", "method": method, "seconds": sec,
                         "mp_per_s": mp / sec})
        for folder in folders:
            imgs = [d.apply(load_clean(p), s, np.random.default_rng(0)) for p in list_images([folder])]
            mp = sum(a.shape[0] * a.shape[1] for a in imgs) / 1e6
            for method, fn in ((f"imgrestore {restorer.name}", lambda: [blind.run_pixels(a) for a in imgs]),
                               (f"{d.baseline_name} at {d.unit} {s:g}", lambda: [d.baseline(a, s) for a in imgs])):
                sec = time_call(fn, repeat=2)
                rows.append({"test": f"folder {Path(folder).name} ({len(imgs)} images)", "method": method,
                             "seconds": sec, "mp_per_s": mp / sec})
    return {"model": restorer.name, "precision": restorer.precision, "task": restorer.task,
            "params": count_params(restorer.model),
            "threads": threads, "torch": torch.__version__, "baseline": d.baseline_name, "score": d.score_name,
            "quality": quality, "speed": rows}


def _jpeg_decoder(img: np.ndarray):
    from io import BytesIO

    buf = BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    data = buf.getvalue()

    def decode():
        with Image.open(BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    return decode
