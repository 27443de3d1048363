"""The adversarial corpus (issue #17): inputs, names, weights and settings an
adversarial user tried, each of which once lost or corrupted an output, or
crashed, while the run said all was well. One test per defect, run through
every processing command where the defect is the command's; each failed
before its fix."""

from __future__ import annotations

import io as _io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import noise_image, tiny_sr_file, tree_digest
from imgrestore import io as imgio
from imgrestore import load, weights
from imgrestore.tasks import TASKS
from imgrestore.pipeline import default_suffix

COMMANDS = list(TASKS)


def _scale(model) -> int:
    return load(model).scale


def _env():
    root = Path(__file__).resolve().parent.parent
    return {**os.environ, "PYTHONPATH": str(root)}


def _opened(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()  # a corrupt file fails here
        return im.copy()


# ---------------------------------------------------------------- 1. TIFF in, TIFF out

@pytest.mark.parametrize("command", COMMANDS)
def test_01_tiff_layout_tags_are_not_carried(cli, tiny_model, tmp_path, command):
    """A TIFF's own layout tags (size, strips, bits) must not ride along as
    EXIF into the output: it read as another size, or not at all."""
    model = tiny_model(command)
    d = tmp_path / "in"
    d.mkdir()
    noise_image(30, 40).save(d / "rgb.tif")
    Image.fromarray(np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50).save(d / "gray16.tif")
    Image.fromarray((np.arange(30 * 40, dtype=np.float32).reshape(30, 40) / 1200)).save(d / "float.tif")
    noise_image(30, 40, "L").save(d / "gray8.tif")
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    noise_image(30, 40).save(d / "camera.tif", exif=exif.tobytes())
    out = tmp_path / "out"
    code, _, err = cli(command, "--model", model, d, "-o", out, "-q")
    assert code == 0, err
    s = _scale(model)
    for name in ("rgb", "gray16", "float", "gray8", "camera"):
        im = _opened(out / f"{name}.tif")
        assert im.size == (40 * s, 30 * s), name
    assert imgio.decode((out / "gray16.tif").read_bytes()).bits == 16
    with Image.open(out / "camera.tif") as im:
        assert im.getexif().get(0x010F) == "Camera maker"


# ---------------------------------------------------------------- 2. output-name collisions

@pytest.mark.parametrize("command", COMMANDS)
def test_02_two_inputs_one_output_name_is_refused(cli, tiny_model, tmp_path, command):
    model = tiny_model(command)
    d = tmp_path / "in"
    d.mkdir()
    noise_image(8, 8, seed=1).save(d / "a.png")
    noise_image(8, 8, seed=2).save(d / "a.bmp")
    code, _, err = cli(command, "--model", model, d)
    assert code == 2 and "a.png" in err and "a.bmp" in err, err
    assert sorted(p.name for p in d.iterdir()) == ["a.bmp", "a.png"]  # nothing written
    # --format png makes a.jpg collide with a.png
    (d / "a.bmp").unlink()
    noise_image(8, 8, seed=3).save(d / "a.jpg")
    code, _, err = cli(command, "--model", model, d, "-o", tmp_path / "out", "--format", "png")
    assert code == 2 and "a.jpg" in err and "a.png" in err
    assert not (tmp_path / "out").exists()
    # ... and refused in every shard alike, before any work
    code, _, err = cli(command, "--model", model, d, "-o", tmp_path / "out", "--format", "png", "--shard", "1/2")
    assert code == 2


def test_02_explicit_files_mirror_their_common_parent(cli, tiny_x2, tmp_path):
    """`find x -name '*.png' | xargs imgrestore upscale --x2 -o big/`."""
    x = tmp_path / "x"
    for sub, seed in (("sub1", 1), ("sub2", 2)):
        (x / sub).mkdir(parents=True)
        noise_image(8, 8, seed=seed).save(x / sub / "p.png")
    out = tmp_path / "big"
    code, _, err = cli("upscale", "--model", tiny_x2, x / "sub1" / "p.png", x / "sub2" / "p.png", "-o", out)
    assert code == 0 and "another run" not in err, err
    a, b = (np.asarray(_opened(out / sub / "p.png")) for sub in ("sub1", "sub2"))
    assert a.shape == b.shape == (16, 16, 3) and not np.array_equal(a, b)


# ---------------------------------------------------------------- 3. stdout cut short

def test_03_short_write_to_stdout_is_an_error(tiny_x2, tmp_path):
    src = tmp_path / "big.png"
    noise_image(200, 200).save(src)
    dst = tmp_path / "out.png"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    with open(src, "rb") as fin, open(dst, "wb") as fout:
        proc = subprocess.run([sys.executable, "-m", "imgrestore", "upscale", "--model", str(tiny_x2),
                               "--threads", "1", "-"], stdin=fin, stdout=fout, stderr=subprocess.PIPE,
                              env=_env(), preexec_fn=limit, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "cannot write to stdout" in err and "0 done" in err


# ---------------------------------------------------------------- 4. names that are not UTF-8

@pytest.mark.skipif(sys.platform == "darwin", reason="the file system wants UTF-8 names")
def test_04_shard_and_messages_take_any_file_name(cli, tiny_x2, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    noise_image(8, 8).save(d / os.fsdecode(b"caf\xe9.png"))
    noise_image(8, 8).save(d / "ok.png")
    (d / os.fsdecode(b"bad\xff\n\x1b[31m.png")).write_bytes(b"not an image")
    for k in (1, 2):
        code, out, err = cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "out", "--shard", f"{k}/2",
                             "--json")
        assert code in (0, 1) and "Traceback" not in err, err
        for line in err.splitlines():
            assert "\x1b" not in line
    outputs = sorted(os.fsencode(p.name) for p in (tmp_path / "out").iterdir())
    assert outputs == [b"caf\xe9.png", b"ok.png"]
    code, _, err = cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "out2")
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "\\xff\\n\\x1b[31m.png" in errors[0], err


# ---------------------------------------------------------------- 6. our outputs are not inputs

@pytest.mark.parametrize("command", COMMANDS)
def test_06_earlier_outputs_are_not_taken_again(cli, tiny_model, tmp_path, command):
    model = tiny_model(command)
    d = tmp_path / "photos"
    d.mkdir()
    noise_image(8, 8).save(d / "a.png")
    restorer = load(model)
    suffix = default_suffix(TASKS[command].suffix(restorer), restorer.name)  # _x2_tiny-x2 (#18)
    for _ in range(3):
        code, _, err = cli(command, "--model", model, d)
        assert code == 0, err
    assert sorted(p.name for p in d.iterdir()) == sorted(["a.png", f"a{suffix}.png"])
    assert "left out 1 file" in err
    # the output folder inside the input folder is not descended into
    for _ in range(3):
        code, _, err = cli(command, "--model", model, "-r", d, "-o", d / "big")
        assert code == 0, err
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) == sorted(
        ["a.png", f"a{suffix}.png", "big/a.png"])
    # named explicitly, an output is processed like any file
    code, _, err = cli(command, "--model", model, d / f"a{suffix}.png")
    assert code == 0 and (d / f"a{suffix}{suffix}.png").exists()


