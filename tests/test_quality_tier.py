"""The quality tier's network (HASN) and its distillation teacher (RLFN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize
from imgrestore import registry, tasks, weights
from imgrestore.models.blocks import window_mean
from imgrestore.models.hasn import HASN
from imgrestore.models.rlfn import RLFN

TINY = dict(channels=8, blocks=2, attn=4, squeeze=2, window=5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_hasn_fold_equals_branches(scale):
    model = randomize(HASN(scale=scale, **TINY), std=0.2).eval()
    x = torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        branched = model.forward_branched(x)
        online = model(x)
        model.reparameterize()
        folded = model(x)
        model.reparameterize()  # idempotent
        again = model(x)
    assert folded.shape == (1, 3, 13 * scale, 10 * scale)
    assert (branched - online).abs().max() < 1e-5
    assert (branched - folded).abs().max() < 1e-5
    assert torch.equal(folded, again)
    assert model.cfg.deploy and all(b.dw.dw1 is None for b in model.blocks)


def test_window_mean_is_the_windowed_mean_of_real_pixels():
    x = torch.rand(1, 2, 9, 7)
    got = window_mean(x, 5)
    # by hand at a corner (3x3 real pixels of the 5x5 window) and inside
    assert torch.allclose(got[0, :, 0, 0], x[0, :, :3, :3].mean(dim=(1, 2)), atol=1e-6)
    assert torch.allclose(got[0, :, 4, 3], x[0, :, 2:7, 1:6].mean(dim=(1, 2)), atol=1e-6)


def test_hasn_starts_near_nearest_neighbour():
    # the tail starts small, so an untrained network is close to its base
    model = HASN(scale=2, **TINY).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        err = (model(x) - torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")).abs().mean()
    assert err < 0.1


def _save(model, path, arch, scale):
    weights.save(path, registry.own_state(model), arch=arch, config=model.config(), task="upscale", scale=scale)
    return path


def test_hasn_tiled_equals_untiled(tmp_path):
    model = randomize(HASN(scale=2, **TINY), std=0.15)
    r = tasks.load(_save(model, tmp_path / "q.safetensors", "hasn", 2), task="upscale")
    px = (np.random.default_rng(1).random((37, 29, 3)) * 255).astype(np.uint8)
    whole = r.run_pixels(px, tile=None).astype(int)
    for tile in (12, 20):
        assert np.abs(r.run_pixels(px, tile=tile).astype(int) - whole).max() <= 1


def test_rlfn_runs_whole_images(tmp_path):
    # its attention upsamples a coarse map: a tile would differ, so it is never tiled
    model = randomize(RLFN(scale=2, channels=8, blocks=2, esa=4), std=0.05)
    r = tasks.load(_save(model, tmp_path / "t.safetensors", "rlfn", 2), task="upscale")
    px = (np.random.default_rng(2).random((40, 30, 3)) * 255).astype(np.uint8)
    assert np.array_equal(r.run_pixels(px, tile=16), r.run_pixels(px, tile=None))


def test_convert_rlfn_reads_the_release_layout(tmp_path):
    from imgrestore.train.convert import convert_rlfn

    ref = randomize(RLFN(scale=3, channels=8, blocks=2, esa=4), std=0.05).eval()
    src = tmp_path / "rlfn_x3.pth"
    torch.save(ref.state_dict(), src)  # the release's key names are ours
    out = tmp_path / "rlfn-x3.safetensors"
    prov = convert_rlfn(src, out, log=lambda m: None)
    wf = weights.read(out)
    assert (wf.arch, wf.task, wf.scale) == ("rlfn", "upscale", 3)
    assert wf.config == dict(scale=3, colors=3, channels=8, blocks=2, esa=4)
    assert prov["licence"] == "Apache-2.0" and len(prov["source_sha256"]) == 64
    again = registry.build_from_weights(wf).eval()
    x = torch.rand(1, 3, 20, 18)
    with torch.no_grad():
        assert torch.equal(again(x), ref(x))


def test_convert_rlfn_refuses_a_wrong_tail(tmp_path):
    from imgrestore.train.convert import convert_rlfn

    sd = RLFN(scale=2, channels=8, blocks=1, esa=4).state_dict()
    sd["upsampler.0.weight"] = torch.zeros(10, 8, 3, 3)
    sd["upsampler.0.bias"] = torch.zeros(10)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(SystemExit, match="square scale"):
        convert_rlfn(tmp_path / "bad.pth", tmp_path / "o.safetensors", log=lambda m: None)


def _photos(folder, n=3, side=40):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        a = rng.random((side // 4, side // 4, 3))
        Image.fromarray((a * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC).save(folder / f"p{i}.png")
    return folder


def test_distillation_names_its_teacher_and_pulls_toward_it(tmp_path):
    from imgrestore.train.sr import make_task

    data = _photos(tmp_path / "hr")
    teacher = randomize(RLFN(scale=2, channels=8, blocks=1, esa=4), std=0.05)
    tfile = _save(teacher, tmp_path / "teacher.safetensors", "rlfn", 2)
    task = make_task([str(data)], 2, arch="hasn", channels=8, blocks=1, patch=16, batch=2,
                     teacher=tfile, distill=1.0, teacher_precision="fp32", log=lambda m: None)
    note = task.provenance["teacher"]
    assert note["arch"] == "rlfn" and note["file"] == "teacher.safetensors" and len(note["sha256"]) == 64
    assert note["precision"] == "fp32"
    # with all of the loss on the teacher, a batch's loss is the L1 to the teacher's output
    b = task.batch(0)
    with torch.no_grad():
        want = torch.nn.functional.l1_loss(task.model(b[0]), teacher.eval()(b[0]))
        assert torch.allclose(task.loss(task.model, b), want)


def test_a_bfloat16_teacher_gives_nearly_the_same_targets(tmp_path):
    from imgrestore.train.sr import make_task

    data = _photos(tmp_path / "hr")
    teacher = randomize(RLFN(scale=2, channels=8, blocks=1, esa=4), std=0.05)
    tfile = _save(teacher, tmp_path / "teacher.safetensors", "rlfn", 2)
    kw = dict(arch="hasn", channels=8, blocks=1, patch=16, batch=2, teacher=tfile, distill=1.0)
    fp32 = make_task([str(data)], 2, teacher_precision="fp32", log=lambda m: None, **kw)
    bf16 = make_task([str(data)], 2, teacher_precision="bf16", log=lambda m: None, **kw)
    assert bf16.provenance["teacher"]["precision"] == "bf16"
    b = fp32.batch(0)
    for t in (fp32, bf16):
        t.model.load_state_dict(fp32.model.state_dict())
    with torch.no_grad():
        exact, rough = fp32.loss(fp32.model, b), bf16.loss(bf16.model, b)
    assert rough.dtype == torch.float32 and rough != exact  # other arithmetic...
    assert abs(float(rough) - float(exact)) < 0.01  # ...near the same targets (bfloat16 keeps 8 bits)
    lines = []
    auto = make_task([str(data)], 2, teacher_precision="auto", log=lines.append, **kw)
    assert auto.provenance["teacher"]["precision"] in ("bf16", "fp32")
    assert any(line.startswith("teacher precision: ") and "bfloat16" in line for line in lines)


def test_upscale_training_scores_a_hold_out_of_its_own_files(tmp_path):
    from imgrestore.train.loop import split_holdout
    from imgrestore.train.sr import make_task

    data = _photos(tmp_path / "hr", n=12, side=48)
    kept, held = split_holdout(sorted(data.iterdir()), 0.3)
    assert held and kept  # the fraction gives both sides with these names
    task = make_task([str(data)], 2, arch="hasn", channels=8, blocks=1, patch=16, batch=2, holdout=0.3,
                     log=lambda m: None)
    assert task.provenance["images"] == len(kept) and task.provenance["holdout"]["images"] == len(held)
    task.model.eval()
    quick = task.quick_eval(task.model)
    assert quick["holdout"]["images"] == len(held) and "gain_db" in quick["holdout"]
    # without a hold-out nothing is held back and no periodic evaluation runs on training files
    plain = make_task([str(data)], 2, arch="hasn", channels=8, blocks=1, patch=16, batch=2, log=lambda m: None)
    assert plain.provenance["images"] == 12 and plain.quick_eval is None


def test_distillation_refuses_a_teacher_of_another_scale(tmp_path):
    from imgrestore.train.sr import make_task

    data = _photos(tmp_path / "hr")
    tfile = _save(RLFN(scale=4, channels=8, blocks=1, esa=4), tmp_path / "t4.safetensors", "rlfn", 4)
    with pytest.raises(SystemExit, match="not an x2 upscaler"):
        make_task([str(data)], 2, arch="hasn", channels=8, blocks=1, patch=16, batch=2, teacher=tfile,
                  log=lambda m: None)


def test_photo_pairs_carry_jpeg_and_noise_but_keep_clean_targets():
    from imgrestore.tasks.upscale import SRPairs, bicubic_down

    rng = np.random.default_rng(3)
    img = np.asarray(Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).resize((96, 96),
                                                                                               Image.BICUBIC))
    photo = SRPairs([img], 2, 16, min_zoom=1.0, seed=5, degrade="photo")
    diffs = []
    for _ in range(6):
        lr, hr = photo.sample()
        assert hr.shape == (32, 32, 3) and lr.shape == (16, 16, 3)
        diffs.append(np.abs(lr.astype(int) - bicubic_down(hr, 2)).mean())  # the target is the clean HR
    assert min(diffs) > 0  # every photo LR is degraded
    assert max(diffs) < 20  # mildly
    with pytest.raises(ValueError, match="one of bicubic, photo"):
        SRPairs([img], 2, 16, degrade="blurry")


def test_jpeg_lr_benchmark_is_harder(tmp_path):
    from imgrestore.tasks.upscale import bicubic_up, eval_sr

    folder = _photos(tmp_path / "hr", n=2, side=48)
    clean = eval_sr(lambda lr: bicubic_up(lr, 2), folder, 2).summary()
    jpeg = eval_sr(lambda lr: bicubic_up(lr, 2), folder, 2, lr_jpeg=20).summary()
    assert jpeg["psnr"] < clean["psnr"] - 0.1


def test_bench_upscale_with_jpeg_lr_scores_both_methods_on_the_same_jpeg(cli, tiny_x2, tmp_path):
    """`bench upscale --lr-jpeg Q`: the LR is saved as a JPEG first, for the
    network and for bicubic alike (the photo tier's measure): bicubic loses
    against the clean-LR run, and the report says which LR it used."""
    import json

    data = tmp_path / "data"
    data.mkdir()
    yy, xx = np.mgrid[0:96, 0:96]
    a = np.stack([128 + 90 * np.sin(xx / 5.0), 128 + 90 * np.cos(yy / 4.0), 128 + 60 * np.sin((xx + yy) / 7.0)], -1)
    Image.fromarray(a.astype(np.uint8)).save(data / "a.png")
    runs = {}
    for extra in ([], ["--lr-jpeg", "20"]):
        code, out, err = cli("bench", "upscale", "--x2", "--model", tiny_x2, "--no-speed", "--json", *extra, data)
        assert code == 0, err
        runs[bool(extra)] = json.loads(out)
    clean, jpeg = runs[False], runs[True]
    assert clean["lr"] == "Pillow bicubic" and "JPEG quality 20" in jpeg["lr"]
    assert jpeg["quality"]["data"]["psnr_bicubic"] < clean["quality"]["data"]["psnr_bicubic"] - 0.5
    code, _, err = cli("bench", "upscale", "--x2", "--model", tiny_x2, "--no-speed", "--lr-jpeg", "0", data)
    assert code == 2 and "lr-jpeg" in str(err)


@pytest.fixture
def quality_x2_shipped(tmp_path, monkeypatch):
    """A weights folder whose quality tier ships only x2 (a tiny HASN), next
    to the real fast upscalers."""
    import shutil

    from imgrestore import catalog

    wdir = tmp_path / "w"
    wdir.mkdir()
    for s in (2, 3, 4):
        shutil.copy(catalog.weights_dir() / f"upscale-x{s}.safetensors", wdir)
    _save(randomize(HASN(scale=2, **TINY), std=0.15), wdir / "upscale-x2-quality.safetensors", "hasn", 2)
    monkeypatch.setenv("IMGRESTORE_WEIGHTS", str(wdir))
    monkeypatch.setitem(catalog.SHIPPED, "upscale-x2-quality", catalog.ShippedModel(
        "upscale-x2-quality", "upscale-x2-quality.safetensors", "upscale", 2, "quality x2 (HASN)"))
    return wdir


def _gradient_png(path, w=24, h=18):
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None, :]
    a[..., 1] = np.linspace(0, 255, h)[:, None]
    Image.fromarray(a).save(path)
    return path


def test_tier_picks_the_tiers_model_and_keeps_the_default_name(tmp_path, cli, quality_x2_shipped):
    src = _gradient_png(tmp_path / "in.png")
    code, _, err = cli("upscale", "--x2", "--tier", "quality", src, "-o", tmp_path / "q.png")
    assert code == 0, err
    code, _, err = cli("upscale", "--x2", src, "-o", tmp_path / "f.png")
    assert code == 0, err
    q, f = np.asarray(Image.open(tmp_path / "q.png")), np.asarray(Image.open(tmp_path / "f.png"))
    assert q.shape == f.shape == (36, 48, 3) and not np.array_equal(q, f)  # another network ran
    code, _, err = cli("upscale", "--x2", "--model", quality_x2_shipped / "upscale-x2-quality.safetensors", src,
                       "-o", tmp_path / "m.png")
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")), q)  # the tier's model, by its file
    # next to the input, a shipped model of any tier gets the plain scale suffix
    code, _, err = cli("upscale", "--x2", "--tier", "quality", src)
    assert code == 0, err
    assert (tmp_path / "in_x2.png").is_file()


def test_tier_without_that_scale_is_a_usage_error(tmp_path, cli, quality_x2_shipped):
    src = _gradient_png(tmp_path / "in.png")
    code, _, err = cli("upscale", "--x4", "--tier", "quality", src, "-o", tmp_path / "o.png")
    assert code == 2 and "--tier quality has no x4 upscaler (shipped: x2)" in err
    code, _, err = cli("upscale", "--tier", "photo", src, "-o", tmp_path / "o.png")
    assert code == 2 and "--tier photo has no x4 upscaler (shipped: none yet)" in err
    assert not (tmp_path / "o.png").exists()
    # -s picks among the tier's own scales: x2 then a resize, never a fast model
    code, _, err = cli("upscale", "--tier", "quality", "-s", "1.5", src, "-o", tmp_path / "s.png")
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == (27, 36, 3)


def test_tier_and_a_model_of_another_tier_is_a_usage_error(tmp_path, cli, quality_x2_shipped):
    src = _gradient_png(tmp_path / "in.png")
    code, _, err = cli("upscale", "--x2", "--tier", "quality", "--model", "upscale-x2", src, "-o", tmp_path / "o.png")
    assert code == 2 and "is not the quality tier's x2 upscaler" in err
    code, _, err = cli("upscale", "--tier", "quality", "--model", "upscale-x2-quality", src, "-o", tmp_path / "o.png")
    assert code == 0, err


def test_bench_tiers_measures_every_shipped_upscaler_and_bicubic_and_draws_them(tmp_path, cli):
    import json

    hr = tmp_path / "hr"
    hr.mkdir()
    _gradient_png(hr / "a.png", 40, 32)
    code, out, err = cli("bench", "tiers", "--scale", "2", "--size", "48x32", "--repeat", "1", "--threads", "1",
                         "--plot", tmp_path / "t.png", "--json", hr)
    assert code == 0, err
    rep = json.loads(out)
    names = [p["name"] for p in rep["points"]]
    assert names[0] == "upscale-x2" and names[-1] == "bicubic" and all(p["scale"] == 2 for p in rep["points"])
    bic = rep["points"][-1]
    assert bic["gain_db"] == 0 and all(p["mp_per_s"] > 0 for p in rep["points"])
    assert abs(rep["points"][0]["psnr"] - rep["points"][0]["gain_db"] - bic["psnr"]) < 1e-3  # one baseline
    im = Image.open(tmp_path / "t.png")
    assert im.size == (900, 560) and len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 10  # axes, markers and text drawn
