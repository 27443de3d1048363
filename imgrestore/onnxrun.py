"""`--backend onnx`: a model's exported graph run by onnxruntime, with no
torch at all (importing torch alone costs a second of every command).

The graph is the `.onnx` that `imgrestore export` writes: for a shipped
model the one in weights/ next to its `.safetensors`, for a weights file
its twin of the same name, or a `.onnx` path given as the model. It
describes itself (its metadata: task, scale, config, and how it tiles), so
nothing else is read. The tiles, the merge and the read-out are the
`Restorer`'s, the same code as the torch backend's; only the tile's trip
through the network is numpy and onnxruntime here, with the same float32
arithmetic as `tensors.to_tensor` / `to_pixels`. A float graph differs
from torch only by the runtimes' summation order (under 1e-5 on [0, 1]; a
few outputs land on the other side of a rounding boundary, one code
value). The shipped graphs are int8 (`imgrestore export --int8`): on 2
threads the x4's tiled network ran 1.55x torch's speed (float: 0.81x), on
1 thread 1.87x (float: 1.0x), for 0.06-0.1 dB of PSNR on CSet14
(weights/MODEL_CARD.md, "Export" and "Speed").

onnxruntime is the optional `[onnx]` extra; without it `--backend onnx` is
a clear error and the torch backend works as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import catalog, tiling
from .errors import ImgRestoreError, ModelNotFound, WeightsError
from .restorer import Restorer

ONNX_FORMAT = "imgrestore-onnx/1"
EXTRA = "pip install 'imgrestore[onnx]'"


class BackendError(ImgRestoreError):
    """Raised when a backend cannot run what was asked: onnxruntime is not
    installed, the task has no exported network, or a device it does not
    drive was asked for."""


def require_runtime():
    """The onnxruntime module, or `BackendError` saying what to install."""
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(f"--backend onnx needs onnxruntime, in the optional [onnx] extra: {EXTRA} "
                           "(or use --backend torch)") from None
    return onnxruntime


def graph_path(model: str | os.PathLike) -> Path:
    """The .onnx of a model: a shipped name's graph in the weights folder, a
    weights file's twin next to it, or the path itself if it is one; raises
    `ModelNotFound` saying how to make it."""
    model = str(model)
    if model.lower().endswith(".onnx"):
        path = Path(model)
        if not path.is_file():
            raise ModelNotFound(f"{path}: ONNX file not found")
        return path
    path = catalog.resolve(model).with_suffix(".onnx")
    if not path.is_file():
        raise ModelNotFound(f"{model} has no ONNX graph ({path} is missing): make it with "
                            f"`imgrestore export {model} -o {path}`, or use --backend torch")
    return path


def session(path: str | os.PathLike | bytes, threads: int | None):
    """An onnxruntime CPU session with `threads` intra-op threads (None:
    onnxruntime's choice, one per core)."""
    ort = require_runtime()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts,
                                providers=["CPUExecutionProvider"])


def _meta(sess, path: Path) -> dict:
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    if meta.get("format") != ONNX_FORMAT:
        raise WeightsError(f"{path}: not an imgrestore ONNX graph (format={meta.get('format')!r}); "
                           "only files written by `imgrestore export` run with --backend onnx")
    if "tiling" not in meta:
        raise WeightsError(f"{path}: written by an older `imgrestore export` that did not record how the "
                           "graph tiles; export it again")
    try:
        return {"task": meta["task"], "scale": int(meta["scale"]), "arch": meta["arch"],
                "config": json.loads(meta["config"]), "tiling": json.loads(meta["tiling"]),
                "provenance": json.loads(meta.get("provenance", "{}"))}
    except (KeyError, ValueError) as e:
        raise WeightsError(f"{path}: damaged metadata ({e})") from None


