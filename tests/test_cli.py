"""The CLI end to end on tiny generated images and a tiny random model."""

from __future__ import annotations

import io as _io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image, tree_digest
from imgrestore.tasks import TASKS


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    noise_image(10, 12).save(d / "a.png")
    noise_image(9, 7, seed=1).save(d / "b.jpg", quality=90)
    noise_image(8, 8, seed=2).save(d / "sub" / "c.png")
    return d


def test_single_file_next_to_input(cli, tiny_x2, photos):
    code, out, err = cli("upscale", "--x2", "--model", tiny_x2, photos / "a.png")
    assert code == 0, err
    # a --model other than the default one is named in the output
    with Image.open(photos / "a_x2_tiny-x2.png") as im:
        assert im.size == (24, 20) and im.mode == "RGB"


def test_folder_recursive_mirrors(cli, tiny_x2, photos, tmp_path):
    before = tree_digest(photos)
    code, _, err = cli("upscale", "--model", tiny_x2, "-r", photos, "-o", tmp_path / "out")
    assert code == 0, err
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert names == ["a.png", "b.jpg", "sub", "sub/c.png"]
    assert tree_digest(photos) == before  # inputs untouched
    with Image.open(tmp_path / "out" / "b.jpg") as im:
        assert im.size == (14, 18) and im.format == "JPEG"


def test_format_and_explicit_output_file(cli, tiny_x2, photos, tmp_path):
    code, _, err = cli("upscale", "--model", tiny_x2, photos / "a.png", "-o", tmp_path / "x.webp")
    assert code == 0, err
    assert Image.open(tmp_path / "x.webp").format == "WEBP"
    code, _, err = cli("upscale", "--model", tiny_x2, photos, "-o", tmp_path / "o", "--format", "jpg")
    assert code == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.jpg", "b.jpg"]


def test_stdin_to_stdout(cli, tiny_x2, photos):
    code, out, err = cli("upscale", "--model", tiny_x2, "-", input=(photos / "a.png").read_bytes())
    assert code == 0, err
    im = Image.open(_io.BytesIO(out))
    assert im.size == (24, 20) and im.format == "PNG"


def test_alpha_gray_16bit_exif(cli, tiny_x2, tmp_path):
    d = tmp_path / "kinds"
    d.mkdir()
    noise_image(6, 5, "RGBA").save(d / "alpha.png")
    noise_image(6, 5, "L").save(d / "gray.png")
    Image.fromarray(np.full((6, 5), 40000, np.uint16)).save(d / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    noise_image(6, 10).save(d / "rot.jpg", exif=exif.tobytes())
    code, _, err = cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "o")
    assert code == 0, err
    o = tmp_path / "o"
    with Image.open(o / "alpha.png") as im:
        assert im.mode == "RGBA" and im.size == (10, 12)
    with Image.open(o / "gray.png") as im:
        assert im.mode == "L" and im.size == (10, 12)
    with Image.open(o / "deep.png") as im:
        assert im.mode.startswith("I") and np.asarray(im).max() > 255
    with Image.open(o / "rot.jpg") as im:
        assert im.size == (12, 20)  # rotated upright, then upscaled
        assert im.getexif().get(0x0112) == 1


