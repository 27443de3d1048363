"""Training: tiny runs of both tasks, resumable, self-describing output."""

from __future__ import annotations

import numpy as np
import torch

from conftest import noise_image
from imgrestore import load, weights
from imgrestore.train.colorize import NBINS, ab_bins, rebalance_weights
from imgrestore.train.loop import TrainOptions, train


def _photos(folder, n=4, side=40, prefix=""):
    folder.mkdir()
    for i in range(n):
        im = noise_image(side, side + 8, seed=i)
        im.save(folder / f"{prefix}{i}.png")
    return folder


def test_sr_training_resumes_and_loads(tmp_path):
    from imgrestore.train.sr import make_task

    data = _photos(tmp_path / "hr")
    out = tmp_path / "x2.safetensors"
    logs = []

    def run(steps):
        task = make_task([str(data)], 2, channels=4, blocks=1, patch=8, batch=2, log=logs.append)
        return train(task, TrainOptions(steps=steps, out=out, warmup=1, log=logs.append))

    run(3)
    assert weights.read(out).provenance["steps"] == 3
    run(5)
    assert any("resumed" in line and "step 3" in line for line in logs)
    wf = weights.read(out)
    assert wf.provenance["steps"] == 5 and wf.task == "upscale" and wf.scale == 2
    r = load(out, device="cpu")
    assert r(np.zeros((4, 4, 3), np.uint8)).shape == (8, 8, 3)


def test_bf16_training_takes_the_same_steps_and_says_so(tmp_path, cli):
    from imgrestore.train.sr import make_task

    data = _photos(tmp_path / "hr")
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.safetensors"
        logs = []
        task = make_task([str(data)], 2, channels=4, blocks=1, patch=8, batch=2, seed=1, log=logs.append)
        seen = []
        loss_fn = task.loss

        def spy(m, b, loss_fn=loss_fn, seen=seen):
            y = loss_fn(m, b)
            seen.append((torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None,
                         float(y.detach())))
            return y

        task.loss = spy
        train(task, TrainOptions(steps=2, out=out, warmup=1, log=logs.append, precision=precision))
        wf = weights.read(out)
        assert wf.provenance.get("precision", "fp32") == precision
        assert [d for d, _ in seen] == [torch.bfloat16 if precision == "bf16" else None] * 2
        losses[precision] = seen[0][1]
    # the first step's loss: the same batch and weights, bfloat16 arithmetic
    assert losses["bf16"] != losses["fp32"] and abs(losses["bf16"] - losses["fp32"]) < 0.05 * losses["fp32"]
    code, _, err = cli("train", "upscale", "--scale", 2, "--data", data, "--channels", 4, "--blocks", 1,
                       "--patch", 8, "--batch", 2, "--steps", 2, "--precision", "bf16",
                       "-o", tmp_path / "cli.safetensors")
    assert code == 0, err
    assert weights.read(tmp_path / "cli.safetensors").provenance["precision"] == "bf16"


def test_colorize_training_runs_and_loads(tmp_path):
    from imgrestore.train.colorize import make_task

    data = tmp_path / "col"
    data.mkdir()
    for i, wnid in enumerate(["n01440764", "n02102040", "n01440764"]):
        noise_image(40, 48, seed=i).save(data / f"{wnid}_{i}.JPEG")
    noise_image(40, 48, "L").convert("RGB").save(data / "n02102040_gray.JPEG")  # skipped: gray
    out = tmp_path / "c.safetensors"
    logs = []
    task = make_task([str(data)], width=4, crop=32, batch=2, log=logs.append)
    assert task.config["classes"] == 2 and "3 colour training images" in logs[0]
    train(task, TrainOptions(steps=2, out=out, warmup=1, log=logs.append))
    r = load(out, device="cpu")
    assert r.task == "colorize" and r(np.zeros((9, 7), np.uint8)).shape == (9, 7, 3)


def test_rebalancing_favours_rare_colours():
    common = [np.full((32, 32, 3), (120, 100, 80), np.uint8) for _ in range(20)]
    rare = np.full((32, 32, 3), (20, 200, 20), np.uint8)
    w = rebalance_weights(common + [rare], sample=21)
    lab = lambda a: __import__("imgrestore.color", fromlist=["x"]).rgb_to_lab(  # noqa: E731
        torch.from_numpy(a[:1, :1]).permute(2, 0, 1)[None].float() / 255)[:, 1:]
    assert w[ab_bins(lab(rare))].item() > w[ab_bins(lab(common[0]))].item()
    assert w.shape == (NBINS * NBINS,)


def test_holdout_split_is_deterministic_and_disjoint(tmp_path):
    from imgrestore.train.colorize import split_holdout

    files = [tmp_path / f"n0000000{i % 10}_{i}.JPEG" for i in range(400)]
    kept, held = split_holdout(files, 0.1)
    assert set(kept).isdisjoint(held) and len(kept) + len(held) == 400
    assert 20 <= len(held) <= 60
    assert split_holdout(list(reversed(files)), 0.1)[1] == list(reversed(held))  # by name, not position
    assert split_holdout(files, 0.0) == (files, [])


def test_colorize_training_options_reach_the_loss_and_the_file(tmp_path):
    from imgrestore.train.colorize import make_task

    data = tmp_path / "col"
    data.mkdir()
    for i in range(12):
        noise_image(40, 48, seed=i).save(data / f"n01440764_{i}.JPEG")
    losses = {}
    for kind in ("l2", "log-l2", "smooth-l1"):
        torch.manual_seed(0)
        task = make_task([str(data)], width=4, crop=32, batch=2, loss_kind=kind, rebalance=0.5, fg_weight=1.0,
                         holdout=0.3, log=lambda m: None)
        losses[kind] = task.loss(task.model, task.batch(0)).item()
        assert "holdout" in task.quick_eval(task.model)
        assert task.provenance["loss"].startswith(kind) and task.provenance["holdout"]["images"] > 0
    assert len(set(losses.values())) == 3


def test_zoomed_colour_crops_and_warm_start(tmp_path):
    from imgrestore.tasks.colorize import ColorBatches
    from imgrestore.train.colorize import make_task

    # zoom-out crops: the right size, and with min_zoom 0.5 a crop can hold
    # more of the photo than a plain one (a wide stripe pattern shows it)
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::16] = 255
    plain = ColorBatches([stripes], [0], 16, seed=1).batch(32)[0]
    zoomed = ColorBatches([stripes], [0], 16, seed=1, min_zoom=0.5).batch(32)[0]
    assert plain.shape == zoomed.shape == (32, 1, 16, 16)
    # a 16-px plain crop holds at most one stripe period; a zoomed one up to two
    per_crop = lambda l: (l[:, 0] > 50).any(dim=1).sum(dim=1).float().mean()  # noqa: E731
    assert per_crop(zoomed) > per_crop(plain)

    data = tmp_path / "col"
    data.mkdir()
    for i in range(4):
        noise_image(40, 48, seed=i).save(data / f"n01440764_{i}.JPEG")
    first = make_task([str(data)], width=4, crop=16, batch=2, log=lambda m: None)
    src = tmp_path / "a.safetensors"
    train(first, TrainOptions(steps=1, out=src, warmup=1, log=lambda m: None))
    logs = []
    second = make_task([str(data)], width=4, crop=16, batch=2, min_zoom=0.5, init=src, log=logs.append)
    assert any("initialized" in m for m in logs)
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.provenance["init"] == "a.safetensors" and "0.5" in second.provenance["zoom"]
