"""`imgrestore export`: the exported graph equals the PyTorch network within
tolerance, whatever the image size, and describes itself; without the
[onnx] extra the command says what to install and everything else runs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import noise_image, randomize
from imgrestore import registry, tasks, weights
from imgrestore.bench import psnr
from imgrestore.models.reparam import reparameterize
from imgrestore.models.sr import ECBSR

EXPORTED = [name for name, t in tasks.TASKS.items() if t.net is not None]


def _onnx():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnxruntime")


def _torch_net(path):
    return reparameterize(registry.build_from_weights(weights.read(path))).eval()


def _run_onnx(path, x: torch.Tensor, io, level: torch.Tensor | None = None) -> torch.Tensor:
    ort = _onnx()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {io.input: x.numpy()}
    if level is not None:
        feed[io.level] = level.numpy()
    return torch.from_numpy(sess.run([io.output], feed)[0])


def _photos(tmp_path, sizes=((60, 84), (47, 101))):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        noise_image(h, w, seed=i).save(folder / f"p{i}.png")
    return folder


@pytest.mark.parametrize("task", EXPORTED)
def test_export_equals_torch_at_any_size(task, tiny_model, tmp_path):
    """Every task with an exported network: the .onnx equals PyTorch within
    tolerance on generated images of sizes it was not traced at, batch 2
    included (a network with a level input: one image blind, one hinted),
    and carries the weights' description and the check."""
    _onnx()
    from imgrestore.export import export_model, read_metadata

    src = tiny_model(task)
    wf = weights.read(src)
    io = tasks.get(task).net
    out = tmp_path / "m.onnx"
    report = export_model(wf, out)
    assert report["check"]["float"]["max_abs_error"] < 1e-3 * (io.out_range()[1] - io.out_range()[0])
    net = _torch_net(src)
    lo, hi = io.out_range()
    for i, (h, w) in enumerate([(40, 56), (33, 71)]):
        rgb = np.asarray(noise_image(h, w, seed=10 + i))
        x = io.sample(rgb)
        x = torch.cat([x, x.flip(-1)])  # (2, C, h, w)
        args = (x,) if io.level is None else (x, torch.tensor([-1.0, io.levels[-1]]))
        with torch.inference_mode():
            want = net(*args)
        got = _run_onnx(out, x, io, *args[1:])
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-3 * (hi - lo)  # the export's own tolerance
    meta = read_metadata(out)
    assert meta["format"] == "imgrestore-onnx/1"
    assert (meta["arch"], json.loads(meta["config"]), meta["task"], int(meta["scale"])) == \
           (wf.arch, wf.config, wf.task, wf.scale)
    prov = json.loads(meta["provenance"])
    assert {k: prov[k] for k in wf.provenance} == wf.provenance  # the weights' own, kept
    assert prov["export"]["precision"] == "float32" and prov["export"]["source"] == src.name
    assert prov["export"]["check"]["float"]["psnr"] > 80


def test_pruned_upscaler_exports(tmp_path):
    """A pruned upscaler (the folded form with per-layer widths) exports like
    a shipped one."""
    _onnx()
    from imgrestore.export import export_model

    config = dict(scale=3, colors=3, channels=16, blocks=2, mid_mult=2.0, deploy=True, widths=[16, 8, 4])
    path = tmp_path / "pruned.safetensors"
    weights.save(path, randomize(ECBSR(**config)).state_dict(), arch="ecbsr", config=config, task="upscale",
                 scale=3)
    report = export_model(weights.read(path), tmp_path / "pruned.onnx")
    assert report["check"]["float"]["max_abs_error"] < 1e-4
    x = torch.rand(1, 3, 21, 30)
    with torch.inference_mode():
        want = _torch_net(path)(x)
    got = _run_onnx(tmp_path / "pruned.onnx", x, tasks.get("upscale").net)
    assert got.shape == (1, 3, 63, 90) and (got - want).abs().max() < 1e-4


def test_cli_exports_shipped_x4_float_and_int8(cli, tmp_path):
    """The command on the shipped x4: checked against PyTorch on the
    calibration photos, the figures printed and stored; int8 close to float."""
    _onnx()
    from imgrestore.export import read_metadata

    photos = _photos(tmp_path)
    code, out, err = cli("export", "upscale-x4", "--calib", photos, "-o", tmp_path / "x4.onnx")
    assert code == 0, err
    assert "max abs error" in err and "PSNR" in err and b"onnx float" in out
    code, out, err = cli("export", "upscale-x4", "--int8", "--calib", photos, "--json", "-o", tmp_path / "x4q.onnx")
    assert code == 0, err
    report = json.loads(out)
    assert report["check"]["float"]["psnr"] > 100
    assert 30 < report["check"]["int8"]["psnr"] < report["check"]["float"]["psnr"]
    meta = read_metadata(tmp_path / "x4q.onnx")
    export = json.loads(meta["provenance"])["export"]
    assert export["precision"] == "int8" and export["int8"]["calibration_inputs"] == 2
    assert export["check"]["int8"]["max_abs_error"] == report["check"]["int8"]["max_abs_error"]
    io = tasks.get("upscale").net
    x = io.sample(np.asarray(noise_image(23, 31, seed=7)))
    with torch.inference_mode():
        want = _torch_net(registry.resolve("upscale-x4"))(x)
    got = _run_onnx(tmp_path / "x4q.onnx", x, io)
    assert got.shape == want.shape == (1, 3, 92, 124) and psnr(got, want, peak=1.0) > 30


def test_cli_refuses_bad_requests(cli, tmp_path, tiny_x2):
    code, _, err = cli("export", tiny_x2, "--int8", "-o", tmp_path / "a.onnx")
    assert code == 2 and "--calib" in err
    (tmp_path / "b.onnx").write_bytes(b"keep")
    code, _, err = cli("export", tiny_x2, "-o", tmp_path / "b.onnx")
    assert code == 2 and "exists" in err and (tmp_path / "b.onnx").read_bytes() == b"keep"


def test_without_onnxruntime(cli, tmp_path, tiny_x2, monkeypatch):
    """With onnxruntime hidden, export says which extra to install (exit 2,
    nothing written), and the processing commands still run."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    code, _, err = cli("export", tiny_x2, "-o", tmp_path / "m.onnx")
    assert code == 2 and "imgrestore[onnx]" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()
    noise_image(16, 16).save(tmp_path / "in.png")
    code, _, err = cli("upscale", "--model", tiny_x2, tmp_path / "in.png", "-o", tmp_path / "out.png", "-q")
    assert code == 0, err
    assert (tmp_path / "out.png").is_file()
