"""High-quality (Lanczos) resizing of images that arrive and leave in row
bands, so that memory stays bounded whatever the image size: an output band
needs only the input rows under its filter, and rows no later band needs
are dropped. Pure numpy and Pillow; no torch.

The result equals Pillow's whole-image `resize(..., LANCZOS)` (on float
pixels, rounded once): each band is resized with Pillow's `box` from a
buffer that holds every row its filter reaches.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np

LANCZOS_SUPPORT = 3.0  # Lanczos-3: the filter reaches 3 pixels (of the coarser grid) each side


def _resize_rows(buf: np.ndarray, box_top: float, box_bottom: float, out_w: int, out_rows: int) -> np.ndarray:
    """buf (rows, W, C) float32 -> (out_rows, out_w, C): Lanczos resize of
    the rows [box_top, box_bottom) of buf (fractional, in buf's rows)."""
    from PIL import Image

    h, w, c = buf.shape
    out = np.empty((out_rows, out_w, c), np.float32)
    for k in range(c):
        im = Image.fromarray(np.ascontiguousarray(buf[:, :, k]), "F")
        out[:, :, k] = np.asarray(im.resize((out_w, out_rows), Image.LANCZOS, box=(0, box_top, w, box_bottom)))
    return out


def _quantize(a: np.ndarray, dtype) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.clip(np.rint(a), 0, top).astype(dtype)


def resize_bands(bands: Iterable[tuple[int, np.ndarray]], src_h: int, src_w: int, dst_h: int, dst_w: int,
                 band_rows: int = 256) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, band (rows, src_w, C)) in order, covering src_h rows ->
    (first output row, band (rows, dst_w, C)) of the image resized to
    dst_w x dst_h, same dtype, at most `band_rows` rows a band."""
    sy = src_h / dst_h  # input rows per output row
    # rows of context each side: the filter's reach, in input rows, and a little more
    reach = math.ceil(LANCZOS_SUPPORT * max(sy, 1.0)) + 2
    buf: np.ndarray | None = None  # float32 rows [buf_y0, buf_y0 + len(buf))
    buf_y0 = 0
    dtype = None
    oy = 0
    src = iter(bands)
    exhausted = False
    while oy < dst_h:
        oy1 = min(dst_h, oy + band_rows)
        need_top = max(0, math.floor(oy * sy) - reach)
        need_bottom = min(src_h, math.ceil(oy1 * sy) + reach)
        while (buf is None or buf_y0 + len(buf) < need_bottom) and not exhausted:
            try:
                y0, band = next(src)
            except StopIteration:
                exhausted = True
                break
            dtype = band.dtype
            band = band.astype(np.float32)
            if buf is None:
                buf, buf_y0 = band, y0
            else:
                buf = np.concatenate([buf, band])
        # drop rows no output band needs any more
        if need_top > buf_y0:
            buf = buf[need_top - buf_y0:]
            buf_y0 = need_top
        out = _resize_rows(buf, oy * sy - buf_y0, oy1 * sy - buf_y0, dst_w, oy1 - oy)
        yield oy, _quantize(out, dtype)
        oy = oy1


def resize_array(px: np.ndarray, dst_h: int, dst_w: int) -> np.ndarray:
    """(H, W, C) uint8/uint16 -> (dst_h, dst_w, C), Lanczos, band by band."""
    out = np.empty((dst_h, dst_w, px.shape[2]), px.dtype)
    h = px.shape[0]
    for oy, band in resize_bands(((y, px[y:y + 256]) for y in range(0, h, 256)), h, px.shape[1], dst_h, dst_w):
        out[oy:oy + band.shape[0]] = band
    return out


__all__ = ["resize_array", "resize_bands"]
