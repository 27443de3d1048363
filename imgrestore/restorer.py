"""A loaded model plus what the pipeline needs to know about it.

The descriptor does the dull, error-prone parts: inference mode, memory
format, padding to the size multiple, clamping, quantizing, tiling, gray and
alpha handling. The pipeline and the public API talk to a `Restorer`, never to
a raw network. A task whose read-out differs subclasses it (`tasks/`), and
`tasks.load` builds the task's class.

torch is imported where it is used: the task table, which names the
restorers, is read by the command line before any model is loaded.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import tiling
from .defaults import DEFAULT_TILE
from .errors import ImgRestoreError
from .io import Picture, pil_arrays


def describe_output(pic: Picture, shape: tuple[int, int, int], dtype, has_alpha: bool) -> Picture:
    """A Picture that describes an output streamed in bands: its pixels are an
    empty read-only view carrying shape and dtype, with the input's metadata."""
    return Picture(np.broadcast_to(np.zeros((), dtype), shape), None, pic.exif, pic.icc, pic.format,
                   list(pic.notes), has_alpha=has_alpha)


def _mean_channels(a: np.ndarray, keepdims: bool) -> np.ndarray:
    return np.round(a.astype(np.float32).mean(axis=2, keepdims=keepdims)).astype(a.dtype)


def assemble(pic: Picture, desc: Picture, bands) -> Picture:
    """The whole output of `picture_bands` (its description and bands) as one
    Picture with the input's metadata."""
    out = np.empty(desc.pixels.shape, desc.pixels.dtype)
    alpha = np.empty(out.shape[:2], out.dtype) if desc.has_alpha else None
    for oy, band, a in bands:
        out[oy:oy + band.shape[0]] = band
        if alpha is not None:
            alpha[oy:oy + band.shape[0]] = a
    return Picture(out, alpha, pic.exif, pic.icc, pic.format, list(pic.notes))