def to_input(a: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8/uint16 -> (1, C, H, W) float32 in [0, 1], as
    `tensors.to_tensor` computes it (float32 division by the peak)."""
    top = np.float32(65535.0 if a.dtype == np.uint16 else 255.0)
    x = np.empty((1, a.shape[2], a.shape[0], a.shape[1]), np.float32)
    np.divide(a.transpose(2, 0, 1)[None], top, out=x, dtype=np.float32)
    return x


def quantize_into(dst: np.ndarray, y: np.ndarray) -> None:
    """(C, H, W) float32 (overwritten) -> `dst` (H, W, C) uint8/uint16,
    clamped and rounded to the nearest code value (half to even), as
    `tensors.to_pixels`: scaled and clamped in place (clip(y * top, 0, top)
    is clip(y, 0, 1) * top exactly: the product is monotonic), then rounded
    straight into each channel's strided view of `dst`. numpy's transposing
    copy into interleaved pixels was the slow part: per 1072x1072 tile, 9.0
    ms against 5.9 for this, the x4's 48 tiles of a 2000x1500 photo 0.43 s
    against 0.29 (same run). (Two threads, each on half the rows, gained
    only with onnxruntime's spinning threads stopped after each run, which
    cost the network more than the read-out gained.)"""
    top = np.float32(65535.0 if dst.dtype == np.uint16 else 255.0)
    np.multiply(y, top, out=y)
    np.clip(y, 0.0, top, out=y)
    for c in range(y.shape[0]):
        np.rint(y[c], out=dst[..., c], casting="unsafe")


class OnnxRestorer(Restorer):
    """The upscaler's descriptor over an onnxruntime session: the tiling,
    gray, alpha and 16-bit handling are `Restorer`'s."""

    def __init__(self, sess, meta: dict, path: Path, name: str):
        self.model = None
        self.sess = sess
        self.meta = meta
        self.path = path
        self.name = name
        self.task = meta["task"]
        self.scale = meta["scale"]
        t = meta["tiling"]
        self.radius = int(t["radius"])
        self.size_multiple = int(t.get("size_multiple", 1))
        self.tile_safe = bool(t.get("tile_safe", True))
        self.backend = "onnx"
        self.device = "cpu"
        inputs = sess.get_inputs()
        self.input_name = inputs[0].name
        # a second input: the level hint of denoise and deblock ((N,), negative: blind)
        self.level_name = inputs[1].name if len(inputs) > 1 else None
        self.hint = self.level = None  # (a level task's restorer class sets them: `load`)
        self.output_name = sess.get_outputs()[0].name
        self.notes: list[str] = []

    def _inference(self):
        import contextlib

        return contextlib.nullcontext()

    def _run_tile(self, px: np.ndarray, t: tiling.Tile, band: np.ndarray) -> None:
        s, m = self.scale, self.size_multiple
        x = to_input(px[t.py0:t.py1, t.px0:t.px1])  # (1, C, h, w)
        h, w = x.shape[2:]
        if m > 1 and (h % m or w % m):
            x = np.pad(x, ((0, 0), (0, 0), (0, (-h) % m), (0, (-w) % m)), mode="edge")
        feed = {self.input_name: x}
        if self.level_name is not None:
            feed[self.level_name] = np.full((1,), -1.0 if self.level is None else self.level, np.float32)
        y = self.sess.run([self.output_name], feed)[0][0]  # (C, h*s, w*s) and padding
        ys, xs = t.crop_in_output(s)
        quantize_into(band[:, t.x0 * s:t.x1 * s], y[:, ys, xs])

    def describe(self) -> dict:
        d = {"name": self.name, "task": self.task, "scale": self.scale, "arch": self.meta["arch"],
             "backend": "onnx", "file": str(self.path)}
        return d if self.level_name is None else dict(d, hint=self.hint)


def load(model: str | os.PathLike, task, threads: int | None = None, device: str = "auto",
         **settings) -> OnnxRestorer:
    """The restorer of `model`'s ONNX graph for `task` (a `tasks.Task`;
    None: the task its metadata names):
    `OnnxRestorer`, joined for a task with a level hint (denoise, deblock)
    to the task's own restorer class, which reads each picture's level (the
    hint in `settings`, a JPEG's quality) while this one runs the graph;
    raises `BackendError`, `ModelNotFound`, `WeightsError`."""
    if device == "cuda":
        raise BackendError("--backend onnx runs on the CPU; use --backend torch for --device cuda")
    require_runtime()
    path = graph_path(model)
    try:
        sess = session(path, threads)
    except Exception as e:  # onnxruntime's failures on a damaged file have many types
        raise WeightsError(f"{path}: not a readable ONNX graph ({type(e).__name__}: {e})") from None
    meta = _meta(sess, path)
    if task is None:  # the graph's own task
        from .tasks import check_onnx_backend, get

        task = get(meta["task"], path)
        check_onnx_backend(task)
    elif meta["task"] != task.name:
        from .errors import WrongTask

        raise WrongTask(f"model {model} is a {meta['task']} model, not {task.noun}")
    hint_setting = getattr(task.restorer, "hint_setting", None)
    given = {k for k, v in settings.items() if v is not None}
    if given - {hint_setting}:
        raise BackendError(f"--backend onnx takes no settings of {task.name} ({', '.join(sorted(given))})")
    name = str(model) if str(model) in catalog.SHIPPED else path.stem
    if hint_setting is None:
        return OnnxRestorer(sess, meta, path, name)
    if len(sess.get_inputs()) != 2:
        raise WeightsError(f"{path}: {task.noun}'s graph takes the image and its level; this one has "
                           f"{len(sess.get_inputs())} inputs")
    cls = type(f"Onnx{task.restorer.__name__}", (OnnxRestorer, task.restorer), {})
    r = cls(sess, meta, path, name)
    r.set_hint(settings.get(hint_setting))
    return r
