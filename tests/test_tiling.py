"""Tiling is invisible: tiled == untiled; the plan covers every pixel once."""

from __future__ import annotations

import numpy as np
import pytest

from imgrestore import load, tiling


@pytest.mark.parametrize("h,w,tile,overlap", [(37, 23, 8, 3), (64, 64, 16, 0), (5, 200, 7, 2), (10, 10, 100, 4)])
def test_plan_partitions_image(h, w, tile, overlap):
    cover = np.zeros((h, w), dtype=int)
    for t in tiling.plan(h, w, tile, overlap):
        cover[t.y0:t.y1, t.x0:t.x1] += 1
        assert t.py0 <= t.y0 and t.py1 >= t.y1 and t.px0 <= t.x0 and t.px1 >= t.x1
        assert t.py0 >= 0 and t.px0 >= 0 and t.py1 <= h and t.px1 <= w
    assert (cover == 1).all()


@pytest.mark.parametrize("tile", [7, 16, 25])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiled_equals_untiled(tiny_x3, tile, dtype):
    r = load(tiny_x3, device="cpu")
    top = np.iinfo(dtype).max
    px = np.random.default_rng(1).integers(0, top, (41, 30, 3)).astype(dtype)
    whole = r.run_pixels(px, tile=None).astype(np.int64)
    tiled = r.run_pixels(px, tile=tile).astype(np.int64)
    # DESIGN: within 1/255 on 8-bit output (with the default overlap it is exact
    # up to float rounding)
    assert np.abs(whole - tiled).max() <= top // 255
    assert tiled.shape == (41 * 3, 30 * 3, 3)


def test_progress_reports_every_tile(tiny_x2):
    r = load(tiny_x2, device="cpu")
    seen = []
    r.run_pixels(np.zeros((20, 20, 3), np.uint8), tile=8, on_tile=lambda d, n: seen.append((d, n)))
    assert seen == [(i, 9) for i in range(1, 10)]
