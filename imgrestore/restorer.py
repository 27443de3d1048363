"""A loaded model plus what the pipeline needs to know about it.

The descriptor does the dull, error-prone parts: inference mode, memory
format, padding to the size multiple, clamping, quantizing, tiling, gray and
alpha handling. The pipeline and the public API talk to a `Restorer`, never to
a raw network.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import registry, tiling, weights
from .defaults import DEFAULT_RENDER, DEFAULT_TILE
from .errors import ImgRestoreError
from .io import Picture


def _describe_output(pic: Picture, shape: tuple[int, int, int], dtype, has_alpha: bool) -> Picture:
    """A Picture that describes an output streamed in bands: its pixels are an
    empty read-only view carrying shape and dtype, with the input's metadata."""
    return Picture(np.broadcast_to(np.zeros((), dtype), shape), None, pic.exif, pic.icc, pic.format,
                   list(pic.notes), has_alpha=has_alpha)


def _mean_channels(a: np.ndarray, keepdims: bool) -> np.ndarray:
    return np.round(a.astype(np.float32).mean(axis=2, keepdims=keepdims)).astype(a.dtype)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ImgRestoreError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(device)


class Restorer:
    """Callable on a PIL image or an (H, W[, C]) uint8/uint16 numpy array;
    returns the same kind. `restore_picture` is the pipeline's entry."""

    def __init__(self, model: torch.nn.Module, wf: weights.WeightsFile, spec: registry.ArchSpec,
                 device: torch.device, name: str):
        self.model = model
        self.meta = wf
        self.spec = spec
        self.device = device
        self.name = name
        self.task = wf.task
        self.scale = wf.scale
        self.radius = spec.receptive_radius(wf.config)
        self.size_multiple = spec.size_multiple
        # channels_last: small-channel 3x3 convs ran ~1.3-1.8x faster on 2
        # CPU threads (bench on this machine; see MODEL_CARD.md)
        self.memory_format = torch.channels_last

    # ------------------------------------------------------------------ tensors
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1] -> restored, clamped to [0, 1]."""
        m = self.size_multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        with torch.inference_mode():
            y = self.model(x.to(self.device, memory_format=self.memory_format))
            if ph or pw:
                y = y[..., : h * self.scale, : w * self.scale]
            return y.clamp_(0.0, 1.0)

    def iter_bands(self, px: np.ndarray, tile: int | None = DEFAULT_TILE, overlap: int | None = None,
                   on_tile: Callable[[int, int], None] | None = None
                   ) -> Iterator[tuple[int, np.ndarray]]:
        """(H, W, C) uint8/uint16 -> yields (first output row, band of finished
        output rows (rows, W*s, C), same dtype), one band per row of tiles.
        Quantized tile by tile: never a full-size float copy, and a caller
        that streams bands never holds the whole output."""
        h, w, c = px.shape
        s = self.scale
        top = 65535.0 if px.dtype == np.uint16 else 255.0
        overlap = self.radius if overlap is None else overlap
        tiles = tiling.plan(h, w, tile, overlap)
        done = 0
        for y0, row in itertools.groupby(tiles, key=lambda t: t.y0):
            row = list(row)
            band = np.empty(((row[0].y1 - y0) * s, w * s, c), dtype=px.dtype)
            for t in row:
                # inference mode per tile, never across a yield: the mode is
                # thread state and would leak into the caller
                with torch.inference_mode():
                    self._run_tile(px, t, top, band)
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

    def _run_tile(self, px: np.ndarray, t: tiling.Tile, top: float, band: np.ndarray) -> None:
        s = self.scale
        # np.array copies: the tile is small, and torch wants writable memory
        patch = torch.from_numpy(np.array(px[t.py0:t.py1, t.px0:t.px1]))
        x = patch.permute(2, 0, 1)[None].float().div_(top)  # (1, C, h, w)
        y = self.forward(x)
        ys, xs = t.crop_in_output(s)
        y = y[0, :, ys, xs].mul_(top).round_().permute(1, 2, 0)  # (h', w', C)
        band[:, t.x0 * s:t.x1 * s] = y.cpu().numpy().astype(px.dtype)

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

        desc = _describe_output(pic, (h * s, w * s, px.shape[2]), px.dtype, pic.alpha is not None)
        return desc, gen()

    def restore_picture(self, pic: Picture, tile: int | None = DEFAULT_TILE,
                        overlap: int | None = None,
                        on_tile: Callable[[int, int], None] | None = None) -> Picture:
        desc, bands = self.picture_bands(pic, tile, overlap, on_tile)
        out = np.empty(desc.pixels.shape, desc.pixels.dtype)
        alpha = np.empty(out.shape[:2], out.dtype) if desc.has_alpha else None
        for oy, band, a in bands:
            out[oy:oy + band.shape[0]] = band
            if alpha is not None:
                alpha[oy:oy + band.shape[0]] = a
        return Picture(out, alpha, pic.exif, pic.icc, pic.format, list(pic.notes))

    def __call__(self, image, tile: int | None = DEFAULT_TILE):
        """Restore a PIL image or a numpy array (H, W), (H, W, 1|3|4) of uint8
        or uint16; returns the same kind."""
        from PIL import Image

        if isinstance(image, Image.Image):
            from .io import _to_arrays

            px, alpha = _to_arrays(image, b"", "")
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
        if a.dtype not in (np.uint8, np.uint16):
            raise TypeError(f"expected uint8 or uint16 pixels, got {a.dtype}")
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
        return {"name": self.name, "task": self.task, "scale": self.scale, "arch": self.meta.arch,
                "params": registry.count_params(self.model), "file": str(self.meta.path)}


def load(model: str | os.PathLike = "upscale-x4", device: str = "auto") -> Restorer:
    """Load a shipped model by name, or any imgrestore weights file by path,
    ready to run (re-parameterizable branches folded once, here)."""
    path = registry.resolve(str(model))
    wf = weights.read(path)
    net = registry.build_from_weights(wf)
    spec = registry.ARCHS[wf.arch]
    if hasattr(net, "reparameterize"):
        net.reparameterize()
    dev = pick_device(device)
    net = net.eval().to(dev, memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    name = str(model) if str(model) in registry.SHIPPED else Path(path).stem
    return RESTORERS.get(wf.task, Restorer)(net, wf, spec, dev, name)


# ---------------------------------------------------------------------------- colorize

def bilinear_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D bilinear resampling with the semantics of
    F.interpolate(mode="bilinear", align_corners=False): applying it to rows
    and columns resamples exactly like interpolate, band by band."""
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


