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


def _starts(n: int, tile: int) -> list[tuple[int, int]]:
    # equal-ish spans so that no tile is a thin sliver
    count = max(1, -(-n // tile))
    edges = [round(i * n / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def plan(h: int, w: int, tile: int | None, overlap: int) -> list[Tile]:
    """Tiles covering an h x w image; `tile` None or 0 (or >= the image) means
    one tile."""
    if not tile or (h <= tile and w <= tile):
        return [Tile(0, h, 0, w, 0, h, 0, w)]
    out = []
    for y0, y1 in _starts(h, tile):
        for x0, x1 in _starts(w, tile):
            out.append(Tile(y0, y1, x0, x1, max(0, y0 - overlap), min(h, y1 + overlap),
                            max(0, x0 - overlap), min(w, x1 + overlap)))
    return out
