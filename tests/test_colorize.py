"""Colorization: luminance kept, any size, reference changes colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import noise_image
from imgrestore import load
from imgrestore.color import colorfulness, lab_to_rgb, luminance, rgb_to_lab
from imgrestore.tasks.colorize import bilinear_matrix, colorize_pixels, render_dims


def test_lab_known_values_and_roundtrip():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T.reshape(1, 3, 3, 1)
    lab = rgb_to_lab(rgb)[0, :, :, 0].T
    expected = torch.tensor([[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]])
    assert torch.allclose(lab, expected, atol=0.02)
    x = torch.rand(2, 3, 9, 7)
    assert (lab_to_rgb(rgb_to_lab(x)) - x).abs().max() < 1e-4


def test_gamut_mapping_keeps_luminance():
    lab = torch.tensor([[60.0, 100.0, -100.0], [30.0, -90.0, 90.0], [90.0, 0.0, 110.0]]).T.reshape(1, 3, 3, 1)
    rgb = lab_to_rgb(lab)
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert (luminance(rgb) - lab[:, :1]).abs().max() < 0.05


def test_bilinear_matrix_is_interpolate():
    x = torch.rand(2, 7, 11)
    for size in ((23, 30), (5, 4), (7, 11)):
        ref = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        mine = torch.einsum("Yh,chw,Xw->cYX", bilinear_matrix(size[0], 7), x, bilinear_matrix(size[1], 11))
        assert (ref - mine).abs().max() < 1e-5


@pytest.mark.parametrize("h,w", [(37, 53), (8, 8), (101, 3)])
@pytest.mark.parametrize("gray", [True, False])
def test_luminance_kept_any_size(tiny_color, h, w, gray):
    r = load(tiny_color, device="cpu")
    px = np.asarray(noise_image(h, w, "L" if gray else "RGB"))
    px = px[..., None] if gray else px
    out = colorize_pixels(r.model, px, render_size=64)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    l_in = luminance(torch.from_numpy(np.repeat(px, 3 // px.shape[2], axis=2)).permute(2, 0, 1)[None] / 255.0)
    l_out = luminance(torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255.0)
    # within 8-bit rounding of the RGB output (one code value moves L by < 0.5)
    assert (l_in - l_out).abs().max() < 1.0


def test_network_cost_independent_of_size():
    assert render_dims(3000, 4000, 256) == render_dims(300, 400, 256) == (192, 256)


def test_reference_changes_colours(tiny_color):
    px = np.asarray(noise_image(32, 32))
    plain = load(tiny_color, device="cpu")(px)
    styled = load(tiny_color, device="cpu", reference=_picture(np.asarray(noise_image(40, 40, seed=7)) // 4))(px)
    assert np.abs(plain.astype(int) - styled.astype(int)).max() > 0
    assert np.array_equal(load(tiny_color, device="cpu", reference=None)(px), plain)


def _picture(px):
    from imgrestore.io import Picture

    return Picture(px)


def test_colorfulness_of_gray_is_zero():
    g = torch.rand(1, 1, 10, 10).expand(1, 3, 10, 10)
    assert colorfulness(g)[0] < 1e-3
    assert colorfulness(torch.rand(1, 3, 10, 10))[0] > 10


def test_cli_colorize(cli, tiny_color, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    noise_image(20, 30, "L").save(d / "old.jpg")
    noise_image(9, 13, "RGBA").save(d / "alpha.png")
    Image.fromarray(np.full((6, 5), 30000, np.uint16)).save(d / "deep.png")
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    code, _, err = cli("colorize", "--model", tiny_color, d, "-o", out, "--render-size", 64)
    assert code == 1 and err.count("error:") == 1 and "broken.png" in err
    with Image.open(out / "old.jpg") as im:
        assert im.mode == "RGB" and im.size == (30, 20)
    with Image.open(out / "alpha.png") as im:
        assert im.mode == "RGBA" and im.size == (13, 9)
    with Image.open(out / "deep.png") as im:
        assert im.mode in ("RGB", "I;16") or im.mode.startswith("I")
    ref = tmp_path / "ref.png"
    noise_image(16, 16, seed=3).save(ref)
    code, _, err = cli("colorize", "--model", tiny_color, d / "old.jpg", "-o", tmp_path / "r.png",
                       "--reference", ref)
    assert code == 0, err
    code, _, err = cli("colorize", "--model", tiny_color, d / "old.jpg", "--reference", d / "broken.png")
    assert code == 2 and "broken.png" in err


def test_saturation_scales_colours(tiny_color, cli, tmp_path):
    r = load(tiny_color, device="cpu")
    px = np.asarray(noise_image(32, 32))

    def cf(a):
        return float(colorfulness(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255)[0])

    # (the random model's colours are far out of gamut: doubling them is
    # mostly undone by the gamut mapping, so compare downwards)
    quarter, one = (colorize_pixels(r.model, px, 64, saturation=s) for s in (0.25, 1.0))
    assert cf(one) > cf(quarter) > 0
    noise_image(20, 30).save(tmp_path / "c.png")
    code, _, err = cli("colorize", "--model", tiny_color, tmp_path / "c.png", "-o", tmp_path / "g.png",
                       "--saturation", 0)
    assert code == 0, err
    with Image.open(tmp_path / "g.png") as im:
        g = np.asarray(im.convert("RGB")).astype(int)
    assert np.abs(g - g[..., :1]).max() <= 1  # a*b* = 0: the gray image
