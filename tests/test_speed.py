"""Whole-process speed work (issue #19): the whole-command bench, start-up
imports, the torch-free onnx backend."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from imgrestore import catalog
from imgrestore.bench import psnr
from imgrestore.tasks import TASKS, load
from imgrestore.wholebench import photo_like


def test_generated_bench_images_are_not_flat():
    a = photo_like(96, 128, seed=1)
    assert a.shape == (96, 128, 3) and a.dtype == np.uint8
    # a photo's spread of values, detail at the pixel scale, and colour
    assert a.std() > 25
    assert np.abs(np.diff(a.astype(int), axis=1)).mean() > 1
    assert np.abs(a[..., 0].astype(int) - a[..., 1]).mean() > 3
    assert not np.array_equal(a, photo_like(96, 128, seed=2))


def test_bench_whole_times_the_command_next_to_bicubic(cli, tiny_x2):
    code, out, err = cli("bench", "whole", "--x2", "--model", tiny_x2, "--size", "40x30", "--folder", "2x16x12",
                         "--format", "jpeg", "--repeat", "1", "--backend", "torch,torch-fp32", "--json")
    assert code == 0, err
    report = json.loads(out)
    rows = {(r["case"], r["method"]) for r in report["rows"]}
    for case in ("40x30", "folder 2 x 16x12"):
        assert (case, "imgrestore upscale, torch") in rows
        assert (case, "imgrestore upscale, torch-fp32") in rows  # --precision fp32
        assert (case, "network only (tiles, no start-up or IO), torch-fp32") in rows
        assert (case, "Pillow bicubic, whole process (reference)") in rows
        assert (case, "network only (tiles, no start-up or IO), torch") in rows
    big = next(r for r in report["rows"] if r["case"] == "40x30" and r["method"] == "imgrestore upscale, torch")
    assert big["format"] == "jpg" and abs(big["mp_per_s"] * big["seconds"] - 40 * 30 * 4 / 1e6) < 1e-9
    assert report["threads"] == 2 and report["repeat"] == 1


def test_bench_whole_refuses_bad_sizes(cli):
    code, _, err = cli("bench", "whole", "--size", "2000")
    assert code == 2 and "WxH" in err
    code, _, err = cli("bench", "whole", "--format", "gif")
    assert code == 2 and "png, jpg" in err


# ---------------------------------------------------------------- start-up

MODULES_AT_EXIT = """
import atexit, sys
listing = sys.argv.pop(1)
atexit.register(lambda: print(" ".join(sorted(sys.modules)), file=open(listing, "w")))
from imgrestore.cli import cli
cli(prog_name="imgrestore")  # main() would leave by os._exit, past atexit
"""


def modules_used(tmp_path, *args) -> set[str]:
    """The modules a whole `imgrestore` command imported, run in a
    subprocess (what a user's command costs at start-up)."""
    listing = tmp_path / "modules.txt"
    p = subprocess.run([sys.executable, "-c", MODULES_AT_EXIT, str(listing), *map(str, args)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return set(listing.read_text().split())


def test_a_quiet_torch_upscale_imports_no_compiler_and_no_rich(tmp_path, tiny_x2):
    Image.fromarray(photo_like(20, 24)).save(tmp_path / "a.png")
    mods = modules_used(tmp_path, "upscale", "--model", tiny_x2, "-q", tmp_path / "a.png", "-o", tmp_path / "b.jpg")
    assert (tmp_path / "b.jpg").is_file()
    assert "torch" in mods
    # the shape check on the meta device once pulled in torch's compiler (1.3 s)
    assert "torch._dynamo" not in mods
    assert not any(m == "rich" or m.startswith("rich.") for m in mods)


# ---------------------------------------------------------------- the onnx backend

ONNX_TASKS = [name for name, t in TASKS.items() if "onnx" in t.backends]
SHIPPED_ONNX = [m.name for m in catalog.SHIPPED.values() if m.task in ONNX_TASKS]


def _ort():
    return pytest.importorskip("onnxruntime")


# the precision each shipped graph was exported at: int8 where it costs under
# 0.1 dB on CSet14, float where int8 cost more (denoise: 0.15 dB at sigma 25)
SHIPPED_PRECISION = {"upscale-x2": "int8", "upscale-x3": "int8", "upscale-x4": "int8", "denoise": "float32",
                     "deblock": "int8"}


def test_every_upscaler_ships_its_graph():
    assert SHIPPED_ONNX == list(SHIPPED_PRECISION)
    for name in SHIPPED_ONNX:
        assert catalog.resolve(name).with_suffix(".onnx").is_file(), name


def test_shipped_graphs_equal_their_safetensors_twins():
    """Each shipped .onnx is the export (int8 where it is cheap in quality,
    weights/MODEL_CARD.md) of the .safetensors next to it (the SHA-256 it
    records) and gives its image within int8's tolerance: PSNR over 40 dB
    against torch on a photo-like image (the export measured 43.5-53.0 on
    photos, and a 0.01-0.1 dB drop on CSet14), blind and hinted for the
    restorers, tiled as untiled."""
    import torch

    _ort()
    img = photo_like(45, 61, seed=3)
    for name in SHIPPED_ONNX:
        onnx_r = load(name, backend="onnx", threads=1)
        torch_r = load(name, device="cpu")
        src = catalog.resolve(name)
        export = onnx_r.meta["provenance"]["export"]
        assert export["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest(), \
            f"{name}.onnx was not exported from today's {src.name}: run imgrestore export {name} again"
        assert export["precision"] == SHIPPED_PRECISION[name]
        assert onnx_r.scale == torch_r.scale and onnx_r.radius == torch_r.radius
        levels = [None] if onnx_r.level_name is None else [-1.0, 0.5]
        for level in levels:
            x = img[None, :44, :60].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
            feed = {onnx_r.input_name: x}
            args = (torch.from_numpy(x),)
            if level is not None:
                feed[onnx_r.level_name] = np.array([level], np.float32)
                args += (torch.tensor([level]),)
            with torch.inference_mode():
                want = torch_r.model(*args).numpy()
            got = onnx_r.sess.run(None, feed)[0]
            assert got.shape == want.shape and psnr(got, want, peak=1.0) > 40, (name, level)
        for hint in ([None] if onnx_r.level_name is None else [None, 25]):
            if hint is not None:
                onnx_r.set_hint(hint)
                torch_r.set_hint(hint)
            whole = onnx_r.run_pixels(img, tile=None)
            assert psnr(whole, torch_r.run_pixels(img, tile=None)) > 40, name
            assert np.abs(onnx_r.run_pixels(img, tile=16).astype(int) - whole).max() <= 1, name


def test_onnx_tiles_equal_the_whole_image():
    _ort()
    r = load("upscale-x3", backend="onnx", threads=1)
    img = photo_like(37, 50, seed=4)
    whole = r.run_pixels(img, tile=None)
    assert whole.shape == (111, 150, 3)
    for tile in (8, 13, 20):
        assert np.abs(r.run_pixels(img, tile=tile).astype(int) - whole).max() <= 1, tile


def test_onnx_backend_never_imports_torch(tmp_path):
    _ort()
    Image.fromarray(photo_like(20, 24)).save(tmp_path / "a.png")
    rgba = np.dstack([photo_like(12, 10, seed=2), np.full((12, 10), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    mods = modules_used(tmp_path, "upscale", "--x2", "--backend", "onnx", "-q", tmp_path / "a.png",
                        tmp_path / "b.png", "-o", tmp_path / "out")
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.size == (48, 40)
    with Image.open(tmp_path / "out" / "b.png") as im:
        assert im.size == (20, 24) and im.mode == "RGBA"
    assert "onnxruntime" in mods
    assert not any(m == "torch" or m.startswith("torch.") for m in mods)


def test_deblock_and_denoise_run_on_the_onnx_backend_without_torch(tmp_path):
    """deblock --backend onnx reads a JPEG's quality from its tables, as the
    torch backend does, and never imports torch; denoise takes --sigma."""
    _ort()
    Image.fromarray(photo_like(30, 42, seed=6)).save(tmp_path / "a.jpg", quality=15)
    mods = modules_used(tmp_path, "deblock", "--backend", "onnx", "-q", tmp_path / "a.jpg", "-o", tmp_path / "d.png")
    assert not any(m == "torch" or m.startswith("torch.") for m in mods)
    mods = modules_used(tmp_path, "denoise", "--backend", "onnx", "--sigma", 20, "-q", tmp_path / "a.jpg", "-o",
                        tmp_path / "n.png")
    assert not any(m == "torch" or m.startswith("torch.") for m in mods)
    picture = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
    onnx_r = load("deblock", backend="onnx", threads=1)
    torch_r = load("deblock", device="cpu", precision="fp32")
    torch_r.set_hint(15)  # what the tables of a quality-15 JPEG give
    got = np.asarray(Image.open(tmp_path / "d.png")).astype(int)
    assert psnr(got, torch_r.run_pixels(picture)) > 40  # the shipped deblock graph is int8
    assert psnr(got, onnx_r.run_pixels(picture)) < 60  # (blind differs: the quality was read)
    dn = load("denoise", backend="onnx", threads=1, sigma=20)
    assert dn.level == 0.4 and dn.describe()["hint"] == 20
    want = load("denoise", device="cpu", precision="fp32", sigma=20).run_pixels(picture)
    assert np.abs(np.asarray(Image.open(tmp_path / "n.png")).astype(int) - want).max() <= 1  # a float graph


def test_onnx_backend_cli_matches_torch(cli, tmp_path):
    _ort()
    Image.fromarray(photo_like(30, 41, seed=5)).save(tmp_path / "a.png")
    outs = {}
    for backend in ("torch", "onnx"):
        code, _, err = cli("upscale", "--x4", "--backend", backend, tmp_path / "a.png", "-o",
                           tmp_path / f"{backend}.png", "--json", "-q")
        assert code == 0, err
        outs[backend] = np.asarray(Image.open(tmp_path / f"{backend}.png")).astype(int)
    assert outs["torch"].shape == outs["onnx"].shape == (120, 164, 3)
    assert psnr(outs["torch"], outs["onnx"]) > 40  # the shipped graph is int8


def test_onnx_backend_says_what_it_cannot_do(cli, tmp_path, tiny_x2, tiny_color):
    _ort()
    Image.fromarray(photo_like(16, 16)).save(tmp_path / "a.png")
    code, _, err = cli("upscale", "--backend", "onnx", "--model", tiny_x2, tmp_path / "a.png", "-o", tmp_path / "o")
    assert code == 2 and "has no ONNX graph" in err and "imgrestore export" in err, err
    code, _, err = cli("colorize", "--backend", "onnx", "--model", tiny_color, tmp_path / "a.png", "-o",
                       tmp_path / "o")
    assert code == 2 and "--backend torch only" in err, err
    code, _, err = cli("upscale", "--backend", "onnx", "--device", "cuda", tmp_path / "a.png", "-o", tmp_path / "o")
    assert code == 2 and "CPU" in err, err
    # an .onnx given to the torch backend says which backend runs it (it was "header too large")
    code, _, err = cli("upscale", "--model", catalog.weights_dir() / "upscale-x2.onnx", tmp_path / "a.png", "-o",
                       tmp_path / "o")
    assert code == 2 and "--backend onnx" in err and "header" not in err, err


def test_a_weights_files_exported_twin_runs_with_backend_onnx(cli, tmp_path, tiny_x2):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    _ort()
    model = tmp_path / "m.safetensors"
    shutil.copy(tiny_x2, model)
    code, _, err = cli("export", model, "-o", tmp_path / "m.onnx")
    assert code == 0, err
    Image.fromarray(photo_like(19, 23)).save(tmp_path / "a.png")
    for given in (model, tmp_path / "m.onnx"):
        code, _, err = cli("upscale", "--backend", "onnx", "--model", given, tmp_path / "a.png", "-o",
                           tmp_path / f"{given.suffix[1:]}.png")
        assert code == 0, err
    code, _, err = cli("upscale", "--model", model, tmp_path / "a.png", "-o", tmp_path / "torch.png")
    assert code == 0, err
    t = np.asarray(Image.open(tmp_path / "torch.png")).astype(int)
    for name in ("safetensors", "onnx"):
        assert np.abs(np.asarray(Image.open(tmp_path / f"{name}.png")).astype(int) - t).max() <= 1


def test_without_onnxruntime_backend_onnx_is_a_clear_error_and_torch_works(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    Image.fromarray(photo_like(16, 16)).save(tmp_path / "a.png")
    code, _, err = cli("upscale", "--x2", "--backend", "onnx", tmp_path / "a.png", "-o", tmp_path / "o.png")
    assert code == 2 and "imgrestore[onnx]" in err and "--backend torch" in err and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()
    code, _, err = cli("upscale", "--x2", tmp_path / "a.png", "-o", tmp_path / "o.png", "-q")
    assert code == 0 and (tmp_path / "o.png").is_file(), err


def test_bench_whole_compares_the_backends_in_one_run(cli):
    _ort()
    code, out, err = cli("bench", "whole", "--x2", "--backend", "torch,onnx", "--size", "32x24", "--folder", "none",
                         "--format", "png", "--repeat", "1", "--profile", "--json")
    assert code == 0, err
    report = json.loads(out)
    methods = {r["method"] for r in report["rows"]}
    assert {"imgrestore upscale, torch", "imgrestore upscale, onnx", "network only (tiles, no start-up or IO), onnx",
            "network only (tiles, no start-up or IO), torch", "Pillow bicubic, whole process (reference)"} <= methods
    # the profile: one run of each command, its phases adding up to its wall time
    profiles = {p["backend"]: p for p in report["profiles"]}
    assert set(profiles) == {"torch", "onnx"}
    for backend, p in profiles.items():
        assert p["phases"]["network"] > 0 and p["phases"]["load model"] > 0 and p["phases"]["encode"] > 0
        assert abs(sum(p["phases"].values()) - p["wall"]) < 1e-6 or p["phases"]["other"] == 0
    assert profiles["torch"]["imported_torch"] and not profiles["onnx"]["imported_torch"]


def test_bench_whole_refuses_a_model_it_cannot_run_before_timing_anything(cli, tiny_x2):
    """A weights file without its .onnx twin, or a model that does not
    exist, is one clear line and exit 2 (as the command itself) before any command is timed (it
    was a traceback after the first model's timings)."""
    _ort()
    code, out, err = cli("bench", "whole", "--x2", "--model", "upscale-x2", "--model", tiny_x2, "--backend",
                         "torch,onnx", "--size", "32x24", "--folder", "none", "--format", "jpg", "--repeat", "1")
    assert code == 2 and "Traceback" not in err and "timing" not in err
    assert "has no ONNX graph" in err and "imgrestore export" in err
    code, out, err = cli("bench", "whole", "--x2", "--model", "no-such-model", "--size", "32x24", "--folder", "none",
                         "--format", "jpg", "--repeat", "1")
    assert code == 2 and "Traceback" not in err and "no-such-model" in err and "timing" not in err


@pytest.mark.parametrize("command", ["upscale", "colorize", "denoise", "deblock"])
def test_bench_on_a_folder_with_an_unreadable_image_names_it_and_measures_nothing(cli, tmp_path, command):
    """An empty .png among a benchmark's photos was a traceback."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photo_like(40, 48, seed=1)).save(folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not a picture")
    code, out, err = cli("bench", command, "--no-speed", "--threads", "1", folder)
    assert code == 1 and "Traceback" not in err and not out
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert any("empty.png" in l and "empty file" in l for l in lines)
    assert any("text.jpg" in l and "not an image" in l for l in lines)
    assert "nothing measured" in lines[-1]


def test_a_bench_that_would_measure_nothing_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("bench", "upscale", "--no-speed")
    assert code == 2 and "nothing to measure" in err
    code, _, err = cli("bench", "denoise", "--no-speed")
    assert code == 2 and "nothing to measure" in err
    code, _, err = cli("bench", "whole", "--size", "none", "--folder", "none")
    assert code == 2 and "nothing to time" in err
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n")
    code, _, err = cli("bench", "whole", "--photo", tmp_path / "bad.png", "--size", "40x30", "--folder", "none")
    assert code == 1 and "bad.png" in err and "Traceback" not in err


# ---------------------------------------------------------------- tile read-outs

def test_tail_readout_equals_shuffle_then_to_pixels():
    """The upscalers' read-out at the input's resolution (residual, clamp,
    quantize, then the pixel shuffle on the codes) gives the same codes as
    the network's own output through `to_pixels`, in 8 and 16 bits, for
    values far outside [0, 1] and on rounding boundaries."""
    import torch

    from imgrestore.models.sr import shuffle_residual
    from imgrestore.tensors import shuffle_residual_pixels, to_pixels

    g = torch.Generator().manual_seed(0)
    for s in (2, 3, 4):
        x = torch.rand(1, 3, 7, 9, generator=g)
        y = torch.randn(1, 3 * s * s, 7, 9, generator=g) * 0.7
        y[0, :5, 0, :] = (torch.arange(9) + 0.5) / 255 - x[0, 0, 0, :]  # halves of a code value
        y = y.contiguous(memory_format=torch.channels_last)  # as the restorer runs the network
        for dtype in (np.uint8, np.uint16):
            want = to_pixels(shuffle_residual(y, x, s, training=False), dtype)
            out = np.zeros((7 * s, 9 * s + 5, 3), dtype)  # a view into a wider band, as tiles write
            shuffle_residual_pixels(y.clone(), x, s, out[:, 2:2 + 9 * s])
            assert np.array_equal(out[:, 2:2 + 9 * s], want), (s, dtype)
            assert not out[:, :2].any() and not out[:, 2 + 9 * s:].any()


@pytest.mark.parametrize("arch", ["ecbsr", "hasn"])
def test_restorer_tail_readout_equals_the_full_forward(arch):
    """Tiles read out at the input's resolution (`Restorer._run_tail`) give
    exactly the codes of the network's full forward + `to_pixels`, tiled and
    whole, 8 and 16 bits."""
    import torch

    from imgrestore import registry
    from imgrestore.models.reparam import reparameterize
    from imgrestore.restorer import Restorer
    from imgrestore.weights import WeightsFile

    torch.manual_seed(0)
    config = {"ecbsr": dict(scale=3, channels=8, blocks=2), "hasn": dict(scale=2, channels=8, blocks=1)}[arch]
    spec = registry.ARCHS[arch]
    net = reparameterize(spec.build(config)).eval()
    wf = WeightsFile(path=None, arch=arch, config=net.config(), task="upscale", scale=config["scale"], provenance={})
    r = Restorer(net, wf, spec, torch.device("cpu"), "test")
    assert r._tail_readout()
    img = np.asarray(Image.fromarray(photo_like(37, 45, seed=3)))
    for px in (img, img.astype(np.uint16) * 257):
        for tile in (16, None):
            fast = r.run_pixels(px, tile)
            r._tail_readout = lambda: False
            slow = r.run_pixels(px, tile)
            del r._tail_readout
            assert np.array_equal(fast, slow), (px.dtype, tile)


def test_onnx_quantize_into_equals_the_plain_read_out():
    """`onnxrun.quantize_into` (scaled and clamped in place, rounded into
    each channel's view of the band) gives the codes of clip, scale, round,
    as `tensors.to_pixels` computes them."""
    from imgrestore.onnxrun import quantize_into

    rng = np.random.default_rng(0)
    y = (rng.standard_normal((3, 150, 70)) * 0.6 + 0.5).astype(np.float32)
    y[0, 0, :40] = (np.arange(40) + 0.5) / 255  # halves of a code value
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        want = np.rint(np.clip(y, 0, 1) * np.float32(top)).astype(dtype).transpose(1, 2, 0)
        out = np.zeros((150, 80, 3), dtype)
        quantize_into(out[:, 5:75], y.copy())
        assert np.array_equal(out[:, 5:75], want), dtype
        assert not out[:, :5].any() and not out[:, 75:].any()


@pytest.mark.parametrize("task", ["denoise", "deblock"])
def test_bench_whole_times_denoise_and_deblock(cli, tmp_path, task, tiny_denoise, tiny_deblock):
    """bench whole --task: the restoring command on its own kind of input
    (noisy, or a JPEG), at scale 1, next to Pillow decoding and re-encoding
    the same file, and the network alone."""
    model = {"denoise": tiny_denoise, "deblock": tiny_deblock}[task]
    code, out, err = cli("bench", "whole", "--task", task, "--model", model, "--size", "40x30", "--folder",
                         "2x16x12", "--format", "jpg", "--repeat", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["task"] == task and report["scale"] == 1
    rows = {(r["case"], r["method"]): r for r in report["rows"]}
    for case in ("40x30", "folder 2 x 16x12"):
        assert (case, f"imgrestore {task}, torch") in rows
        assert (case, "Pillow decode + encode, whole process (reference)") in rows
        assert (case, "network only (tiles, no start-up or IO), torch") in rows
    big = rows[("40x30", f"imgrestore {task}, torch")]
    assert abs(big["mp_per_s"] * big["seconds"] - 40 * 30 / 1e6) < 1e-9  # output = input size
    code, _, err = cli("bench", "whole", "--task", task, "--x2")
    assert code == 2 and "--task upscale" in err, err
