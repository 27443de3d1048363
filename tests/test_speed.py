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
