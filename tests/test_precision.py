"""--precision: the torch network in float32 or under bfloat16 autocast.

auto picks bfloat16 only where the task allows it (measured to keep its
quality) and the device runs it natively; these tests force each choice, so
they mean the same on a machine with or without native bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import imgrestore
from conftest import noise_image
from imgrestore import restorer as rmod
from imgrestore.errors import ImgRestoreError
from imgrestore.restorer import resolve_precision

CPU = torch.device("cpu")


def smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 RGB image (bilinear upsizing of a small random one)."""
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def test_auto_is_bf16_only_where_allowed_and_native(monkeypatch):
    monkeypatch.setattr(rmod, "native_bf16", lambda device: True)
    assert resolve_precision("auto", CPU, ("fp32", "bf16")) == "bf16"
    assert resolve_precision("auto", CPU, ("fp32",)) == "fp32"
    monkeypatch.setattr(rmod, "native_bf16", lambda device: False)
    assert resolve_precision("auto", CPU, ("fp32", "bf16")) == "fp32"
    # an explicit choice is kept where allowed, whatever the device
    assert resolve_precision("bf16", CPU, ("fp32", "bf16")) == "bf16"
    assert resolve_precision("fp32", CPU, ("fp32", "bf16")) == "fp32"
    with pytest.raises(ImgRestoreError, match="fp32 only"):
        resolve_precision("bf16", CPU, ("fp32",))
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp16", CPU, ("fp32", "bf16"))


@pytest.mark.parametrize("model", ["upscale-x2", "upscale-x4"])
def test_bf16_upscale_stays_within_two_steps_of_fp32(model):
    """The shipped upscalers under bfloat16: every output code within 2 of
    float32's, most of them equal, and bfloat16 really ran (not all equal)."""
    px = smooth(48, 64)
    a = imgrestore.load(model, device="cpu", precision="fp32")
    b = imgrestore.load(model, device="cpu", precision="bf16")
    assert (a.precision, b.precision) == ("fp32", "bf16")
    assert b.describe()["precision"] == "bf16"
    ya, yb = a.run_pixels(px).astype(int), b.run_pixels(px).astype(int)
    d = np.abs(ya - yb)
    assert d.max() <= 2 and d.mean() < 0.5, (d.max(), d.mean())
    assert d.max() > 0
    # tiling stays invisible in bfloat16 too (the same per-tile arithmetic)
    assert np.abs(b.run_pixels(px, tile=24).astype(int) - yb).max() <= 1


@pytest.mark.parametrize("name", ["denoise", "deblock"])
def test_bf16_restore_stays_close_to_fp32(name):
    px = np.asarray(noise_image(40, 56, seed=2))
    a = imgrestore.load(name, device="cpu", precision="fp32")
    b = imgrestore.load(name, device="cpu", precision="bf16")
    d = np.abs(a.run_pixels(px).astype(int) - b.run_pixels(px).astype(int))
    assert d.max() <= 3 and d.mean() < 0.6, (d.max(), d.mean())


def test_colorize_runs_in_fp32_only(tiny_color):
    assert imgrestore.load(tiny_color, device="cpu").precision == "fp32"  # auto
    with pytest.raises(ImgRestoreError, match="fp32 only"):
        imgrestore.load(tiny_color, device="cpu", precision="bf16")


def test_cli_precision_reaches_the_network(cli, tmp_path):
    src = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(smooth(32, 40)).save(src)
    outs = {}
    for p in ("fp32", "bf16"):
        out = tmp_path / f"{p}.png"
        code, _, err = cli("upscale", "--x2", str(src), "-o", str(out), "--precision", p, "-q")
        assert code == 0, err
        outs[p] = np.asarray(Image.open(out)).astype(int)
    assert 0 < np.abs(outs["fp32"] - outs["bf16"]).max() <= 2


def test_cli_precision_is_for_the_torch_backend(cli, tmp_path):
    src = tmp_path / "in.png"
    noise_image(16, 16).save(src)
    code, _, err = cli("upscale", "--x2", str(src), "-o", str(tmp_path / "o.png"), "--backend", "onnx",
                       "--precision", "bf16")
    assert code == 2 and "--precision bf16 is for --backend torch" in err, err


def test_bf16_reads_out_networks_without_a_tail(tmp_path):
    """A network read out whole (RLFN: no `forward_tail`) under bfloat16:
    its output comes back to float32 before the read-out, tiled = untiled."""
    from conftest import randomize
    from imgrestore import tasks, weights
    from imgrestore.models.rlfn import RLFN

    model = randomize(RLFN(scale=2, channels=8, blocks=2, esa=4), std=0.05)
    path = tmp_path / "t.safetensors"
    weights.save(path, model.state_dict(), arch="rlfn", config=model.config(), task="upscale", scale=2)
    px = smooth(40, 32, seed=3)
    a = tasks.load(path, task="upscale", precision="fp32").run_pixels(px)
    b = tasks.load(path, task="upscale", precision="bf16")
    yb = b.run_pixels(px)
    assert yb.dtype == np.uint8 and np.abs(a.astype(int) - yb).max() <= 3
    assert np.array_equal(b.run_pixels(px, tile=16), yb)
