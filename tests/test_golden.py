"""Golden outputs: today's decoded pixels, pinned, so a refactor can prove it
changed nothing.

Each case runs a model on a small generated image (numpy seeds, smoothed by
bilinear upsizing) and compares the result with tests/golden/<case>.npz:
the shipped upscalers (x2, x3, x4 on RGB, gray, RGBA and 16-bit RGB; x2
tiled), a fixed random colorizer (the `tiny_color` fixture, not the shipped
colorize model, which is about to be retrained) and the CLI end to end.

The goldens are float32 arithmetic (`--precision fp32`; bfloat16, which
`auto` picks on some CPUs, has its own tests). Exact equality is expected
on one machine and torch version; at most one code
value of difference is tolerated (BLAS rounding). Each golden also stores a
digest of its input, so a change in the generated input (numpy, PIL) is told
apart from a change in the output.

Only when a change of output is intended, regenerate and check the files in:

    python -m pytest tests/test_golden.py --regen-golden

Without the flag a missing golden is a failure, never silently written.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgrestore
from imgrestore.tasks.colorize import colorize_pixels

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 1  # max abs difference, in code values of the output's dtype
H, W = 28, 40  # the main RGB input (x2, tiled, colorize, CLI)


def smooth_image(h: int, w: int, channels: int, seed: int, dtype=np.uint8) -> np.ndarray:
    """(h, w, channels) photo-like pixels: a random image a quarter the size,
    bilinearly upsized (PIL, per channel in float), plus a little noise."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4 + 1, w // 4 + 1, channels)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(small[..., c], "F").resize((w, h), Image.BILINEAR))
              for c in range(channels)]
    a = np.stack(planes, axis=-1) + rng.normal(0.0, 0.02, (h, w, channels)).astype(np.float32)
    top = np.iinfo(dtype).max
    return np.round(np.clip(a, 0.0, 1.0) * top).astype(dtype)


KINDS = {  # kind -> (channels, dtype, seed)
    "rgb": (3, np.uint8, 1),
    "gray": (1, np.uint8, 2),  # passed as (H, W)
    "rgba": (4, np.uint8, 3),
    "rgb16": (3, np.uint16, 4),
}


def make_input(kind: str, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    c, dtype, kind_seed = KINDS[kind]
    a = smooth_image(h, w, c, seed=seed + kind_seed, dtype=dtype)
    return a[..., 0] if kind == "gray" else a


def upscale_input(kind: str, scale: int) -> np.ndarray:
    """Sized so the output is about 56x80 for RGB (x2: H x W in) and about
    28x40 for the other kinds: model outputs hardly compress, and this keeps
    tests/golden/ near 100 KB."""
    div = scale if kind == "rgb" else 2 * scale
    return make_input(kind, 2 * H // div, 2 * W // div, seed=10 * scale)


@functools.lru_cache(maxsize=None)
def shipped(name: str):
    return imgrestore.load(name, device="cpu", precision="fp32")  # the goldens pin float32


def input_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def check_golden(name: str, inp: np.ndarray, out: np.ndarray, regen: bool) -> None:
    path = GOLDEN / f"{name}.npz"
    if regen:
        GOLDEN.mkdir(exist_ok=True)
        np.savez_compressed(path, output=out, input_sha256=np.array(input_digest(inp)))
        pytest.skip(f"--regen-golden: regenerated {path.relative_to(Path(__file__).parent)}")
    assert path.exists(), (f"missing golden {path}: create it with "
                           f"`python -m pytest tests/test_golden.py --regen-golden` and check it in")
    with np.load(path) as g:
        want, want_digest = g["output"], str(g["input_sha256"])
    assert input_digest(inp) == want_digest, (
        f"{name}: the generated INPUT differs from the one the golden was made from "
        f"(numpy/PIL changed?): not a model change")
    assert (out.shape, out.dtype) == (want.shape, want.dtype), (
        f"{name}: got {out.shape} {out.dtype}, golden {want.shape} {want.dtype}")
    diff = np.abs(out.astype(np.int64) - want.astype(np.int64))
    worst = int(diff.max()) if diff.size else 0
    assert worst <= TOLERANCE, (
        f"{name}: max abs diff {worst} (> {TOLERANCE}) to the golden; "
        f"{int((diff > TOLERANCE).sum())} of {diff.size} values off, "
        f"{int((diff > 0).sum())} differ at all")


# ---------------------------------------------------------------------------- upscale

@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("model", ["upscale-x2", "upscale-x3", "upscale-x4"])
def test_upscale(model, kind, regen_golden):
    inp = upscale_input(kind, scale=int(model[-1]))
    out = shipped(model)(inp)
    check_golden(f"{model}-{kind}", inp, out, regen_golden)


def test_upscale_x2_tiled(regen_golden):
    """tile=16 gives the very pixels of the untiled run: same golden."""
    inp = upscale_input("rgb", 2)
    out = shipped("upscale-x2")(inp, tile=16)
    if regen_golden:
        # the shared golden is written by upscale-x2-rgb; sharing holds only
        # while tiled == untiled exactly
        whole = shipped("upscale-x2")(inp, tile=None)
        assert np.array_equal(out, whole), "tiled x2 no longer equals untiled: give it its own golden"
        pytest.skip("--regen-golden: shares golden/upscale-x2-rgb.npz (regenerated by that case)")
    check_golden("upscale-x2-rgb", inp, out, regen_golden)


# ---------------------------------------------------------------------------- colorize

@pytest.fixture
def colorizer(tiny_color):
    r = imgrestore.load(tiny_color, device="cpu", render_size=64)
    assert r.render_size == 64, "ColorizeRestorer lost its render_size setting"
    return r


@pytest.mark.parametrize("kind", ["rgb", "gray"])
def test_colorize(colorizer, kind, regen_golden):
    inp = make_input(kind)
    out = colorizer(inp)
    check_golden(f"colorize-tiny-{kind}", inp, out, regen_golden)


def test_colorize_saturation_half(colorizer, regen_golden):
    inp = make_input("rgb")
    out = colorize_pixels(colorizer.model, inp, render_size=64, saturation=0.5)
    check_golden("colorize-tiny-rgb-sat0.5", inp, out, regen_golden)


# ---------------------------------------------------------------------------- CLI

def test_cli_upscale_x2_png(cli, tmp_path, regen_golden):
    inp = make_input("rgb")
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(inp, "RGB").save(src)
    code, _, err = cli("upscale", "--x2", "--precision", "fp32", src, "-o", dst)
    assert code == 0, err
    with Image.open(dst) as im:
        out = np.asarray(im)
    check_golden("cli-upscale-x2-png", inp, out, regen_golden)