def test_bad_inputs_batch_goes_on(cli, tiny_x2, photos, tmp_path):
    (photos / "empty.png").write_bytes(b"")
    (photos / "text.png").write_text("not an image")
    data = (photos / "a.png").read_bytes()
    (photos / "trunc.png").write_bytes(data[: len(data) // 2])
    before = tree_digest(photos)
    out = tmp_path / "out"
    code, _, err = cli("upscale", "--model", tiny_x2, photos, "-o", out)
    assert code == 1
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 3
    assert any("empty.png" in l and "0 bytes" in l for l in lines)
    assert any("text.png" in l and "not an image" in l for l in lines)
    assert any("trunc.png" in l and "truncated" in l for l in lines)
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]  # no partial, no temp
    assert tree_digest(photos) == before


def test_missing_input_and_json(cli, tiny_x2, photos, tmp_path):
    code, out, err = cli("upscale", "--model", tiny_x2, photos / "a.png", photos / "nope.png",
                         "-o", tmp_path / "o", "--json")
    assert code == 1
    recs = [json.loads(l) for l in out.decode().splitlines()]
    assert [r["status"] for r in recs] == ["done", "failed"]
    assert recs[0]["size_out"] == [24, 20] and "no such file" in recs[1]["reason"]


def test_existing_outputs_skipped_then_overwritten(cli, tiny_x2, photos, tmp_path):
    out = tmp_path / "o"
    assert cli("upscale", "--model", tiny_x2, photos, "-o", out)[0] == 0
    (out / "a.png").write_bytes(b"sentinel")
    code, _, err = cli("upscale", "--model", tiny_x2, photos, "-o", out)
    assert code == 0 and "skipped" in err and (out / "a.png").read_bytes() == b"sentinel"
    code, _, err = cli("upscale", "--model", tiny_x2, photos, "-o", out, "--overwrite")
    assert code == 0 and (out / "a.png").read_bytes() != b"sentinel"


def test_shards_split_the_batch(cli, tiny_x2, tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(12):
        noise_image(4, 4, seed=i).save(d / f"{i:02d}.png")
    out = tmp_path / "o"
    for k in (1, 2, 3):
        assert cli("upscale", "--model", tiny_x2, d, "-o", out, "--shard", f"{k}/3", "-q")[0] == 0
    assert len(list(out.iterdir())) == 12


def test_usage_errors_exit_2_and_a_missing_input_exits_1(cli, tiny_x2, photos, tmp_path):
    assert cli("upscale", "--model", tiny_x2, photos, "-o", "-")[0] == 2
    code, _, err = cli("upscale", "--x4", "--model", tiny_x2, photos / "a.png")
    assert code == 2 and "x2" in err
    code, _, err = cli("upscale", "--model", "no-such-model", photos / "a.png")
    assert code == 2 and "unknown model" in err
    assert cli("upscale", "--shard", "5/3", photos)[0] == 2
    assert cli("upscale", "--model", tiny_x2, tmp_path / "empty-dir-that-is-missing/")[0] == 1


def test_damaged_weights_exit_2(cli, tiny_x2, photos, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(tiny_x2.read_bytes()[:100])
    code, _, err = cli("upscale", "--model", bad, photos / "a.png")
    assert code == 2 and "bad.safetensors" in err and "Traceback" not in err
    assert not (photos / "a_x2.png").exists()


def test_installed_command_runs_anywhere_with_shipped_weights(tmp_path):
    """The shipped x2 model through a real process, from an unrelated folder."""
    noise_image(8, 6).save(tmp_path / "p.png")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-m", "imgrestore", "upscale", "--x2", "p.png", "-q"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "p_x2.png") as im:
        assert im.size == (12, 16)


def test_models_lists_shipped(cli):
    code, out, err = cli("models", "--json")
    assert code == 0, err
    rows = [json.loads(l) for l in out.decode().splitlines()]
    assert {r["name"] for r in rows} >= {"upscale-x2", "upscale-x3", "upscale-x4", "colorize"}
    for r in rows:
        assert "error" not in r and r["params"] > 0 and r["quality"]
        assert r[TASKS[r["task"]].cost_key] > 0


def test_streamed_png_equals_in_memory(cli, tiny_x2, tmp_path, monkeypatch):
    from imgrestore import pipeline

    d = tmp_path / "in"
    d.mkdir()
    noise_image(30, 20, "RGBA").save(d / "alpha.png")
    noise_image(30, 20, "L").save(d / "gray.png")
    noise_image(30, 20).save(d / "rgb.png")
    assert cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "mem", "--tile", 8)[0] == 0
    monkeypatch.setattr(pipeline, "STREAM_MIN_PIXELS", 1)
    assert cli("upscale", "--model", tiny_x2, d, "-o", tmp_path / "stream", "--tile", 8)[0] == 0
    for name in ("alpha.png", "gray.png", "rgb.png"):
        with Image.open(tmp_path / "mem" / name) as a, Image.open(tmp_path / "stream" / name) as b:
            assert a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))
