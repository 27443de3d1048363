"""Pruning: widths fall as asked, compensation helps, results load anywhere."""

from __future__ import annotations

import copy
import json

import torch
from PIL import Image

from conftest import noise_image, randomize, tiny_sr_file
from imgrestore import load, registry, weights
from imgrestore.models.sr import ECBSR
from imgrestore.prune import GLCA, ecbsr_chain, keep_indices, l1_scores, prune_chain, widths


def test_shuffle_brings_far_pixels_together():
    g = GLCA(1, grid=4)
    x = torch.arange(16.0).reshape(1, 1, 1, 16).expand(1, 1, 4, 16)
    row = g.shuffle(x)[0, 0, 0]
    # neighbours after the shuffle were 16 / 4 = 4 pixels apart before it
    assert row[:4].tolist() == [0.0, 4.0, 8.0, 12.0]


def test_compensation_beats_plain_removal_on_a_toy_model():
    torch.manual_seed(0)
    model = randomize(ECBSR(scale=2, channels=8, blocks=2), std=0.15).eval()
    calib = torch.rand(8, 3, 24, 24)
    test = torch.rand(8, 3, 24, 24)
    with torch.no_grad():
        ref = model(test)
    errors = {}
    for comp in (False, True):
        m = copy.deepcopy(model)
        chain = ecbsr_chain(m)
        prune_chain(chain, keep_indices(l1_scores(chain), 0.5), calib, compensate=comp)
        with torch.no_grad():
            out = m(test)
        assert out.shape == ref.shape and widths(chain) == [4, 4, 4]
        errors[comp] = torch.mean((out - ref) ** 2).item()
    assert errors[True] < 0.5 * errors[False]


def test_prune_command_end_to_end(cli, tmp_path):
    src = tiny_sr_file(tmp_path / "m.safetensors", scale=2, channels=8, blocks=2)
    data = tmp_path / "calib"
    data.mkdir()
    for i in range(3):
        noise_image(100, 110, seed=i).save(data / f"{i}.png")
    out = tmp_path / "small.safetensors"
    code, stdout, err = cli("prune", src, "--ratio", "0.5", "--data", data, "--steps", "3",
                            "--threads", "1", "-o", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    rows = {r["model"]: r for r in report["rows"]}
    assert rows["unpruned"]["params"] > rows["glca + compensation"]["params"]
    assert report["widths"] == [4, 4, 4]
    wf = weights.read(out)
    assert wf.config["widths"] == [4, 4, 4] and wf.config["deploy"] is True
    assert wf.provenance["pruned"]["ratio"] == 0.5
    before = registry.count_params(registry.build_from_weights(weights.read(src)).reparameterize())
    after = registry.count_params(load(out).model)
    assert after < 0.45 * before  # about a quarter: both sides of the middle convs halve
    # the pruned file runs through every command that takes --model
    noise_image(9, 7).save(tmp_path / "p.png")
    code, _, err = cli("upscale", "--model", out, tmp_path / "p.png", "-o", tmp_path / "o.png")
    assert code == 0, err
    with Image.open(tmp_path / "o.png") as im:
        assert im.size == (14, 18)
    code, _, err = cli("bench", "upscale", "--x2", "--model", out, "--no-speed", "--json", data)
    assert code == 0, err
    # a second prune of the pruned model works from its own metadata
    code, _, err = cli("prune", out, "--ratio", "0.5", "--criterion", "l1", "--no-compensate",
                       "-o", tmp_path / "smaller.safetensors")
    assert code == 0, err
    assert load(tmp_path / "smaller.safetensors").model.cfg.widths == [2, 2, 2]


def test_prune_needs_data_and_refuses_unsupported(cli, tiny_color, tmp_path):
    src = tiny_sr_file(tmp_path / "m.safetensors")
    code, _, err = cli("prune", src, "--ratio", "0.5", "-o", tmp_path / "o.safetensors")
    assert code == 2 and "--data" in err
    code, _, err = cli("prune", tiny_color, "--ratio", "0.5", "--criterion", "l1", "--no-compensate",
                       "-o", tmp_path / "c.safetensors")
    assert code == 2 and "not supported yet" in err
