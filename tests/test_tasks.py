"""Every task in the table, end to end: a tiny model of it loads as the
task's restorer, runs through the command the task declares, and the record
is complete (evaluated, calibrated, timed). A new task is tested the day it
is registered, and fails here until it has a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image
from imgrestore import WrongTask, load, registry
from imgrestore.tasks import TASKS
from imgrestore.pipeline import default_suffix


@pytest.fixture(params=list(TASKS))
def task_and_model(request, tiny_model):
    return TASKS[request.param], tiny_model(request.param)


def test_task_runs_through_its_command(task_and_model, cli, tmp_path):
    task, model = task_and_model
    r = load(model, device="cpu", task=task.name)
    assert isinstance(r, task.restorer) and r.task == task.name
    src = tmp_path / "in.png"
    noise_image(12, 10).save(src)
    code, _, err = cli(task.name, "--model", model, src)
    assert code == 0, err
    # a model other than a shipped one is named in the output (#18)
    with Image.open(tmp_path / f"in{default_suffix(task.suffix(r), r.name)}.png") as im:
        assert im.size == (10 * r.scale, 12 * r.scale)
        assert np.array_equal(np.asarray(im.convert("RGB")), r(np.asarray(noise_image(12, 10))))
    # the tiling options exist exactly where the task tiles
    code, _, err = cli(task.name, "--model", model, src, "-o", tmp_path / "tiled.png", "--tile", 8)
    assert (code == 0) == task.tiled, err


def test_task_record_is_complete(task_and_model, tmp_path):
    task, model = task_and_model
    r = load(model, device="cpu")
    photos = tmp_path / "photos"
    photos.mkdir()
    noise_image(40, 48).save(photos / "a.png")
    quality = task.evaluate(r.model, photos)
    assert quality["images"] == 1 and np.isfinite(quality["psnr"]) and "gain_db" in quality
    assert task.cost(r.model, r.scale) > 0 and task.cost_key and task.cost_unit
    assert task.timing_input().dim() == 4 and task.pairs
    # prune needs calibration data, unless the task's models cannot be pruned (prune refuses them)
    assert task.calibration or registry.ARCHS[r.meta.arch].channel_groups is None


@pytest.mark.parametrize("name", list(TASKS))
def test_a_model_of_another_task_is_refused(name, cli, tiny_model, tmp_path):
    other = next(t for t in TASKS if t != name)
    model = tiny_model(other)
    with pytest.raises(WrongTask, match=f"is a {other} model, not {TASKS[name].noun}"):
        load(model, device="cpu", task=name)
    noise_image(8, 8).save(tmp_path / "p.png")
    code, _, err = cli(name, "--model", model, tmp_path / "p.png")
    assert code == 2 and TASKS[name].noun in err and not list(tmp_path.glob("p_*"))
