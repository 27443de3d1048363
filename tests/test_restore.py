"""Denoise and deblock: the JSNet family, its search, its training, its
commands (issue #21). Tiny models and images: every test runs in seconds."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_CELLS, randomize, tiny_restore_file
from imgrestore import load, registry, weights
from imgrestore.io import jpeg_quality
from imgrestore.models.restore import JSNet, check_cell
from imgrestore.tasks import deblock, denoise
from imgrestore.tasks.restore import run_net


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like (H, W, 3) uint8: smooth colour gradients and a few edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [np.sin(6 * x * rng.uniform(0.5, 1.5) + 4 * y * rng.uniform(0.5, 1.5) + rng.uniform(0, 6))
             for _ in range(3)]
    a = (np.stack(chans, -1) * 0.35 + 0.5) * 255
    a[h // 3: h // 2, w // 4: w // 2] *= 0.5  # an edge
    return np.clip(a, 0, 255).astype(np.uint8)


def photos(tmp_path, n: int = 3, side: int = 48):
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(smooth_image(side, side + 8, seed=i)).save(folder / f"p{i}.png")
    return folder


# ---------------------------------------------------------------------------- the network

def test_tiled_equals_untiled_at_odd_sizes(tiny_denoise):
    """Local attention and tiles on even pixels: tiling stays invisible."""
    r = load(tiny_denoise, device="cpu", sigma=20)
    img = smooth_image(37, 45)
    whole = r.run_pixels(img, tile=None)
    for tile in (8, 12, 20):
        tiled = r.run_pixels(img, tile=tile)
        assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1, tile


def test_hint_reaches_the_network(tiny_denoise):
    model = load(tiny_denoise, device="cpu").model
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        blind, low, high = model(x), model(x, 0.1), model(x, 0.9)
        batch = model(torch.cat([x, x]), torch.tensor([0.1, -1.0]))
    assert not torch.equal(low, high) and not torch.equal(blind, low)
    # -1: blind for that image (a batch and single images round differently: 1e-5)
    assert torch.allclose(batch[0], low[0], atol=1e-5) and torch.allclose(batch[1], blind[0], atol=1e-5)


@pytest.mark.parametrize("cell", [{"ops": [], "attention": "none", "connect": "body"},
                                  {"ops": ["conv5"], "attention": "none", "connect": "body"},
                                  {"ops": ["conv3"], "attention": "global", "connect": "body"},
                                  {"ops": ["conv3"], "attention": "none", "connect": "sideways"},
                                  {"ops": ["conv3"]}])
def test_bad_genotype_is_refused(cell):
    with pytest.raises(ValueError):
        JSNet(cells=[cell])


def test_bad_genotype_in_a_file_is_a_clear_error(tmp_path):
    path = tiny_restore_file(tmp_path / "m.safetensors", "denoise")
    wf = weights.read(path)
    wf.config["cells"][0]["attention"] = "global"
    with pytest.raises(Exception, match="unknown attention 'global'"):
        registry.build_from_weights(wf)


# ---------------------------------------------------------------------------- search and training

def test_search_derives_a_valid_architecture(tmp_path):
    from imgrestore.train.search import SuperNet, search

    images = [smooth_image(40, 40, seed=i) for i in range(4)]
    genotype, report = search("denoise", images, channels=4, cells=2, layers=2, steps=6, patch=16, batch=2,
                              lr=1e-3, arch_lr=3e-2, warmup=0.5, seed=0, log=lambda m: None)
    assert len(genotype) == 2 and all(check_cell(dict(c)) for c in genotype)
    assert all(len(c["ops"]) == 2 for c in genotype)
    net = JSNet(channels=4, cells=genotype)
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    # the architecture parameters moved (arch steps ran after the warm-up)
    assert report["warmup_steps"] == 3 and report["weights"][0]["ops"][0] != report["weights"][1]["ops"][0]
    sup = SuperNet(4, 2, 2)
    assert len(sup.arch_parameters()) == 6 and not set(map(id, sup.arch_parameters())) & set(
        map(id, sup.weight_parameters()))


def test_skips_are_capped_per_cell():
    from imgrestore.train.search import OP_NAMES, SearchCell

    cell = SearchCell(4, layers=3)
    with torch.no_grad():
        cell.alpha.zero_()
        cell.alpha[:, OP_NAMES.index("skip")] = torch.tensor([3.0, 2.0, 1.0])
        cell.alpha[1, OP_NAMES.index("sep3")] = 0.5
    assert cell.genotype()["ops"] == ["skip"] * 3
    capped = cell.genotype(max_skips=1)["ops"]
    assert capped[0] == "skip" and capped[1] == "sep3" and capped[2] != "skip"
    assert cell.genotype(max_skips=0)["ops"].count("skip") == 0


def test_search_command_writes_the_derived_network_and_the_comparison(cli, tmp_path):
    data = photos(tmp_path, n=8, side=72)
    out = tmp_path / "search.safetensors"
    code, _, err = cli("train", "search", "--task", "denoise", "--data", data, "--channels", 4, "--cells", 2,
                       "--layers", 1, "--steps", 4, "--batch", 2, "--patch", 16, "--compare-steps", 2,
                       "--holdout", 0.3, "--threads", 1, "-o", out)
    assert code == 0, err
    wf = weights.read(out)
    rep = wf.provenance["search"]
    assert wf.arch == "jsnet" and wf.config["cells"] and len(wf.config["cells"]) == 2
    assert set(rep["compare"]) >= {"searched", "hand-picked"} and "gain_over_hand_picked_db" in rep
    assert (tmp_path / "search.handpicked.safetensors").is_file()
    # the file alone rebuilds the derived network: the next training takes it
    code, _, err = cli("train", "denoise", "--data", data, "--arch-from", out, "--steps", 2, "--batch", 2,
                       "--patch", 16, "--holdout", 0.3, "--threads", 1, "--precision", "bf16",
                       "-o", tmp_path / "d.safetensors")
    assert code == 0, err
    trained = weights.read(tmp_path / "d.safetensors")
    assert trained.config["cells"] == wf.config["cells"]
    assert trained.provenance["precision"] == "bf16"  # --precision reaches the training loop


def test_rebuilt_from_its_file_equals_the_trained_model(tmp_path):
    from imgrestore.train.loop import TrainOptions, train
    from imgrestore.train.restore import make_task

    data = photos(tmp_path, n=4)
    task = make_task("deblock", [str(data)], channels=4, cells=1, layers=1, patch=16, batch=2, holdout=0.0,
                     loss="l2", log=lambda m: None)
    out = tmp_path / "m.safetensors"
    train(task, TrainOptions(steps=3, out=out, warmup=1, log=lambda m: None))
    again = registry.build_from_weights(weights.read(out)).eval()
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(task.model.eval()(x, 0.3), again(x, 0.3))
    assert weights.read(out).provenance["steps"] == 3 and weights.read(out).provenance["loss"] == "L2"


def test_luminance_loss_weighs_what_the_benchmark_scores():
    """l2y: an error the eye and the Y PSNR see (luminance) costs more than
    one of the same RGB size that leaves luminance unchanged."""
    from imgrestore.color import rgb_to_y
    from imgrestore.tasks.restore import LOSSES

    y = torch.full((1, 3, 8, 8), 0.5)
    luma = torch.full((1, 3, 1, 1), 0.05)
    chroma = torch.tensor([0.05, -0.05 * 0.299 / 0.587, 0.0]).reshape(1, 3, 1, 1)  # Y unchanged
    chroma = chroma * (luma.norm() / chroma.norm())
    assert torch.allclose(rgb_to_y(y + chroma), rgb_to_y(y), atol=1e-6)

    def loss(err):
        return LOSSES["l2y"](lambda x, level: x + err, (y, None, y)).item()

    assert loss(torch.zeros(1)) == 0.0
    assert loss(luma) > 3 * loss(chroma) > 0


def test_pairs_degrade_as_the_benchmark_does():
    images = [smooth_image(64, 64, seed=i) for i in range(2)]
    x, level, y = denoise.TASK.pairs(images, 32, seed=0, gray_share=0.5).batch(8)
    assert x.shape == y.shape == (8, 3, 32, 32) and level.shape == (8,)
    assert ((level == -1) | ((level >= 0) & (level <= 1.1))).all()
    err = (x - y).abs().mean(dim=(1, 2, 3))
    assert (err > 0).any()
    x, level, y = deblock.TASK.pairs(images, 32, seed=0).batch(4)
    assert ((level == -1) | ((level >= 0.1 - 1e-6) & (level <= 0.9))).all()
    # gray crops stay gray through the degradation
    gray = np.repeat(smooth_image(32, 32)[..., :1], 3, axis=2)
    for d in (denoise.DEGRADATION, deblock.DEGRADATION):
        out = d.apply(gray, d.main, np.random.default_rng(0))
        assert denoise.is_gray(out) and not np.array_equal(out, gray)


# ---------------------------------------------------------------------------- the shipped models

@pytest.mark.parametrize("task", ["denoise", "deblock"])
def test_shipped_model_reduces_the_error(task):
    mod = {"denoise": denoise, "deblock": deblock}[task]
    d = mod.DEGRADATION
    clean = smooth_image(64, 80)
    setting = 25 if task == "denoise" else 15
    degraded = d.apply(clean, setting, np.random.default_rng(0))
    r = load(task, device="cpu")
    assert r.model.cfg.cells and registry.count_params(r.model) <= 150_000
    before = d.score(degraded, clean)
    # dB the shipped models gain at least (measured here: denoise +11.9, deblock +0.78 blind, +1.05 hinted)
    margin = {"denoise": 3.0, "deblock": 0.3}[task]
    assert d.score(r(degraded), clean) > before + margin  # blind
    assert d.score(r.with_level(d.level(setting)).run_pixels(degraded), clean) > before + margin  # with the hint
    gray = np.repeat(clean[..., :1], 3, axis=2)
    noisy = d.apply(gray, setting, np.random.default_rng(1))
    out = r(noisy[..., 0])  # a gray image in, gray out
    assert out.ndim == 2 and d.score(np.repeat(out[..., None], 3, 2), gray) > d.score(noisy, gray) + margin


# ---------------------------------------------------------------------------- JPEG quality and the commands

def test_jpeg_quality_read_from_the_tables():
    img = Image.fromarray(smooth_image(16, 16))
    for q in (5, 10, 23, 50, 75, 90, 100):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        with Image.open(buf) as im:
            assert jpeg_quality(im.quantization) == q
    assert jpeg_quality(None) is None and jpeg_quality({0: [0] * 64}) is None


def test_deblock_reads_the_quality_of_a_jpeg_input(tiny_deblock, tmp_path):
    from imgrestore.io import Job, read

    path = tmp_path / "web.jpg"
    Image.fromarray(smooth_image(24, 32)).save(path, quality=20)
    pic = read(Job(path, path.name))
    assert pic.jpeg_quality == 20
    r = load(tiny_deblock, device="cpu")
    assert r.picture_level(pic) == pytest.approx(0.8) and r.input_notes(pic) == []
    png = read(Job(path, path.name))
    png.jpeg_quality = None
    assert r.picture_level(png) is None and r.input_notes(png) == [deblock.BLIND_NOTE]
    hinted = load(tiny_deblock, device="cpu", jpeg_quality=40)
    assert hinted.picture_level(pic) == pytest.approx(0.6)  # the hint wins over the tables
    # the level read from the file is what the command runs with
    assert np.array_equal(r.restore_picture(pic).pixels, r.with_level(0.8).run_pixels(pic.pixels))


def test_commands_end_to_end(cli, tiny_denoise, tiny_deblock, tmp_path):
    src = tmp_path / "scan.png"
    Image.fromarray(smooth_image(30, 42)).save(src)
    code, out, err = cli("denoise", "--model", tiny_denoise, "--sigma", 25, src, "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["status"] == "done"
    with Image.open(tmp_path / "scan_denoised_tiny-denoise.png") as im:
        got = np.asarray(im)
    r = load(tiny_denoise, device="cpu", sigma=25)
    assert got.shape == (30, 42, 3) and np.array_equal(got, r(smooth_image(30, 42)))
    web = tmp_path / "web.jpg"
    Image.fromarray(smooth_image(30, 42)).save(web, quality=15)
    code, _, err = cli("deblock", "--model", tiny_deblock, web, "-o", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "web.jpg").is_file()
    code, _, err = cli("deblock", "--model", tiny_deblock, src, "-o", tmp_path / "out2", "--jpeg-quality", 0)
    assert code == 2 and "--jpeg-quality" in err
    code, _, err = cli("deblock", "--model", tiny_deblock, src, "-o", tmp_path / "out3")
    assert code == 0 and "deblocked blind" in err


def test_prune_refuses_the_family_clearly(cli, tiny_denoise, tmp_path):
    code, _, err = cli("prune", tiny_denoise, "--ratio", 0.5, "--criterion", "l1", "--no-compensate",
                       "-o", tmp_path / "small.safetensors")
    assert code == 2 and "jsnet" in err and "cannot be pruned" in err and "Traceback" not in err


@pytest.mark.parametrize("task,flag,values", [("denoise", "--sigma", "25"), ("deblock", "--quality", "10,30")])
def test_bench_command(cli, tmp_path, task, flag, values, tiny_model):
    data = photos(tmp_path, n=2, side=24)
    code, out, err = cli("bench", task, "--model", tiny_model(task), flag, values, "--no-speed", "--threads", 1,
                         "--json", data)
    assert code == 0, err
    rep = json.loads(out)
    rows = rep["quality"]
    assert set(rows) == {"photos (colour, blind)", "photos (colour, hint)", "photos (gray, blind)"}
    for q in rows.values():
        assert q["images"] == 2 and len(q) == len(values.split(",")) + 1
        for k, m in q.items():
            if k != "images":
                assert np.isfinite(m["psnr"]) and m["gain_db"] == pytest.approx(m["psnr"] - m["psnr_baseline"], abs=1e-3)
    code, out, err = cli("bench", task, "--model", tiny_model(task), flag, values, "--size", 32, "--no-gray",
                         "--no-hint", "--threads", 1, "--json", data)
    assert code == 0, err
    speed = json.loads(out)["speed"]
    assert len(speed) == 5 and all(r["mp_per_s"] > 0 for r in speed)  # large image x 3, folder x 2
    code, _, err = cli("bench", task, "--model", tiny_model(task), flag, "ten", data)
    assert code == 2
