"""Issue #18: the CLI as people coming from Real-ESRGAN and ImageMagick
expect it. One test (or more) per bullet, on tiny generated images."""

from __future__ import annotations

import io as _io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image, tree_digest

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def two(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    noise_image(10, 12).save(d / "a.png")
    noise_image(9, 7, seed=1).save(d / "b.png")
    return d


# ---------------------------------------------------------------- output handling

def test_output_with_an_image_extension_is_a_file_and_several_inputs_into_it_a_usage_error(cli, tiny_x2, two,
                                                                                           tmp_path):
    code, _, err = cli("upscale", "--model", tiny_x2, two / "a.png", two / "b.png", "-o", tmp_path / "one.png")
    assert code == 2 and "one file" in err, err
    assert not (tmp_path / "one.png").exists()  # no folder named one.png
    code, _, err = cli("upscale", "--model", tiny_x2, two, "-o", tmp_path / "one.png")
    assert code == 2 and not (tmp_path / "one.png").exists(), err
    code, _, err = cli("upscale", "--model", tiny_x2, two / "a.png", "-o", tmp_path / "one.png")
    assert code == 0 and (tmp_path / "one.png").is_file(), err


def test_output_without_an_extension_is_a_folder_even_for_one_input(cli, tiny_x2, two, tmp_path):
    code, _, err = cli("upscale", "--model", tiny_x2, two / "a.png", "-o", tmp_path / "results")
    assert code == 0, err
    assert (tmp_path / "results").is_dir() and (tmp_path / "results" / "a.png").is_file()
    # an existing file without an image extension is not silently written over
    (tmp_path / "notes").write_text("mine")
    code, _, err = cli("upscale", "--model", tiny_x2, two / "a.png", "-o", tmp_path / "notes")
    assert code == 2 and (tmp_path / "notes").read_text() == "mine", err


def _run_on_a_terminal(args: list[str], stdin: bytes | None = None) -> tuple[int, bytes]:
    """The CLI in a subprocess whose stdout is a pseudo-terminal; (exit
    status, what reached the terminal)."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "imgrestore", *args], stdin=subprocess.PIPE,
                                stdout=slave, stderr=subprocess.PIPE, env=_env())
        os.close(slave)
        _, err = proc.communicate(stdin, timeout=120)
        seen = b""
        try:
            while True:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                seen += chunk
        except OSError:
            pass
        return proc.returncode, seen + err
    finally:
        os.close(master)


def test_image_bytes_to_a_terminal_are_refused(tiny_x2, two):
    code, text = _run_on_a_terminal(["upscale", "--model", str(tiny_x2), str(two / "a.png"), "-o", "-"])
    assert code == 2 and b"terminal" in text and b"IHDR" not in text, text
    code, text = _run_on_a_terminal(["upscale", "--model", str(tiny_x2), "-"], (two / "a.png").read_bytes())
    assert code == 2 and b"terminal" in text and b"IHDR" not in text, text


def test_extension_and_format_never_disagree(cli, tiny_x2, two, tmp_path):
    a = two / "a.png"
    for args in (["-o", tmp_path / "out.webp", "--format", "png"], ["--format", "jpg", "-o", tmp_path / "x.png"]):
        code, _, err = cli("upscale", "--model", tiny_x2, a, *args)
        assert code == 2 and "disagrees" in err, err
    for ext in ("gif", "bmp"):
        code, _, err = cli("upscale", "--model", tiny_x2, a, "-o", tmp_path / f"x.{ext}")
        assert code == 2 and f"cannot write {ext.upper()}" in err, err
        assert not (tmp_path / f"x.{ext}").exists()
    # agreeing, and the extension alone, decide the format
    code, _, err = cli("upscale", "--model", tiny_x2, a, "-o", tmp_path / "y.JPEG", "--format", "jpeg")
    assert code == 0 and Image.open(tmp_path / "y.JPEG").format == "JPEG", err
    code, _, err = cli("upscale", "--model", tiny_x2, a, "-o", tmp_path / "z.tiff")
    assert code == 0 and Image.open(tmp_path / "z.tiff").format == "TIFF", err


@pytest.mark.parametrize("spelling, fmt", [("jpeg", "JPEG"), ("JPG", "JPEG"), ("PNG", "PNG"), ("Tif", "TIFF"),
                                           ("webp", "WEBP")])
def test_format_spellings(cli, tiny_x2, two, tmp_path, spelling, fmt):
    code, _, err = cli("upscale", "--model", tiny_x2, two, "-o", tmp_path / "o", "--format", spelling)
    assert code == 0, err
    outs = sorted((tmp_path / "o").iterdir())
    assert len(outs) == 2 and all(Image.open(p).format == fmt for p in outs)


def test_format_auto_and_same_keep_the_input_format_and_its_spelling(cli, tiny_x2, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    noise_image(8, 8).save(d / "a.jpeg", format="JPEG")
    noise_image(8, 8, seed=1).save(d / "b.JPG", format="JPEG")
    noise_image(8, 8, seed=2).save(d / "c.tiff", format="TIFF")
    noise_image(8, 8, seed=3).save(d / "d.bmp", format="BMP")  # not writable: png
    noise_image(8, 8, seed=4).save(d / "e.gif", format="GIF")
    for fmt in ("auto", "same"):
        out = tmp_path / f"o-{fmt}"
        code, _, err = cli("upscale", "--model", tiny_x2, d, "-o", out, "--format", fmt)
        assert code == 0, err
        assert sorted(p.name for p in out.iterdir()) == ["a.jpeg", "b.JPG", "c.tiff", "d.png", "e.png"]
        assert [Image.open(out / n).format for n in ("a.jpeg", "b.JPG", "c.tiff", "d.png")] == [
            "JPEG", "JPEG", "TIFF", "PNG"]
    # next to the input, too (the default is auto)
    code, _, err = cli("upscale", "--model", tiny_x2, d / "b.JPG", "--suffix", "_big")
    assert code == 0 and (d / "b_big.JPG").exists(), err
    # an explicit other format takes that format's extension
    code, _, err = cli("upscale", "--model", tiny_x2, d / "a.jpeg", "--suffix", "_big", "--format", "png")
    assert code == 0 and (d / "a_big.png").exists(), err


def test_jpeg_on_stdin_gives_jpeg_on_stdout(cli, tiny_x2):
    buf = _io.BytesIO()
    noise_image(8, 10).save(buf, format="JPEG")
    code, out, err = cli("upscale", "--model", tiny_x2, "-", input=buf.getvalue())
    assert code == 0, err
    im = Image.open(_io.BytesIO(out))
    assert im.format == "JPEG" and im.size == (20, 16)
    code, out, err = cli("upscale", "--model", tiny_x2, "-", "--format", "png", input=buf.getvalue())
    assert code == 0 and Image.open(_io.BytesIO(out)).format == "PNG", err


def test_default_output_name_says_which_model_made_it(cli, tiny_x2, tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    noise_image(8, 8).save(d / "photo.png")
    code, _, err = cli("upscale", "--x2", d / "photo.png")  # the shipped default model
    assert code == 0 and (d / "photo_x2.png").exists(), err
    # the README's prune-then-upscale example: another model is not "output exists"
    code, _, err = cli("upscale", "--model", tiny_x2, d / "photo.png")
    assert code == 0 and "1 done" in err and (d / "photo_x2_tiny-x2.png").exists(), err
    code, _, err = cli("upscale", "--model", "upscale-x2", d / "photo.png")  # named, but the default
    assert code == 0 and "1 skipped" in err, err


# ---------------------------------------------------------------- options people bring with them

def test_real_esrgan_short_flags(cli, tiny_x2, two, tmp_path):
    code, _, err = cli("upscale", "-n", tiny_x2, "-t", 4, "-i", two / "a.png", "-i", two / "b.png",
                       "-o", tmp_path / "o")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.png"]
    code, _, err = cli("upscale", "-n", tiny_x2, "-i", two / "a.png", "--suffix", "_big")
    assert code == 0 and (two / "a_big.png").exists(), err
    code, _, err = cli("upscale", "-n", tiny_x2)
    assert code == 2 and "no INPUTS" in err, err


@pytest.mark.parametrize("flags", [["--x2", "--x4"], ["--x2", "--scale", "3"], ["--x4", "--x3"]])
def test_conflicting_scale_flags_are_a_usage_error(cli, tiny_x2, two, flags):
    before = tree_digest(two)
    code, _, err = cli("upscale", *flags, two / "a.png")
    assert code == 2 and "different scales" in err, err
    assert tree_digest(two) == before


def test_the_same_scale_twice_is_fine(cli, tiny_x2, two):
    code, _, err = cli("upscale", "--x2", "--scale", "2", "--model", tiny_x2, two / "a.png")
    assert code == 0, err


# ---------------------------------------------------------------- set-up: HEIC input

def test_heic_phone_photos_are_read(cli, tiny_x2, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    d = tmp_path / "phone"
    d.mkdir()
    src = np.asarray(noise_image(12, 16))
    heif = pillow_heif.from_bytes(mode="RGB", size=(16, 12), data=src.tobytes())
    heif.save(d / "IMG_0001.HEIC", quality=90)
    heif.save(d / "IMG_0002.heif", quality=90)
    code, _, err = cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "o")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["IMG_0001.png", "IMG_0002.png"]
    with Image.open(tmp_path / "o" / "IMG_0001.png") as im:
        assert im.size == (32, 24)


# ---------------------------------------------------------------- colorize

def test_colorize_says_once_that_colour_photos_lose_their_colours(cli, tiny_color, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        noise_image(16, 16, seed=i).save(d / f"colour{i}.png")
    noise_image(16, 16, "L").save(d / "gray.png")
    Image.fromarray(np.repeat(np.asarray(noise_image(16, 16, "L"))[..., None], 3, axis=2)).save(d / "rgbgray.png")
    code, out, err = cli("colorize", "--model", tiny_color, d, "-o", tmp_path / "o", "--render-size", 32)
    assert code == 0, err
    assert err.count("colours were replaced") == 1 and "3 inputs" in err, err
    code, out, err = cli("colorize", "--model", tiny_color, d, "-o", tmp_path / "o2", "--json", "-q")
    records = [json.loads(line) for line in out.decode().splitlines()]
    noted = sorted(Path(r["input"]).name for r in records if any("replaced" in n for n in r.get("notes", [])))
    assert noted == ["colour0.png", "colour1.png", "colour2.png"] and err == ""


def test_colorize_gray_reference_gets_a_note(cli, tiny_color, tmp_path):
    noise_image(16, 16, "L").save(tmp_path / "ref.png")
    noise_image(16, 16, "L", seed=3).save(tmp_path / "old.png")
    code, _, err = cli("colorize", "--model", tiny_color, tmp_path / "old.png", "--reference", tmp_path / "ref.png",
                       "--render-size", 32)
    assert code == 0 and "reference is a gray photo" in err and "replaced" not in err, err
    noise_image(16, 16, seed=4).save(tmp_path / "cref.png")
    code, _, err = cli("colorize", "--model", tiny_color, tmp_path / "old.png", "--reference",
                       tmp_path / "cref.png", "--render-size", 32, "--overwrite")
    assert code == 0 and "reference" not in err, err


# ---------------------------------------------------------------- progress and reports

def test_progress_shows_file_rate_and_eta_and_the_summary_the_time(cli, tiny_x2, two, tmp_path, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: stderr is a terminal
    code, _, err = cli("upscale", "--model", tiny_x2, two, "-o", tmp_path / "o")
    assert code == 0, err
    assert "b.png" in err and "MP/s" in err and "img/s" in err and "ETA" in err, err
    monkeypatch.delenv("TTY_COMPATIBLE")
    code, _, err = cli("upscale", "--model", tiny_x2, two, "-o", tmp_path / "o2")
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("2 done, 0 skipped, 0 failed in ") and "output MP/s" in summary, err
    assert "img/s" not in err  # no progress bar when stderr is not a terminal


def test_a_resumed_run_says_skipped_once(cli, tiny_x2, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(5):
        noise_image(6, 6, seed=i).save(d / f"p{i}.png")
    assert cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "o")[0] == 0
    (tmp_path / "o" / "p3.png").unlink()
    code, _, err = cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "o")
    assert code == 0, err
    assert "skipped 4 finished outputs" in err and err.count("skipped") == 2, err  # the line and the summary
    assert "1 done, 4 skipped" in err


# ---------------------------------------------------------------- Python API

def test_api_colorize_takes_the_command_options(tiny_color, tmp_path):
    import imgrestore

    gray = np.asarray(noise_image(16, 16, "L"))
    ref = noise_image(16, 16, seed=5)
    ref.save(tmp_path / "ref.png")
    plain = imgrestore.load(tiny_color, device="cpu", render_size=32)
    assert plain.render_size == 32
    muted = imgrestore.load(tiny_color, device="cpu", saturation=0.0, render_size=32)
    out = muted(gray)
    assert out.shape == (16, 16, 3) and int(np.ptp(out.astype(int) - out[..., :1], axis=None)) <= 2  # gray
    for reference in (tmp_path / "ref.png", str(tmp_path / "ref.png"), ref, np.asarray(ref)):
        r = imgrestore.load(tiny_color, device="cpu", reference=reference, render_size=32)
        assert r.reference_l is not None and r(gray).shape == (16, 16, 3)
    with pytest.raises(ValueError):
        imgrestore.load(tiny_color, device="cpu", saturation=9)


def test_prune_and_bench_tables_stay_whole_off_a_terminal(cli, tiny_x2, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        noise_image(128, 128, seed=i).save(data / f"ok{i}.png")
    code, out, err = cli("prune", tiny_x2, "--ratio", "0.5", "--data", data, "--criterion", "l1",
                         "--no-compensate", "--steps", 2, "-o", tmp_path / "p.safetensors")
    assert code == 0, err
    text = out.decode()
    assert "…" not in text and "PSNR vs unpruned" in text and "fine-tuning steps" in text, text
    assert ".finetune" not in err and "metrics {" not in err, err
    code, out, err = cli("bench", "upscale", "--model", tiny_x2, "--x2", "--no-speed", data)
    assert code == 0, err
    text = out.decode()
    assert "…" not in text and "bicubic SSIM" in text and "gain dB" in text, text


# ---------------------------------------------------------------- any output scale or size

@pytest.mark.parametrize("args, size, label", [
    (["-s", "3.5"], (42, 35), "_x3.5"),
    (["--outscale", "150%"], (18, 15), "_x1.5"),
    (["--width", "30"], (30, 25), "_w30"),
    (["--height", "7"], (8, 7), "_h7"),
    (["--width", "20", "--height", "9"], (20, 9), "_w20_h9"),
])
def test_any_output_scale_or_size(cli, tmp_path, args, size, label):
    d = tmp_path / "p"
    d.mkdir()
    noise_image(10, 12).save(d / "a.png")
    code, out, err = cli("upscale", *args, d / "a.png", "--json")
    assert code == 0, err
    rec = json.loads(out)
    with Image.open(d / f"a{label}.png") as im:
        assert im.size == size
    r = rec["resize"]
    assert rec["size_out"] == list(size) and r["resized_to"] == list(size) and r["filter"] == "lanczos"
    factor = max(size[0] / 12, size[1] / 10)
    # the smallest trained scale at or above the request
    assert r["model_scale"] == next(s for s in (2, 3, 4) if s >= factor - 1e-9)
    assert r["model"] == f"upscale-x{r['model_scale']}"


def test_above_x4_is_x4_then_a_resize_with_a_note(cli, tmp_path):
    noise_image(6, 5).save(tmp_path / "a.png")
    code, out, err = cli("upscale", "-s", "6", tmp_path / "a.png", "-o", tmp_path / "big.png", "--json")
    assert code == 0, err
    assert json.loads(out)["resize"]["model_scale"] == 4 and Image.open(tmp_path / "big.png").size == (30, 36)
    assert err.count("above the model's x4") == 1, err


def test_outscale_usage_errors(cli, tiny_x2, tmp_path):
    noise_image(6, 5).save(tmp_path / "a.png")
    for args in (["-s", "big"], ["-s", "0"], ["-s", "2", "--width", "10"]):
        code, _, err = cli("upscale", "--model", tiny_x2, *args, tmp_path / "a.png")
        assert code == 2, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_chosen_model_is_kept_and_the_rest_resized(cli, tiny_x2, tmp_path):
    noise_image(6, 5).save(tmp_path / "a.png")
    code, out, err = cli("upscale", "-n", tiny_x2, "-s", "1.5", tmp_path / "a.png", "--json", "-o", tmp_path / "o.png")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["resize"]["model"] == "tiny-x2" and rec["size_out"] == [8, 9]


def test_band_by_band_resize_equals_the_whole_image_one():
    from imgrestore.resize import resize_array, resize_bands

    rng = np.random.default_rng(0)
    for h, w, oh, ow, step in [(300, 40, 263, 35, 37), (90, 30, 360, 120, 16), (257, 20, 64, 5, 100)]:
        for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
            a = rng.integers(0, top + 1, (h, w, 3)).astype(dtype)
            whole = np.stack([np.asarray(Image.fromarray(a[..., k].astype(np.float32), "F").resize(
                (ow, oh), Image.LANCZOS)) for k in range(3)], -1)
            whole = np.clip(np.rint(whole), 0, top)
            bands = list(resize_bands(((y, a[y:y + step]) for y in range(0, h, step)), h, w, oh, ow, band_rows=50))
            got = np.concatenate([b for _, b in bands])
            assert got.dtype == dtype and got.shape == (oh, ow, 3)
            assert np.abs(got.astype(np.int64) - whole).max() <= max(1, top // 255), (h, oh, dtype)
            assert max(len(b) for _, b in bands) <= 50
            assert np.abs(resize_array(a, oh, ow).astype(np.int64) - whole).max() <= max(1, top // 255)


# ---------------------------------------------------------------- issue #19: PNG compression level

def _smooth_png(path: Path, h: int = 30, w: int = 40) -> None:
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 6, y * 8, (x + y) * 3], axis=-1) % 256
    Image.fromarray(a.astype(np.uint8)).save(path)


@pytest.mark.parametrize("streamed", [False, True])
def test_png_level_reaches_the_png_writer_whole_and_streamed(cli, tiny_x2, tmp_path, monkeypatch, streamed):
    from imgrestore import io as imgio
    from imgrestore import pipeline

    _smooth_png(tmp_path / "a.png")
    levels = []
    if streamed:
        monkeypatch.setattr(pipeline, "STREAM_MIN_PIXELS", 1)
        real = imgio.PngStream

        def spy(*args):
            levels.append(args[-1])
            return real(*args)

        monkeypatch.setattr(imgio, "PngStream", spy)
    sizes, pixels = {}, {}
    for level in ("0", "9", None):
        out = tmp_path / f"out{level}.png"
        extra = ["--png-level", level] if level else []
        code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / "a.png", "-o", out, *extra)
        assert code == 0, err
        sizes[level] = out.stat().st_size
        with Image.open(out) as im:
            pixels[level] = np.asarray(im)
    if streamed:
        assert levels == [0, 9, None]  # None: the fast writer
    assert sizes["0"] >= pixels["0"].size > sizes["9"]  # level 0 stores the pixels
    assert sizes[None] < sizes["0"]  # the default compresses
    assert np.array_equal(pixels["0"], pixels["9"]) and np.array_equal(pixels["0"], pixels[None])


@pytest.mark.parametrize("bad", ["10", "-1", "fast"])
def test_png_level_out_of_range_is_a_usage_error(cli, tiny_x2, tmp_path, bad):
    _smooth_png(tmp_path / "a.png")
    code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / "a.png", "--png-level", bad)
    assert code == 2 and "--png-level" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_weights_and_graph_outputs_must_be_named_for_what_they_are(cli, tmp_path, tiny_x2):
    """prune wrote safetensors named .png, export an ONNX graph named .png."""
    code, _, err = cli("prune", tiny_x2, "--ratio", "0.5", "-o", tmp_path / "p.png")
    assert code == 2 and ".safetensors" in err and not (tmp_path / "p.png").exists()
    code, _, err = cli("export", tiny_x2, "-o", tmp_path / "g.png")
    assert code == 2 and ".onnx" in err and not (tmp_path / "g.png").exists()


def test_an_empty_suffix_says_why_it_is_refused(cli, tmp_path, tiny_x2):
    from conftest import noise_image

    noise_image(8, 8).save(tmp_path / "a.png")
    code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / "a.png", "--suffix", "")
    assert code == 2 and "input's name" in err and "NUL" not in err


def test_transparency_dropped_for_a_jpeg_output_is_noted(cli, tmp_path, tiny_x2):
    import numpy as np
    from PIL import Image

    px = np.full((8, 8, 4), 200, np.uint8)
    px[..., 3] = 255
    Image.fromarray(px).save(tmp_path / "opaque.png")
    px[:4, :, 3] = 0
    Image.fromarray(px).save(tmp_path / "clear.png")
    code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / "clear.png", tmp_path / "opaque.png",
                       "--format", "jpg", "-o", tmp_path / "out")
    assert code == 0, err
    notes = [l for l in err.splitlines() if "transparency dropped" in l]
    assert len(notes) == 1 and "clear.png" in notes[0]