def pick_device(device: str = "auto"):
    """auto, cpu or cuda -> a torch.device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ImgRestoreError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(device)


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device) -> bool:
    """Whether `device` runs bfloat16 convolutions natively: a CUDA device
    that supports it, or a CPU with AVX512-BF16 or AMX (elsewhere bfloat16 is
    emulated, slower than float32)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(precision: str, device, allowed: tuple[str, ...]) -> str:
    """auto, fp32 or bf16 -> what the network runs in: auto is bfloat16 where
    the task allows it (`Task.precisions`: measured to keep its quality) and
    the device runs it natively, float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if "bf16" in allowed and native_bf16(device) else "fp32"
    if precision not in allowed:
        raise ImgRestoreError(f"--precision {precision}: this model runs in {' or '.join(allowed)} only")
    return precision


class Restorer:
    """Callable on a PIL image or an (H, W[, C]) uint8/uint16 numpy array;
    returns the same kind. `restore_picture` is the pipeline's entry."""

    def __init__(self, model, wf, spec, device, name: str):
        """`model`: the network, folded and on `device` (in channels_last:
        small-channel 3x3 convs run faster on the CPU in it, measured in
        weights/MODEL_CARD.md); `wf`: its `weights.WeightsFile`; `spec`: its
        `models.arch.ArchSpec`."""
        self.model = model
        self.meta = wf
        self.spec = spec
        self.device = device
        self.name = name
        self.task = wf.task
        self.scale = wf.scale
        self.radius = spec.receptive_radius(wf.config)
        self.size_multiple = spec.size_multiple
        self.tile_safe = spec.tile_safe
        self.default_tile = spec.tile  # the command's tile side when --tile is not given
        self.backend = "torch"
        # the network's arithmetic: fp32, or bf16 (autocast around every tile;
        # weights, inputs and the read-out stay float32). `tasks.load` sets it.
        self.precision = "fp32"
        # lines for the user about how it was set up (the CLI shows them once)
        self.notes: list[str] = []

    def input_notes(self, pic: Picture) -> list[str]:
        """Lines about what this restorer does to this input that the user
        may not expect; the CLI says each kind once for a whole batch."""
        return []

    def output_size(self, w: int, h: int) -> tuple[int, int]:
        """The output's (width, height) for an input of w x h."""
        return w * self.scale, h * self.scale

    def plan(self, w: int, h: int) -> dict | None:
        """How an input of w x h is made, where more than the model is at
        work (reported in --json); None otherwise."""
        return None

    # ------------------------------------------------------------------ tensors
    def net_call(self, x):
        """The network on a padded batch (a task whose network takes more
        than the image overrides it)."""
        return self.model(x)

    def forward(self, x):
        """(B, C, H, W) float in [0, 1] -> restored, clamped to [0, 1]."""
        import torch
        import torch.nn.functional as F

        m = self.size_multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        with torch.inference_mode():
            y = self.net_call(x.to(self.device, memory_format=torch.channels_last)).float()  # (bf16: back)
            if ph or pw:
                y = y[..., : h * self.scale, : w * self.scale]
            return y.clamp_(0.0, 1.0)

    def iter_bands(self, px: np.ndarray, tile: int | None = DEFAULT_TILE, overlap: int | None = None,
                   on_tile: Callable[[int, int], None] | None = None
                   ) -> Iterator[tuple[int, np.ndarray]]:
        """(H, W, C) uint8/uint16 -> yields (first output row, band of finished
        output rows (rows, W*s, C), same dtype), one band per row of tiles.
        Quantized tile by tile: never a full-size float copy, and a caller
        that streams bands never holds the whole output. An architecture
        whose tiled run would differ (`tile_safe` False) runs whole."""
        h, w, c = px.shape
        s = self.scale
        tile = tile if self.tile_safe else None
        overlap = self.radius if overlap is None else overlap
        tiles = tiling.plan(h, w, tile, overlap, align=self.size_multiple)
        done = 0
        for y0, row in itertools.groupby(tiles, key=lambda t: t.y0):
            row = list(row)
            band = np.empty(((row[0].y1 - y0) * s, w * s, c), dtype=px.dtype)
            for t in row:
                # inference mode per tile, never across a yield: the mode is
                # thread state and would leak into the caller
                with self._inference():
                    self._run_tile(px, t, band)
                done += 1
                if on_tile:
                    on_tile(done, len(tiles))
            yield y0 * s, band

    def run_pixels(self, px: np.ndarray, tile: int | None = DEFAULT_TILE, overlap: int | None = None,
                   on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(H, W, C) uint8/uint16 -> (H*s, W*s, C) same dtype, tiled."""
        h, w, c = px.shape
        out = np.empty((h * self.scale, w * self.scale, c), dtype=px.dtype)
        for oy, band in self.iter_bands(px, tile, overlap, on_tile):
            out[oy:oy + band.shape[0]] = band
        return out

    def _inference(self):
        import contextlib

        import torch

        if self.precision == "fp32":
            return torch.inference_mode()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        return stack

    def _run_tile(self, px: np.ndarray, t: tiling.Tile, band: np.ndarray) -> None:
        """Run the tile `t` of `px` and write its kept part into `band`."""
        from .tensors import to_pixels, to_tensor

        s = self.scale
        x = to_tensor(px[t.py0:t.py1, t.px0:t.px1])  # (1, C, h, w)
        if self._tail_readout():
            self._run_tail(x, t, band[:, t.x0 * s:t.x1 * s])
            return
        y = self.forward(x)  # (1, C, h*s, w*s)
        ys, xs = t.crop_in_output(s)
        band[:, t.x0 * s:t.x1 * s] = to_pixels(y[:, :, ys, xs], px.dtype)  # (h', w', C)

    def _tail_readout(self) -> bool:
        """Whether tiles are read out at the input's resolution: a network
        that ends in `shuffle_residual` and shows its tail (`forward_tail`),
        run as it is (no task's `net_call`, no padding to a multiple)."""
        return (hasattr(self.model, "forward_tail") and self.size_multiple == 1
                and type(self).net_call is Restorer.net_call)

    def forward_tail(self, x):
        """(1, C, h, w) float in [0, 1] -> the network's tail channels (1,
        C*s*s, h, w), before its residual and pixel shuffle (models with
        `forward_tail`, see `_tail_readout`)."""
        import torch

        with torch.inference_mode():
            return self.model.forward_tail(x.to(self.device, memory_format=torch.channels_last)).float()

    def _run_tail(self, x, t: tiling.Tile, out: np.ndarray) -> None:
        """The kept part of tile `t` into `out` (h'*s, w'*s, C): the network to
        its tail, then residual, clamp, quantize and pixel shuffle on the kept
        part only (`tensors.shuffle_residual_pixels`; the same numbers as
        `forward` and `to_pixels`)."""
        from .tensors import shuffle_residual_pixels

        y = self.forward_tail(x)
        oy, ox = t.y0 - t.py0, t.x0 - t.px0
        keep = (slice(None), slice(None), slice(oy, oy + t.y1 - t.y0), slice(ox, ox + t.x1 - t.x0))
        shuffle_residual_pixels(y[keep], x[keep].to(self.device), self.scale, out)

    # ------------------------------------------------------------------ pictures
    def picture_bands(self, pic: Picture, tile: int | None = DEFAULT_TILE, overlap: int | None = None,
                      on_tile: Callable[[int, int], None] | None = None
                      ) -> tuple[Picture, Iterator[tuple[int, np.ndarray, np.ndarray | None]]]:
        """The output's description (a Picture whose pixels are an empty
        (H', W', C) view giving shape and dtype) and an iterator of (first row,
        pixel band, alpha band or None)."""
        px = pic.pixels
        h, w = px.shape[:2]
        s = self.scale
        rgb = np.repeat(px, 3, axis=2) if pic.gray else px
        bands = self.iter_bands(rgb, tile, overlap, on_tile)
        alpha_bands = None
        if pic.alpha is not None and s != 1:
            # alpha upscaled on its own by the same network, then re-attached
            alpha_bands = self.iter_bands(np.repeat(pic.alpha[..., None], 3, axis=2), tile, overlap)

        def gen():
            for oy, band in bands:
                if pic.gray:
                    # gray in -> gray out: the model saw three equal channels
                    band = _mean_channels(band, keepdims=True)
                a = None
                if alpha_bands is not None:
                    _, ab = next(alpha_bands)
                    a = _mean_channels(ab, keepdims=False)
                elif pic.alpha is not None:
                    a = pic.alpha[oy:oy + band.shape[0]]
                yield oy, band, a

        desc = describe_output(pic, (h * s, w * s, px.shape[2]), px.dtype, pic.alpha is not None)
        return desc, gen()

    def restore_picture(self, pic: Picture, tile: int | None = DEFAULT_TILE,
                        overlap: int | None = None,
                        on_tile: Callable[[int, int], None] | None = None) -> Picture:
        return assemble(pic, *self.picture_bands(pic, tile, overlap, on_tile))

    def __call__(self, image, tile: int | None = DEFAULT_TILE):
        """Restore a PIL image or a numpy array (H, W), (H, W, 1|3|4) of uint8
        or uint16; returns the same kind."""
        from PIL import Image

        if isinstance(image, Image.Image):
            px, alpha = pil_arrays(image)
            res = self.restore_picture(Picture(px, alpha), tile)
            if res.pixels.dtype == np.uint16 and res.gray:
                return Image.fromarray(res.pixels[..., 0])
            if res.pixels.dtype == np.uint16:  # PIL has no 16-bit RGB: 8 bits
                res.pixels = (res.pixels // 257).astype(np.uint8)
            arr = res.pixels[..., 0] if res.gray else res.pixels
            if res.alpha is not None:
                return Image.fromarray(np.dstack([arr, res.alpha]), "LA" if res.gray else "RGBA")
            return Image.fromarray(arr, "L" if res.gray else "RGB")
        a = np.asarray(image)
        if a.dtype.kind == "u" and a.dtype.itemsize == 2 and a.dtype != np.uint16:
            a = a.astype(np.uint16)  # big-endian: the same values in native order
        if a.dtype not in (np.uint8, np.uint16):
            raise TypeError(f"expected uint8 or uint16 pixels, got {a.dtype}")
        if a.size == 0:
            raise ValueError(f"expected an image, got an empty array of shape {a.shape}")
        squeeze = a.ndim == 2
        if squeeze:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
        alpha = a[..., 3] if a.shape[2] == 4 else None
        res = self.restore_picture(Picture(np.ascontiguousarray(a[..., :3]), alpha), tile)
        out = res.pixels
        if res.alpha is not None:
            out = np.dstack([out, res.alpha])
        return out[..., 0] if squeeze and out.shape[2] == 1 else out

    def describe(self) -> dict:
        from . import registry

        return {"name": self.name, "task": self.task, "scale": self.scale, "arch": self.meta.arch,
                "params": registry.count_params(self.model), "file": str(self.meta.path),
                "precision": self.precision}


class Resized:
    """A restorer followed by a high-quality resize to the size asked for
    (any scale, a width or a height): `pick(factor)` gives the restorer for
    a factor (the smallest trained scale at or above it, or the largest),
    `size(w, h)` the output size; the resize (Lanczos) runs band by band on
    the restorer's bands, so memory stays bounded. `label` is the output
    suffix (`_x3.5`, `_w1920`)."""

    def __init__(self, base: Restorer, pick: Callable[[float], Restorer],
                 size: Callable[[int, int], tuple[int, int]], label: str, notes: list[str] | None = None):
        self.pick = pick
        self.size = size
        self.label = label
        self.notes = list(base.notes) + list(notes or [])
        self.name, self.task, self.scale = base.name, base.task, base.scale

    def _choice(self, w: int, h: int) -> tuple[Restorer, int, int]:
        ow, oh = self.size(w, h)
        return self.pick(max(ow / w, oh / h)), ow, oh

    def output_size(self, w: int, h: int) -> tuple[int, int]:
        return self.size(w, h)

    def plan(self, w: int, h: int) -> dict:
        r, ow, oh = self._choice(w, h)
        return {"model": r.name, "model_scale": r.scale, "resized_to": [ow, oh], "filter": "lanczos",
                "scale": round(max(ow / w, oh / h), 4)}

    def input_notes(self, pic: Picture) -> list[str]:
        w, h = pic.size
        r, ow, oh = self._choice(w, h)
        notes = r.input_notes(pic)
        if ow > w * r.scale or oh > h * r.scale:
            notes.append(f"a scale above the model's x{r.scale} was asked for: x{r.scale} by the network, "
                         "then a Lanczos resize (no detail is added beyond x" f"{r.scale})")
        return notes

    def picture_bands(self, pic: Picture, tile=DEFAULT_TILE, overlap=None, on_tile=None):
        from .resize import resize_bands

        w, h = pic.size
        r, ow, oh = self._choice(w, h)
        desc, bands = r.picture_bands(pic, tile, overlap, on_tile)
        mh, mw, c = desc.pixels.shape
        joined = ((y, np.dstack([b, a]) if a is not None else b) for y, b, a in bands)

        def gen():
            for y, band in resize_bands(joined, mh, mw, oh, ow):
                if desc.has_alpha:
                    yield y, band[..., :c], band[..., c]
                else:
                    yield y, band, None

        return describe_output(pic, (oh, ow, c), desc.pixels.dtype, desc.has_alpha), gen()

    def restore_picture(self, pic: Picture, tile=DEFAULT_TILE, overlap=None, on_tile=None) -> Picture:
        return assemble(pic, *self.picture_bands(pic, tile, overlap, on_tile))
