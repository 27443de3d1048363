"""Tiling: pure arithmetic on tile boxes, no IO.

Each tile is run with `overlap` pixels of real context on every side that has
a neighbour, and that context is cropped away from the result (the tiling of
Real-ESRGAN). When `overlap` is at least the network's receptive radius, every
kept output pixel saw exactly the input the untiled run sees, so a tiled
result equals the untiled one up to float rounding; memory depends on the
tile size, not the image size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    # the part of the input this tile is responsible for
    y0: int
    y1: int
    x0: int
    x1: int
    # the padded region actually fed to the network
    py0: int
    py1: int
    px0: int
    px1: int

    def crop_in_output(self, scale: int) -> tuple[slice, slice]:
        """Where the kept part lies inside the network's output for this tile."""
        oy, ox = (self.y0 - self.py0) * scale, (self.x0 - self.px0) * scale
        return (slice(oy, oy + (self.y1 - self.y0) * scale),
                slice(ox, ox + (self.x1 - self.x0) * scale))


def _starts(n: int, tile: int, align: int = 1) -> list[tuple[int, int]]:
    # equal-ish spans so that no tile is a thin sliver; inner edges on
    # multiples of `align`
    count = max(1, -(-n // tile))
    edges = [0] + [round(i * n / count / align) * align for i in range(1, count)] + [n]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def plan(h: int, w: int, tile: int | None, overlap: int, align: int = 1) -> list[Tile]:
    """Tiles covering an h x w image; `tile` None or 0 (or >= the image) means
    one tile. With `align`, every tile and its context start on a multiple
    of it (a network that works on 2x2 blocks sees the image's blocks)."""
    if not tile or (h <= tile and w <= tile):
        return [Tile(0, h, 0, w, 0, h, 0, w)]
    overlap = -(-overlap // align) * align
    out = []
    for y0, y1 in _starts(h, tile, align):
        for x0, x1 in _starts(w, tile, align):
            out.append(Tile(y0, y1, x0, x1, max(0, y0 - overlap), min(h, y1 + overlap),
                            max(0, x0 - overlap), min(w, x1 + overlap)))
    return out
