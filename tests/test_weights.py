"""Self-describing weights: round trip, strict loading, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_sr_file
from imgrestore import ModelNotFound, UnknownTask, WeightsError, load, registry, weights


def test_roundtrip_metadata(tmp_path):
    path = tiny_sr_file(tmp_path / "m.safetensors", scale=3)
    wf = weights.read(path)
    assert wf.arch == "ecbsr" and wf.task == "upscale" and wf.scale == 3
    assert wf.config["scale"] == 3 and wf.provenance["note"] == "random test model"


def test_truncated_file_names_the_file(tmp_path):
    path = tiny_sr_file(tmp_path / "m.safetensors")
    data = path.read_bytes()
    bad = tmp_path / "damaged.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="damaged.safetensors"):
        weights.read(bad)


def test_garbage_and_missing(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file at all")
    with pytest.raises(WeightsError, match="junk.safetensors"):
        load(junk)
    with pytest.raises(ModelNotFound, match="not found"):
        load(tmp_path / "absent.safetensors")


def test_no_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="no imgrestore metadata"):
        weights.read(path)


def test_mismatched_tensors_named(tmp_path):
    path = tiny_sr_file(tmp_path / "m.safetensors", channels=4)
    wf = weights.read(path)
    # claim a wider network than the tensors hold
    wf.config["channels"] = 8
    with pytest.raises(WeightsError, match=r"m\.safetensors.*shape.*layers\.0"):
        registry.build_from_weights(wf)


def test_other_architecture(tmp_path):
    path = tmp_path / "other.safetensors"
    weights.save(path, {"conv.weight": torch.zeros(1, 1, 3, 3)}, arch="ecbsr",
                 config=dict(scale=2, channels=4, blocks=1), task="upscale", scale=2)
    with pytest.raises(WeightsError, match="missing .*unexpected conv.weight"):
        load(path)
    unknown = tmp_path / "unknown.safetensors"
    weights.save(unknown, {"w": torch.zeros(1)}, arch="transformer9000", config={}, task="x", scale=1)
    with pytest.raises(WeightsError, match="unknown architecture 'transformer9000'"):
        load(unknown)


# the validation sets every shipped model of a task was measured on
METRICS_ON = {"upscale": {"CSet5", "CSet14"}, "colorize": {"imagenette-val", "CSet14"},
              "denoise": {"holdout", "CSet5", "CSet14"}, "deblock": {"holdout", "CSet5", "CSet14"}}


def test_shipped_models_load_and_describe_themselves():
    for name, m in registry.SHIPPED.items():
        r = load(name, device="cpu")
        assert r.scale == m.scale and r.task == m.task
        prov = r.meta.provenance
        assert prov["steps"] > 0 and "metrics" in prov, name
        assert METRICS_ON[m.task] <= set(prov["metrics"]), name
        json.dumps(prov)


def test_unknown_task_is_a_clear_error(tmp_path, cli):
    """A task this version does not perform is never run as another one."""
    path = tiny_sr_file(tmp_path / "inpaint.safetensors", task="inpaint")
    with pytest.raises(UnknownTask, match=r"inpaint\.safetensors: unknown task 'inpaint'"):
        load(path, device="cpu")
    code, _, err = cli("prune", path, "--ratio", "0.5", "--criterion", "l1", "--no-compensate",
                       "-o", tmp_path / "small.safetensors")
    assert code == 2 and "unknown task 'inpaint'" in err and "Traceback" not in err
