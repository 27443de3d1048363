"""`imgrestore bench tiers`: every shipped upscaler's quality against its
whole-command speed, measured in one run, next to bicubic, as numbers and as
a chart (the model card's).

Quality: Y-PSNR gain over bicubic of the same LR (the benchmark's protocol,
`tasks.upscale.eval_sr`), pooled over every image of the folders given.
Speed: `bench whole` of a large photo-like input to one output format (the
whole command, start-up to the written file, best of `repeat`), the
models of one scale timed in turn in the same rounds as Pillow's bicubic.
The chart is drawn with Pillow (no plotting library): output megapixels
per second on a log axis, gain in dB; one colour per scale.
"""

from __future__ import annotations

import math
from pathlib import Path

COLOURS = {2: (31, 119, 180), 3: (44, 160, 44), 4: (214, 39, 40)}
BICUBIC = (90, 90, 90)


def shipped_upscalers(scales: list[int]) -> dict[int, list[str]]:
    """Every shipped upscaler of each scale, fast tier first."""
    from .catalog import SHIPPED

    return {s: sorted((m.name for m in SHIPPED.values() if m.task == "upscale" and m.scale == s), key=len)
            for s in scales}


def measure(scales: list[int], folders: list[str], *, size: tuple[int, int], fmt: str, threads: int,
            repeat: int, models: dict[int, list[str]] | None = None, log=lambda m: None) -> dict:
    """{"points": [{name, scale, gain_db, psnr, mp_per_s, seconds}], ...}:
    one point per model and one bicubic point per scale."""
    from . import tasks
    from .tasks.upscale import eval_sr
    from .wholebench import bench_whole

    models = models or shipped_upscalers(scales)
    points = []
    for s in scales:
        names = models.get(s, [])
        if not names:
            continue
        log(f"x{s}: timing {', '.join(names)} and bicubic, {size[0]}x{size[1]} -> {fmt}")
        speed = bench_whole(s, names, ["torch"], [fmt], size, None, None, threads, repeat, log=log)
        whole = [r for r in speed["rows"] if r["format"] == fmt]  # the models in order, then bicubic
        for name, row in zip(names, whole[:len(names)]):
            r = tasks.load(name, task="upscale")
            if r.scale != s:
                raise ValueError(f"{name} upscales x{r.scale}, not x{s}")
            res = eval_sr(lambda lr, r=r: r.run_pixels(lr), [p for f in folders for p in _images(f)], s)
            points.append({"name": Path(name).stem, "scale": s, "psnr": round(res.mean("psnr"), 4),
                           "gain_db": round(res.mean("psnr") - res.mean("psnr_bicubic"), 4),
                           "mp_per_s": round(row["mp_per_s"], 3), "seconds": round(row["seconds"], 3)})
            log(f"  {points[-1]}")
        ref = whole[len(names)]  # bicubic: the same images' baseline, gain 0 by definition
        points.append({"name": "bicubic", "scale": s, "psnr": points[-1]["psnr"] - points[-1]["gain_db"],
                       "gain_db": 0.0, "mp_per_s": round(ref["mp_per_s"], 3), "seconds": round(ref["seconds"], 3)})
    return {"points": points, "folders": [Path(f).name for f in folders], "size": list(size), "format": fmt,
            "threads": threads, "repeat": repeat, "load_average": speed["load_average"] if points else None,
            "when": speed["when"] if points else None}


def _images(folder: str) -> list[Path]:
    from .io import list_images

    return list_images([folder])


def draw(report: dict, path: str | Path, title: str | None = None) -> None:
    """The chart: gain over bicubic (dB) against whole-command output MP/s
    (log axis), one marker and label per point."""
    from PIL import Image, ImageDraw, ImageFont

    pts = report["points"]
    if not pts:
        raise ValueError("nothing to draw")
    W, H, left, right, top, bottom = 900, 560, 80, 30, 50, 70
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    xs = [math.log10(p["mp_per_s"]) for p in pts]
    x0, x1 = math.floor(min(xs) * 2) / 2, math.ceil(max(xs) * 2) / 2
    x1 = max(x1, x0 + 0.5)
    y1 = max(0.5, math.ceil(max(p["gain_db"] for p in pts) * 4) / 4 + 0.25)
    y0 = min(0.0, min(p["gain_db"] for p in pts)) - 0.25

    def px(p):
        x = left + (math.log10(p["mp_per_s"]) - x0) / (x1 - x0) * (W - left - right)
        y = top + (y1 - p["gain_db"]) / (y1 - y0) * (H - top - bottom)
        return x, y

    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    # x ticks: 1, 2, 5 x 10^k inside the range
    for k in range(math.floor(x0) - 1, math.ceil(x1) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** k
            if x0 <= math.log10(v) <= x1:
                x, _ = px({"mp_per_s": v, "gain_db": y0})
                d.line([x, top, x, H - bottom], fill=(225, 225, 225))
                d.text((x, H - bottom + 6), f"{v:g}", fill="black", font=small, anchor="mt")
    step = 0.25 if y1 - y0 <= 3 else 0.5
    v = math.ceil(y0 / step) * step
    while v <= y1 + 1e-9:
        _, y = px({"mp_per_s": 10 ** x0, "gain_db": v})
        d.line([left, y, W - right, y], fill=(225, 225, 225))
        d.text((left - 8, y), f"{v:+.2f}" if v else "0", fill="black", font=small, anchor="rm")
        v += step
    d.text(((left + W - right) / 2, H - 22), f"whole command, output megapixels per second "
           f"({report['size'][0]}x{report['size'][1]} in, {report['format']} out, {report['threads']} threads; "
           f"log scale)", fill="black", font=font, anchor="mm")
    ylab = Image.new("RGBA", (H - top - bottom, 22), (255, 255, 255, 0))
    ImageDraw.Draw(ylab).text(((H - top - bottom) / 2, 11), f"Y-PSNR gain over bicubic, dB "
                              f"({', '.join(report['folders'])})", fill="black", font=font, anchor="mm")
    im.paste(ylab.rotate(90, expand=True), (8, top), ylab.rotate(90, expand=True))
    d.text((W / 2, 22), title or "imgrestore upscalers: quality against speed, one run", fill="black",
           font=font, anchor="mm")
    for p in pts:
        x, y = px(p)
        c = BICUBIC if p["name"] == "bicubic" else COLOURS.get(p["scale"], (0, 0, 0))
        d.ellipse([x - 6, y - 6, x + 6, y + 6], fill=c)
        label = f"bicubic x{p['scale']}" if p["name"] == "bicubic" else p["name"]
        text = f"{label} ({p['gain_db']:+.2f} dB, {p['mp_per_s']:.2f} MP/s)"
        right_side = x + 9 + d.textlength(text, font=small) <= W - right
        d.text((x + 9, y - 9) if right_side else (x - 9, y - 9), text, fill=c, font=small,
               anchor="la" if right_side else "ra")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
