"""bench colorize: the hue-accuracy metric and the contact sheet."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from conftest import noise_image
from imgrestore.bench import ab_auc


def test_ab_auc_bounds_and_gray_baseline():
    rgb = np.asarray(noise_image(20, 30))
    assert ab_auc(rgb, rgb) == 1.0
    gray = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, axis=2)
    worse = ab_auc(gray, rgb)
    assert 0.0 < worse < 1.0
    # a pure red against a pure green: a*b* about 200 apart, beyond every threshold
    red, green = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    red[..., 0], green[..., 1] = 255, 255
    assert ab_auc(red, green) == 0.0


def test_bench_colorize_reports_auc_and_writes_a_sheet(cli, tiny_color, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (h, w) in enumerate([(40, 60), (50, 30), (32, 32)]):
        small = np.random.default_rng(i).integers(0, 256, (5, 5, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(photos / f"p{i}.png")
    sheet = tmp_path / "sheet.png"
    code, out, err = cli("bench", "colorize", "--model", tiny_color, "--no-speed", "--json", "--render-size", 64,
                         "--sheet", sheet, "--sheet-rows", 2, photos)
    assert code == 0, err
    rep = json.loads(out)
    q = rep["quality"]["photos"]
    assert 0 <= q["auc"] <= 1 and 0 <= q["auc_gray"] <= 1
    assert rep["sheet"]["rows"] == 2
    im = Image.open(sheet)
    # two rows of 192 px with a 4 px gap; each row is three pictures side by side
    assert im.height == 2 * 192 + 4 and im.width == 3 * round(60 * 192 / 40)
    code, _, err = cli("bench", "colorize", "--model", tiny_color, "--no-speed", "--sheet", sheet)
    assert code == 2 and "--sheet needs a FOLDER" in err
