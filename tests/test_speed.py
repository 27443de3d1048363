"""Whole-process speed work (issue #19): the whole-command bench, start-up
imports, the torch-free onnx backend."""

from __future__ import annotations

import json

import numpy as np

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
                         "--format", "jpeg", "--repeat", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    rows = {(r["case"], r["method"]) for r in report["rows"]}
    for case in ("40x30", "folder 2 x 16x12"):
        assert (case, "imgrestore upscale, torch") in rows
        assert (case, "Pillow bicubic, whole process (reference)") in rows
        assert (case, "network only (tiles, in-process), torch") in rows
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
from imgrestore.cli import main
sys.argv[0] = "imgrestore"
main()
"""


def modules_used(tmp_path, *args) -> set[str]:
    """The modules a whole `imgrestore` command imported, run in a
    subprocess (what a user's command costs at start-up)."""
    import subprocess
    import sys

    listing = tmp_path / "modules.txt"
    p = subprocess.run([sys.executable, "-c", MODULES_AT_EXIT, str(listing), *map(str, args)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return set(listing.read_text().split())


def test_a_quiet_torch_upscale_imports_no_compiler_and_no_rich(tmp_path, tiny_x2):
    from PIL import Image

    Image.fromarray(photo_like(20, 24)).save(tmp_path / "a.png")
    mods = modules_used(tmp_path, "upscale", "--model", tiny_x2, "-q", tmp_path / "a.png", "-o", tmp_path / "b.jpg")
    assert (tmp_path / "b.jpg").is_file()
    assert "torch" in mods
    # the shape check on the meta device once pulled in torch's compiler (1.3 s)
    assert "torch._dynamo" not in mods
    assert not any(m == "rich" or m.startswith("rich.") for m in mods)