def test_06_outputs_of_other_scales_sizes_and_models_are_not_taken_again(cli, tiny_x2, tmp_path):
    """-s 3.5 writes photo_x3.5, --width 20 photo_w20, another model
    photo_x2_other: a later folder scan by any command took them as new
    photos (only _x2/_x3/_x4, _color and this run's suffix were known)."""
    d = tmp_path / "photos"
    d.mkdir()
    noise_image(8, 8).save(d / "a.png")
    for name in ("a_x3.5", "a_w20", "a_h30", "a_w20_h30", "a_x2_tiny-x2", "a_x4_x4-small", "a_color_mine",
                 "a_denoised", "a_deblocked_x"):
        noise_image(8, 8).save(d / f"{name}.png")
    for name in ("box_x", "a_xmas", "tax_x2b", "a_width"):  # not our names
        noise_image(8, 8).save(d / f"{name}.png")
    code, _, err = cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "a_width.png", "a_xmas.png",
                                                                     "box_x.png", "tax_x2b.png"]
    assert "left out 9 files" in err


def test_06_overwrite_never_replaces_another_input(cli, tiny_x2, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    noise_image(8, 8, seed=1).save(d / "a.png")
    noise_image(8, 8, seed=2).save(d / "a_x2.png")
    before = tree_digest(d)
    code, _, err = cli("upscale", "--model", tiny_x2, d / "a.png", d / "a_x2.png", "--overwrite", "--suffix", "_x2")
    assert code == 2 and "a_x2.png" in err
    assert tree_digest(d) == before


# ---------------------------------------------------------------- 7. rotation of 16-bit colour

@pytest.mark.parametrize("orientation", range(1, 9))
def test_07_orientation_of_16_bit_colour(tmp_path, orientation):
    rgb8 = np.asarray(noise_image(4, 6, seed=orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    b8 = _io.BytesIO()
    Image.fromarray(rgb8).save(b8, format="PNG", exif=exif.tobytes())
    want = imgio.decode(b8.getvalue()).pixels
    b16 = _io.BytesIO()
    imgio.encode(imgio.Picture(rgb8.astype(np.uint16) * 257, exif=exif.tobytes()), "png", fileobj=b16)
    got = imgio.decode(b16.getvalue())
    assert got.bits == 16
    np.testing.assert_array_equal(got.pixels // 257, want)
    with Image.open(_io.BytesIO(b8.getvalue())) as im:
        from PIL import ImageOps

        np.testing.assert_array_equal(want, np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


# ---------------------------------------------------------------- 11. a suffix that is a path

@pytest.mark.parametrize("suffix", ["/x", "a/b", "", "\\x"])
def test_11_suffix_with_a_separator_is_a_usage_error(cli, tiny_x2, tmp_path, suffix):
    noise_image(8, 8).save(tmp_path / "a.png")
    code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / "a.png", "--suffix", suffix)
    assert code == 2 and "--suffix" in err and "Traceback" not in err


# ---------------------------------------------------------------- 12. deep and float pixels

@pytest.mark.parametrize("command", COMMANDS)
def test_12_deep_gray_alpha_and_float_keep_their_range(cli, tiny_model, tmp_path, command):
    model = tiny_model(command)
    d = tmp_path / "in"
    d.mkdir()
    ga = np.dstack([np.full((6, 8), 40000, np.uint16), np.full((6, 8), 30000, np.uint16)])
    with open(d / "ga16.png", "wb") as f:
        png = imgio.PngStream(f, 8, 6, 2, 16)
        png.write(ga)
        png.close()
    Image.fromarray(np.full((6, 8), 200.0, np.float32)).save(d / "f255.tif")
    out = tmp_path / "out"
    code, _, err = cli(command, "--model", model, d, "-o", out, "-q")
    assert code == 0, err
    got = imgio.decode((out / "ga16.png").read_bytes())
    assert got.bits == 16 and got.gray == (command != "colorize") and got.alpha is not None
    assert abs(np.median(got.alpha) - 30000) < 5000  # 16 bits kept (random tiny models blur it)
    src = imgio.decode((d / "f255.tif").read_bytes())
    assert src.bits == 16 and (src.pixels == round(200 / 255 * 65535)).all()  # 200 of 255, not white
    assert any("0..255" in n for n in src.notes)
    f = imgio.decode((out / "f255.tif").read_bytes())
    assert np.median(f.pixels) < 60000


# ---------------------------------------------------------------- 5, 9. weights that lie

def _weights_file(path: Path, tensors: dict, config: dict, scale, task="upscale", arch="ecbsr") -> Path:
    from safetensors.torch import save_file

    meta = {"format": weights.FORMAT, "arch": arch, "config": json.dumps(config), "task": task,
            "scale": str(scale), "provenance": "{}"}
    save_file(tensors, str(path), metadata=meta)
    return path


def _tiny_tensors(tmp_path) -> tuple[dict, dict]:
    wf = weights.read(tiny_sr_file(tmp_path / "base.safetensors", 2))
    return dict(wf.tensors), dict(wf.config)


_PEAK = """
import resource, sys
from imgrestore import load
try:
    load(sys.argv[1])
except Exception as e:
    print(type(e).__name__, e)
print("peak_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.parametrize("field,value", [("channels", 6000), ("blocks", 10**7), ("scale", 1000),
                                         ("channels", 40)])
def test_05_config_bigger_than_its_tensors_is_refused_before_building(tmp_path, field, value):
    """Refused from the numbers and from shapes built on the meta device:
    loading never allocates what the config asks for (6,000 channels once
    took 7 GB before failing)."""
    tensors, config = _tiny_tensors(tmp_path)
    config[field] = value
    bad = _weights_file(tmp_path / "bad.safetensors", tensors, config, value if field == "scale" else 2)
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(bad)], capture_output=True, text=True,
                          env=_env(), timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("WeightsError") and str(bad) in lines[0], proc.stdout + proc.stderr
    assert int(lines[-1].split()[1]) < 900_000  # KB: torch itself, no model


@pytest.mark.parametrize("kind", ["nan", "inf", "int8", "scale-disagrees", "scale-zero", "scale-negative"])
def test_09_weights_that_cannot_be_right_are_refused_at_load(cli, tmp_path, kind):
    tensors, config = _tiny_tensors(tmp_path)
    scale = 2
    name = sorted(tensors)[0]
    if kind == "nan":
        tensors[name] = tensors[name].clone().fill_(float("nan"))
    elif kind == "inf":
        tensors[name] = tensors[name].clone().fill_(float("inf"))
    elif kind == "int8":
        tensors[name] = tensors[name].to(torch.int8)
    else:
        scale = {"scale-disagrees": 3, "scale-zero": 0, "scale-negative": -2}[kind]
    bad = _weights_file(tmp_path / "bad.safetensors", tensors, config, scale)
    noise_image(8, 8).save(tmp_path / "a.png")
    code, _, err = cli("upscale", "--model", bad, tmp_path / "a.png")
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "internal error" not in err
    assert not (tmp_path / "a_x2.png").exists()


# ---------------------------------------------------------------- 10. prune's data and output

def test_10_prune_skips_unreadable_data_and_checks_the_output_first(cli, tiny_x2, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "zero.png").write_bytes(b"")
    (data / "text.jpg").write_text("not an image")
    Image.frombytes("L", (1, 1), b"\0").save(data / "bomb.png")
    raw = (data / "bomb.png").read_bytes()
    # the same PNG declaring 100000 x 100000 pixels
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (data / "bomb.png").write_bytes(raw[:8] + chunk + raw[33:])
    for i in range(2):
        noise_image(128, 128, seed=i).save(data / f"ok{i}.png")
    fast = ("--criterion", "l1", "--no-compensate")
    code, _, err = cli("prune", tiny_x2, "--ratio", "0.5", "--data", data, *fast, "-o", tmp_path / "p.safetensors")
    assert code == 0 and "Traceback" not in err, err
    assert weights.read(tmp_path / "p.safetensors")
    code, _, err = cli("prune", tiny_x2, "--ratio", "0.5", "--data", data, *fast,
                       "-o", tmp_path / "nodir" / "p.safetensors")
    assert code == 2 and "nodir" in err and "kept" not in err, err


# ---------------------------------------------------------------- 8. camera EXIF and ICC into TIFF

@pytest.mark.parametrize("command", COMMANDS)
def test_08_tiff_output_keeps_camera_exif_and_icc(cli, tiny_model, tmp_path, command):
    model = tiny_model(command)
    d = tmp_path / "in"
    d.mkdir()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Maker", "Model"
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x927C], sub[0x829A] = "2020:01:01 00:00:00", b"\x01\x02maker note", (1, 100)
    noise_image(8, 8).save(d / "camera.jpg", exif=exif.tobytes())
    icc = b"\0" * 128  # carried as bytes; never interpreted
    imgio.encode(imgio.Picture(np.asarray(noise_image(8, 8)).astype(np.uint16) * 257, exif=exif.tobytes(),
                               icc=icc), "png", fileobj=open(d / "deep.png", "wb"))
    out = tmp_path / "out"
    code, _, err = cli(command, "--model", model, d, "-o", out, "--format", "tiff")
    assert code == 0, err
    for name in ("camera", "deep"):
        with Image.open(out / f"{name}.tif") as im:
            im.load()
            ex = im.getexif()
            assert ex.get(0x010F) == "Maker", name
            assert ex.get_ifd(0x8769).get(0x9003) == "2020:01:01 00:00:00", name
    deep = imgio.decode((out / "deep.tif").read_bytes())
    assert deep.bits == 16 and deep.icc == icc


# ---------------------------------------------------------------- 13. outputs too large to make

def _declared_png(path: Path, w: int, h: int) -> Path:
    """A tiny PNG whose header declares w x h pixels (its data is one row)."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    raw = zlib.compress(b"\0" * (w * 3 + 1))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_13_output_over_the_output_limit_is_refused_before_any_work(cli, tiny_x2, tmp_path):
    import time

    src = _declared_png(tmp_path / "huge.png", 14000, 14000)  # x2: 784 MP
    t0 = time.perf_counter()
    code, _, err = cli("upscale", "--model", tiny_x2, src, "-o", tmp_path / "out.png")
    assert time.perf_counter() - t0 < 20  # not decoded, not computed
    assert code == 1 and "784 MP" in err and "--max-output-pixels" in err, err
    assert not (tmp_path / "out.png").exists()
    code, _, err = cli("upscale", "--model", tiny_x2, src, "-o", tmp_path / "out.png", "--max-output-pixels", 1000)
    assert code == 1 and "--max-output-pixels" in err
    assert "limit of 1,000 pixels" in err and "0 MP" not in err  # small limits read as pixels, not "0 MP"


def _smooth(h: int, w: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image (gradients and a little noise): it compresses
    as photos do, so the input's own bytes stay small next to the output."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.stack([x / w * 200, y / h * 200, (x + y) / (w + h) * 255], axis=2)
    a += rng.normal(0, 3, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("channels,quality,band", [(3, 95, 37), (3, 80, 100), (1, 95, 64), (4, 50, 1),
                                                   (2, 95, 200)])
def test_13_jpeg_is_written_band_by_band(channels, quality, band):
    """The JPEG writer takes bands (the output is never held whole) and
    writes, byte for byte, what Pillow writes for the whole image with a
    restart marker after every row of blocks. 16-bit bands are written as
    8 bits and alpha is dropped, as `io.encode` does."""
    rng = np.random.default_rng(channels)
    h, w = 300, 203
    a = (rng.integers(0, 30, (h, w, channels)) * 257 + np.linspace(0, 50000, w)[None, :, None]).astype(np.uint16)
    color = channels >= 3
    a8 = imgio._to8(a)[..., :3 if color else 1]
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    icc = b"\0" * 700
    ref = _io.BytesIO()
    Image.fromarray(a8 if color else a8[..., 0]).save(
        ref, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2, optimize=False,
        restart_marker_rows=1, exif=exif.tobytes(), icc_profile=icc)
    out = _io.BytesIO()
    stream = imgio.open_stream("jpg", out, w, h, channels, 16, icc, exif.tobytes(), quality)
    stream.group_rows = 8 * (16 if color and quality < 90 else 8)  # many groups in a small image
    for y in range(0, h, band):
        stream.write(a[y:y + band])
    stream.close()
    assert out.getvalue() == ref.getvalue()
    with Image.open(out) as im:
        assert im.size == (w, h) and im.getexif().get(0x010F) == "Camera maker"
        assert im.info.get("icc_profile") == icc


def test_13_streamed_jpeg_equals_the_whole_one(cli, tiny_x2, tmp_path, monkeypatch):
    from imgrestore import pipeline

    d = tmp_path / "in"
    d.mkdir()
    _smooth(90, 70).save(d / "rgb.jpg", quality=90)
    noise_image(90, 70, "RGBA").save(d / "alpha.png")
    noise_image(90, 70, "L").save(d / "gray.png")
    args = ("upscale", "--model", tiny_x2, d, "--format", "jpg", "--tile", 16)
    assert cli(*args, "-o", tmp_path / "mem")[0] == 0
    monkeypatch.setattr(pipeline, "STREAM_MIN_PIXELS", 1)
    assert cli(*args, "-o", tmp_path / "stream")[0] == 0
    for name in ("rgb.jpg", "alpha.jpg", "gray.jpg"):
        a, b = _opened(tmp_path / "mem" / name), _opened(tmp_path / "stream" / name)
        assert a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b)), name


# the CLI run twice in one child process, on two folders; the peak resident
# memory after each run (the high-water mark so far, in KB) goes to stderr.
# The band writers are on from the first pixel (by default they take
# outputs of 16 MP and more).
_PEAK_RSS = """
import resource, sys
from imgrestore import pipeline
from imgrestore.cli import cli
pipeline.STREAM_MIN_PIXELS = 1
for folder in sys.argv[2:]:
    args = ["upscale", "--model", sys.argv[1], folder, "-o", folder + "-out", "--tile", "128", "-q"]
    try:
        code = cli.main(args, standalone_mode=False)
    except SystemExit as e:
        code = e.code
    sys.stderr.write(f"\\npeak-kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
    assert not code, code
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KB and glibc's malloc settings: Linux")
def test_13_peak_memory_does_not_grow_with_the_output(tmp_path):
    """Memory is bounded by the tile, not the image, for PNG, TIFF and JPEG
    outputs. One process upscales (x4) a folder of small photos, then one of
    photos as wide and 4x as tall (the bands are the same size; there are
    more of them): the second run must raise the peak by far less than
    holding its outputs would. Measured, per extra output pixel: 6.0 bytes
    with the JPEG held whole (its array, Pillow's copy, the encoder's
    buffers), 1.0 with every format in bands (mostly the larger inputs,
    decoded while the one before computes). Large buffers are mapped and
    returned at once (glibc's dynamic threshold off), so the peak counts live
    memory, not what the allocator kept."""
    model = tiny_sr_file(tmp_path / "x4.safetensors", 4)
    folders = []
    for rows in (300, 1200):
        d = tmp_path / f"in{rows}"
        d.mkdir()
        photo = _smooth(rows, 300, seed=rows)
        photo.save(d / "a.png")
        photo.save(d / "b.tif")
        photo.save(d / "c.jpg", quality=90)
        folders.append(str(d))
    env = {**_env(), "MALLOC_MMAP_THRESHOLD_": "262144", "MALLOC_TRIM_THRESHOLD_": "262144"}
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(model), *folders], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    small, large = (int(line.split("=")[1]) * 1024 for line in proc.stderr.split() if line.startswith("peak-kb="))
    for name in ("a.png", "b.tif", "c.jpg"):
        assert _opened(Path(folders[1] + "-out") / name).size == (1200, 4800)
    extra_pixels = 1200 * (4800 - 1200)  # 4.3 MP more output, in each of three formats
    assert large - small < 2.5 * extra_pixels, \
        f"the peak grew {(large - small) / 1e6:.1f} MB for {extra_pixels / 1e6:.1f} MP more output"


@pytest.mark.parametrize("fmt,side", [("jpg", 32_800), ("webp", 8_200)])
def test_14_format_size_limits_are_checked_before_the_work(cli, tiny_x2, tmp_path, fmt, side):
    src = tmp_path / "wide.png"
    noise_image(1, side).save(src)
    code, _, err = cli("upscale", "--model", tiny_x2, src, "-o", tmp_path / f"out.{fmt}", "--tile", 0)
    assert code == 1 and "pixels a side" in err and "--format png" in err, err


# ---------------------------------------------------------------- 14. names, metadata, the API

def test_14_a_255_byte_output_name_is_written(cli, tiny_x2, tmp_path):
    name = "a" * (255 - len("_x2.png")) + ".png"
    noise_image(8, 8).save(tmp_path / name)
    code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / name, "--suffix", "_x2")
    assert code == 0, err
    assert (tmp_path / (name[:-4] + "_x2.png")).exists()
    # the model's name in the default suffix makes it too long: one clear line, no traceback
    code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / name)
    assert code == 1 and "over the 255" in err, err


def test_14_exif_over_64_kb_is_dropped_with_a_note(cli, tiny_x2, tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "M" * 70_000
    noise_image(8, 8).save(tmp_path / "big_exif.png", exif=exif.tobytes())
    code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / "big_exif.png", "-o", tmp_path / "out.jpg")
    assert code == 0 and "EXIF over 64 KB" in err, err
    _opened(tmp_path / "out.jpg")


@pytest.mark.parametrize("spelling", ["same", "dot", "folder", "next-to-input"])
def test_14_the_same_input_twice_is_done_once(cli, tiny_x2, tmp_path, spelling):
    """One file named twice, however spelled, is one job: before, the second
    copy raced the first one's output and was reported "skipped: output
    exists (written by another run)" (and with the names mirrored below
    their common parent, both copies would now be refused as a collision)."""
    d = tmp_path / "in"
    d.mkdir()
    noise_image(8, 8).save(d / "a.png")
    a = d / "a.png"
    inputs = {"same": [a, a], "dot": [a, f"{d}/./a.png"], "folder": [d, a], "next-to-input": [a, a]}[spelling]
    out = [] if spelling == "next-to-input" else ["-o", tmp_path / "o"]
    code, _, err = cli("upscale", "--model", tiny_x2, *inputs, *out)
    assert code == 0 and "another run" not in err and "1 done, 0 skipped" in err, err
    assert "given more than once: processed once" in err
    written = [p for p in tmp_path.rglob("*.png") if p != a]
    assert len(written) == 1, written


# a run killed while it writes: the PNG writer stops for good after its
# first band, so the temporary file is there, half-written, when kill -9 comes
_STUCK_WRITER = """
import time
from imgrestore import io, pipeline
from imgrestore.cli import main
pipeline.STREAM_MIN_PIXELS = 1
write = io.PngStream.write
def stuck(self, band):
    write(self, band)
    self.f.flush()
    time.sleep(600)
io.PngStream.write = stuck
main()
"""


@pytest.mark.skipif(os.name != "posix", reason="kill -9")
def test_14_what_kill_9_leaves_is_swept_by_the_next_run(tiny_x2, tmp_path):
    """`kill -9` leaves a hidden temporary file next to the output; the next
    run that writes in that folder removes it once it is stale (untouched
    for 30 minutes, its process gone). Nothing that is not unmistakably
    ours is touched: the old naming (mkstemp's alone), a live writer's file,
    a fresh one, another user's name without the leading dot."""
    import signal
    import time

    noise_image(40, 40, seed=1).save(tmp_path / "a.png")
    noise_image(40, 40, seed=2).save(tmp_path / "b.png")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _STUCK_WRITER, "upscale", "--model", str(tiny_x2),
                             str(tmp_path / "a.png"), "-o", str(out / "a.png"), "--tile", "8"],
                            env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size for p in out.glob(".*.tmp")):  # a band is in it
            assert time.monotonic() < deadline and proc.poll() is None, "the writer never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (left,) = out.glob(".*.tmp")
    assert not (out / "a.png").exists()
    dead = str(proc.pid)
    old = time.time() - 2 * 3600
    keep = [out / ".a.png.k3j4l5m6.tmp",  # mkstemp's naming alone: not unmistakably ours
            out / f".a.png.imgrestore-{os.getpid()}-abcdefgh.tmp",  # its writer lives
            out / f"notes.imgrestore-{dead}-abcdefgh.tmp"]  # not hidden: not our naming
    for p in keep:
        p.write_bytes(b"x")
        os.utime(p, (old, old))
    fresh = out / f".b.png.imgrestore-{dead}-abcdefgh.tmp"  # too recent to judge
    fresh.write_bytes(b"x")
    keep.append(fresh)
    # a run that writes elsewhere leaves the folder alone; one that writes
    # there sweeps it
    cmd = [sys.executable, "-m", "imgrestore", "upscale", "--model", str(tiny_x2), "-q"]
    os.utime(left, (old, old))
    subprocess.run([*cmd, str(tmp_path / "b.png"), "-o", str(tmp_path / "elsewhere.png")], env=_env(), check=True,
                   timeout=120)
    assert left.exists()
    subprocess.run([*cmd, str(tmp_path / "b.png"), "-o", str(out / "b.png")], env=_env(), check=True, timeout=120)
    assert not left.exists(), "the killed run's temporary file is still there"
    assert all(p.exists() for p in keep), [p.name for p in keep if not p.exists()]
    assert (out / "b.png").exists()


def test_14_corrupt_exif_is_quiet_under_q(tmp_path):
    good = _io.BytesIO()
    noise_image(8, 8).save(good, format="JPEG")
    data = good.getvalue()
    app1 = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\x00\x01"  # 255 entries promised, none there
    import struct

    bad = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    (tmp_path / "bad_exif.jpg").write_bytes(bad)
    proc = subprocess.run([sys.executable, "-m", "imgrestore", "upscale", "--model", "upscale-x2", "-q",
                           str(tmp_path / "bad_exif.jpg")], capture_output=True, text=True, env=_env(),
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_14_scans_take_jfif(cli, tiny_x2, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    noise_image(8, 8).save(d / "a.jfif", format="JPEG")
    code, _, err = cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "a.jpg").exists(), err


def test_14_api_takes_big_endian_and_refuses_empty(tiny_x2):
    up = load(tiny_x2)
    a = (np.arange(8 * 8 * 3, dtype=np.uint16).reshape(8, 8, 3) * 300)
    np.testing.assert_array_equal(up(a.astype(">u2")), up(a))
    with pytest.raises(ValueError, match="empty"):
        up(np.zeros((0, 5, 3), np.uint8))


def test_14_tile_overlap_help_promises_what_tiling_keeps(cli):
    code, out, _ = cli("upscale", "--help")
    assert "within 1/255" in " ".join(out.decode().split())