def pixels_to_l(px: np.ndarray) -> torch.Tensor:
    """(H, W, 1|3) uint8/uint16 -> (1, 1, H, W) Lab L, computed in row bands."""
    from .color import gray_to_l, luminance

    h, w, c = px.shape
    top = 65535.0 if px.dtype == np.uint16 else 255.0
    out = torch.empty(1, 1, h, w)
    for y in range(0, h, 512):
        band = torch.from_numpy(np.array(px[y:y + 512])).permute(2, 0, 1)[None].float().div_(top)
        out[:, :, y:y + 512] = gray_to_l(band) if c == 1 else luminance(band)
    return out


def colorize_pixels(model, px: np.ndarray, render_size: int = DEFAULT_RENDER,
                    reference_l: torch.Tensor | None = None, band_rows: int = 256,
                    saturation: float = 1.0) -> np.ndarray:
    """(H, W, 1|3) uint8/uint16 -> (H, W, 3) same dtype: the photo's own
    full-resolution L joined to a*b* predicted at the working resolution and
    upsampled; the network's cost does not depend on the photo's size.
    `saturation` scales the predicted a*b* (0: gray; the hue is kept)."""
    from .color import lab_to_rgb

    h, w = px.shape[:2]
    top = 65535.0 if px.dtype == np.uint16 else 255.0
    l_full = pixels_to_l(px)  # (1, 1, H, W)
    rh, rw = render_dims(h, w, render_size)
    l_small = F.interpolate(l_full, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    with torch.inference_mode():
        ab = model(l_small, global_from=reference_l)[0]  # (2, rh/2, rw/2)
    if saturation != 1.0:
        ab = ab * saturation
    ry, rx = bilinear_matrix(h, ab.shape[1]), bilinear_matrix(w, ab.shape[2])
    abx = torch.einsum("chw,Xw->chX", ab, rx)  # columns first: (2, rh/2, W)
    out = np.empty((h, w, 3), dtype=px.dtype)
    for y in range(0, h, band_rows):
        y1 = min(h, y + band_rows)
        ab_band = torch.einsum("Yh,chX->cYX", ry[y:y1], abx)  # (2, rows, W)
        lab = torch.cat([l_full[0, :, y:y1], ab_band])[None]
        rgb = lab_to_rgb(lab)[0].mul_(top).round_().permute(1, 2, 0)
        out[y:y1] = rgb.numpy().astype(px.dtype)
    return out


class ColorizeRestorer(Restorer):
    """Colorization: scale 1; color input is reduced to its luminance and
    recolorized; alpha, EXIF and ICC are kept. `reference` (a Picture) lends
    its global features (colours in the style of another photo)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.render_size = DEFAULT_RENDER
        self.saturation = 1.0  # scale of the predicted a*b*
        self.reference_l: torch.Tensor | None = None

    def set_reference(self, pic: Picture | None) -> None:
        if pic is None:
            self.reference_l = None
            return
        l = pixels_to_l(pic.pixels)
        rh, rw = render_dims(l.shape[2], l.shape[3], 512)
        self.reference_l = F.interpolate(l, size=(rh, rw), mode="bilinear", align_corners=False,
                                         antialias=True)

    def restore_picture(self, pic: Picture, tile=None, overlap=None, on_tile=None) -> Picture:
        out = colorize_pixels(self.model, pic.pixels, self.render_size, self.reference_l,
                              saturation=self.saturation)
        if on_tile:
            on_tile(1, 1)
        return Picture(out, pic.alpha, pic.exif, pic.icc, pic.format, list(pic.notes))

    def picture_bands(self, pic, tile=None, overlap=None, on_tile=None):
        res = self.restore_picture(pic, on_tile=on_tile)
        desc = _describe_output(res, res.pixels.shape, res.pixels.dtype, res.alpha is not None)
        return desc, iter([(0, res.pixels, res.alpha)])


RESTORERS = {"colorize": ColorizeRestorer}
