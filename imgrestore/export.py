"""Export a model's network to ONNX, float or int8, checked as it is written.

What is exported is the network the task describes (`Task.net`, a `NetIO`):
for an upscaler the folded ECBSR (plain 3x3 convolutions, pixel shuffle,
output clipped to [0, 1]), any image size; for the colorizer its network at
the working resolution (L in, a*b* at half resolution out; the read-out that
joins a*b* to the photo's own L stays with the caller, and a reference
photo's global features are not an input); for denoise and deblock the
JSNet with its level hint as a second input ((N,) float, negative: blind;
the hint read from a JPEG's tables stays with the caller). Batch, height
and width are dynamic.

The export checks itself before anything is written: the graph is run by
onnxruntime on photos (the calibration images, or smooth generated ones when
none are given) and compared with PyTorch: the largest absolute error and the
PSNR between the two (peak: the output's range). A float graph that differs
by more than `FLOAT_TOLERANCE` of that range is an `ExportError`; an int8
graph's difference is measured and reported.

int8 is onnxruntime's static quantization (QDQ: int8 weights per output
channel, uint8 activations whose ranges are calibrated on `--calib` photos:
the 0.001st to 99.999th percentile of each tensor's values, which on the
shipped x4 lost 0.06 dB of PSNR on CSet14 where the full min-max range lost
0.11 and entropy calibration 0.11; weights/MODEL_CARD.md, "Export").

The .onnx describes itself like our safetensors: its metadata_props carry
`format`, `arch`, `config`, `task`, `scale` and `provenance` (the weights'
own, plus `export`: the source file and its SHA-256, the versions, the
opset, the check's figures, the int8 settings), with `io` (what the input
and output hold), `out_range` and `tiling` (receptive radius, size multiple,
whether tiles are exact: what `--backend onnx` needs, reading no other file).

onnx, onnxscript (torch's exporter needs them) and onnxruntime are the
optional `[onnx]` extra, imported only here and only when exporting.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io as io_mod
import json
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import registry, tasks
from .errors import ExportError
from .models.reparam import reparameterize
from .onnxrun import ONNX_FORMAT, session
from .tasks.base import NetIO

CHECK_IMAGES = 8  # photos the export compares the runtimes on
CALIB_IMAGES = 32  # photos int8 calibration reads, evenly spread over --calib
# side of the network inputs int8 calibrates on (centre crops): onnxruntime
# keeps every activation of every input (the x4 at 32 inputs of 256x256 took
# 6.5 GB)
CALIB_SIDE = 128
# the largest float error allowed, as a fraction of the output's range: float
# kernels differ in summation order only (measured about 1e-6 on [0, 1])
FLOAT_TOLERANCE = 1e-3
EXTRA = "pip install 'imgrestore[onnx]'"
# int8 activation ranges: this percentile of each tensor's values over the
# calibration photos (and 100 - it at the bottom)
PERCENTILE = 99.999


def require_onnx() -> None:
    """Raise `ExportError` unless the `[onnx]` extra is installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"exporting to ONNX needs the optional [onnx] extra ({e.name} is missing): {EXTRA}") from None


# ---------------------------------------------------------------------------- inputs

def photos(folders: list[str | Path], n: int) -> list[np.ndarray]:
    """Up to `n` photos, (H, W, 3) uint8, evenly spread over the images of
    `folders` (sorted), so a large folder is sampled, not its first files."""
    from PIL import Image

    from .io import list_images

    files = list_images(folders)
    if len(files) > n:
        files = [files[round(i * (len(files) - 1) / (n - 1))] for i in range(n)] if n > 1 else files[:1]
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(np.asarray(im.convert("RGB")).copy())
    return out


def generated_photos(seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour images (a coarse random grid, bilinearly
    upsampled) of two sizes, one with odd sides: check inputs when no photos
    are given."""
    import torch.nn.functional as F

    from .tensors import to_pixels

    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in ((96, 128), (75, 133)):
        coarse = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
        out.append(to_pixels(F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)))
    return out


def network_inputs(io: NetIO, images: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """The network's arguments for each sampled image: (x,), or, for a
    network with a level input, (x, level) at each of `io.levels`."""
    if io.level is None:
        return [(x,) for x in images]
    return [(x, torch.full((x.shape[0],), float(lv))) for x in images for lv in io.levels]


def feeds(io: NetIO, args: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    """The network's arguments as onnxruntime's input feed."""
    names = [io.input] + ([io.level] if io.level is not None else [])
    return {n: np.ascontiguousarray(a.detach().cpu().numpy(), dtype=np.float32) for n, a in zip(names, args)}


def inputs_described(io: NetIO, inputs: list[tuple[torch.Tensor, ...]]) -> tuple[int, str]:
    """(how many photos `inputs` were made from, ", each at levels ..." for
    a network with a level input, else "")."""
    if io.level is None:
        return len(inputs), ""
    return len(inputs) // len(io.levels), f", each at levels {', '.join(f'{lv:g}' for lv in io.levels)}"


def same_size(inputs: list[tuple[torch.Tensor, ...]], side: int,
              multiple: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """Centre crops (of each argument tuple's image) of the smallest height
    and width among `inputs`, at most `side`, a multiple of `multiple`: the
    histogram calibration stacks every input's activations, and holds them
    all in memory."""
    h = min(side, *(a[0].shape[2] for a in inputs)) // multiple * multiple
    w = min(side, *(a[0].shape[3] for a in inputs)) // multiple * multiple
    out = []
    for x, *rest in inputs:
        y, x0 = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
        out.append((x[:, :, y:y + h, x0:x0 + w].contiguous(), *rest))
    return out


# ---------------------------------------------------------------------------- runtimes

def to_onnx(net: torch.nn.Module, io: NetIO, example: tuple[torch.Tensor, ...]):
    """The network as an ONNX ModelProto with dynamic batch, height and
    width (torch's dynamo exporter); `example`: its arguments."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    dims = {0: batch, 2: torch.export.Dim("height", min=2, max=1 << 16),
            3: torch.export.Dim("width", min=2, max=1 << 16)}
    # the exporter logs a warning for each torchvision operator it cannot
    # register (torchvision is not ours to need)
    # traced at batch 2: at 1 the exporter would take the level's (1,) for
    # a broadcast and fix the batch at 1
    example = tuple(torch.cat([a, a]) for a in example)
    params = list(inspect.signature(net.forward).parameters)  # its arguments' names
    shapes = {params[0]: dims}
    names = [io.input]
    if io.level is not None:
        shapes[params[1]] = {0: batch}
        names.append(io.level)
    try:
        with _quiet("torch.onnx._internal.exporter._registration"), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export
            # the level's batch axis is the image's: said once per export
            warnings.filterwarnings("ignore", message=r".*The axis name: batch will not be used")
            program = torch.onnx.export(net, example, input_names=names, output_names=[io.output],
                                        dynamic_shapes=shapes, dynamo=True, optimize=True, verbose=False)
            return program.model_proto
    except Exception as e:  # the exporter's failures have many types
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {e}") from None


@contextlib.contextmanager
def _quiet(logger: str):
    """Only errors from `logger` while inside."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class OnnxNet:
    """An exported graph run by onnxruntime, called like the PyTorch network
    it came from (tensor in, tensor out, the same `cfg`), so a task's own
    evaluation code measures it unchanged."""

    def __init__(self, sess, io: NetIO, cfg):
        self.sess, self.io, self.cfg = sess, io, cfg

    def __call__(self, x: torch.Tensor, level=None, global_from=None) -> torch.Tensor:
        """`level` (a network with a level input): a number, (N,) numbers, or
        None for blind."""
        if global_from is not None:
            raise ExportError("the exported network takes no reference image")
        args = (x,)
        if self.io.level is not None:
            lv = torch.full((x.shape[0],), -1.0) if level is None else torch.as_tensor(level, dtype=torch.float32)
            args = (x, lv.reshape(-1).expand(x.shape[0]))
        elif level is not None:
            raise ExportError("the exported network takes no level")
        return torch.from_numpy(self.sess.run([self.io.output], feeds(self.io, args))[0])

    def eval(self) -> "OnnxNet":
        return self


def compare(run: Callable[..., torch.Tensor], net: torch.nn.Module, inputs: list[tuple[torch.Tensor, ...]],
            peak: float) -> dict:
    """Largest absolute error and PSNR (peak `peak`, squared errors pooled
    over every input) of `run` against the PyTorch network; `inputs`: the
    networks' arguments (`network_inputs`)."""
    worst, sq, count = 0.0, 0.0, 0
    for args in inputs:
        with torch.inference_mode():
            want = net(*args).double()
        got = run(*args).double()
        if got.shape != want.shape:
            raise ExportError(f"the exported network's output is {tuple(got.shape)} for an input "
                              f"{tuple(args[0].shape)}; PyTorch's is {tuple(want.shape)}")
        d = got - want
        worst = max(worst, float(d.abs().max()))
        sq += float((d * d).sum())
        count += d.numel()
    mse = sq / count
    return {"max_abs_error": worst, "psnr": math.inf if mse == 0 else 10 * math.log10(peak * peak / mse),
            "inputs": [list(a[0].shape) for a in inputs]}


def quantize_int8(float_path: Path, out_path: Path, io: NetIO, calib: list[tuple[torch.Tensor, ...]]) -> dict:
    """Static int8 quantization of the float graph (QDQ; int8 weights per
    output channel, uint8 activations with percentile ranges over `calib`);
    returns its settings for the provenance."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            args = next(self.it, None)
            return None if args is None else feeds(io, args)

    settings = dict(quant_format="QDQ", weights="int8 per output channel", activations="uint8",
                    calibration=f"percentile {PERCENTILE}", calibration_inputs=len(calib))
    # onnxruntime's advice to pre-process first goes to the root logger, and
    # its histogram calibration prints its progress on stdout (which carries
    # --json)
    with _quiet("root"), contextlib.redirect_stdout(io_mod.StringIO()):
        quantize_static(str(float_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": PERCENTILE})
    return settings


# ---------------------------------------------------------------------------- the export

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(model, wf, io: NetIO, export_info: dict) -> None:
    """Write the self-description into the ModelProto's metadata_props,
    with how the graph tiles (`--backend onnx` reads no other file)."""
    spec = registry.ARCHS[wf.arch]
    provenance = dict(wf.provenance)
    provenance["export"] = export_info
    meta = {
        "format": ONNX_FORMAT,
        "arch": wf.arch,
        "config": json.dumps(wf.config, sort_keys=True),
        "task": wf.task,
        "scale": str(int(wf.scale)),
        "provenance": json.dumps(provenance, sort_keys=True),
        "io": io.doc,
        "out_range": json.dumps(list(io.out_range())),
        "tiling": json.dumps({"radius": spec.receptive_radius(wf.config), "size_multiple": spec.size_multiple,
                              "tile_safe": spec.tile_safe}),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.doc_string = f"imgrestore {wf.task} network ({wf.arch}, x{wf.scale}): {io.doc}"


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an .onnx file, as a dict."""
    require_onnx()
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def export_model(wf, out: Path, *, int8: bool = False, calib: list[str] | None = None, threads: int = 2,
                 overwrite: bool = False, val: list[str] | None = None, speed: bool = False,
                 log: Callable[[str], None] = lambda m: None) -> dict:
    """Export the network of `wf` (a `weights.WeightsFile`) to `out`,
    checked against PyTorch on `calib` photos (generated ones without);
    int8 needs `calib`. With `val` folders the task's own evaluation runs on
    every runtime; with `speed` each runtime is timed on the task's timing
    input. Returns the report; raises `ExportError`."""
    import onnx

    from . import __version__
    from .io import write_atomic

    require_onnx()
    task = tasks.get(wf.task, wf.path)
    io = task.net
    if io is None:
        raise ExportError(f"{wf.path}: {task.noun}'s network is not exported (its task has no exported form)")
    if int8 and not calib:
        raise ExportError("int8 needs calibration images (--calib DIR)")
    net = reparameterize(registry.build_from_weights(wf)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    lo, hi = io.out_range()
    peak = hi - lo

    source = ", ".join(map(str, calib or []))
    check_inputs = network_inputs(io, [io.sample(a) for a in (photos(calib, CHECK_IMAGES) if calib
                                                              else generated_photos())])
    log(f"exporting {wf.path.name} ({wf.arch}, {wf.task} x{wf.scale}) with torch {torch.__version__}")
    model = to_onnx(net, io, check_inputs[0])
    float_bytes = model.SerializeToString()
    float_sess = session(float_bytes, threads)
    check = {"float": compare(OnnxNet(float_sess, io, None), net, check_inputs, peak)}
    n, levels = inputs_described(io, check_inputs)
    check["images"] = (f"{n} photos from {source}" if calib else f"{n} generated images") + levels
    f = check["float"]
    log(f"float: max abs error {f['max_abs_error']:.3g}, PSNR {f['psnr']:.2f} dB against PyTorch "
        f"({check['images']}; output range {lo:g}..{hi:g})")
    if f["max_abs_error"] > FLOAT_TOLERANCE * peak:
        raise ExportError(f"the exported float network differs from PyTorch by {f['max_abs_error']:.3g} "
                          f"(tolerance {FLOAT_TOLERANCE * peak:.3g}): not written")
    info = {
        "source": wf.path.name, "source_sha256": _sha256(wf.path), "imgrestore": __version__,
        "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
        "precision": "int8" if int8 else "float32", "check": check,
    }
    report = {"model": wf.path.name, "task": wf.task, "scale": wf.scale, "output": str(out), "threads": threads,
              "check": check}
    sessions = {"onnx float": float_sess}
    with tempfile.TemporaryDirectory(prefix="imgrestore-export-") as tmp:
        if int8:
            fp, qp = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
            fp.write_bytes(float_bytes)
            calib_inputs = same_size(network_inputs(io, [io.sample(a) for a in photos(calib, CALIB_IMAGES)]),
                                     CALIB_SIDE, registry.ARCHS[wf.arch].size_multiple)
            n, levels = inputs_described(io, calib_inputs)
            log(f"int8: calibrating on {n} photos from {source}{levels}")
            info["int8"] = quantize_int8(fp, qp, io, calib_inputs)
            model = onnx.load(str(qp))
            sessions["onnx int8"] = session(qp, threads)
            check["int8"] = compare(OnnxNet(sessions["onnx int8"], io, None), net, check_inputs, peak)
            q = check["int8"]
            log(f"int8: max abs error {q['max_abs_error']:.3g}, PSNR {q['psnr']:.2f} dB against PyTorch")
        describe(model, wf, io, info)
        write_atomic(model.SerializeToString(), out, overwrite)
    log(f"wrote {out}")

    if val:
        if task.evaluate is None:
            raise ExportError(f"{task.noun} has no evaluation to run on --val")
        report["quality"] = {}
        for folder in val:
            rows = {"torch": task.evaluate(net, folder)}
            for name, sess in sessions.items():
                rows[name] = task.evaluate(OnnxNet(sess, io, net.cfg), folder)
            report["quality"][str(folder)] = rows
    if speed and task.timing_input is not None:
        report["speed"] = time_runtimes(net, io, sessions, network_inputs(io, [task.timing_input()])[0], threads)
    return report


def time_runtimes(net: torch.nn.Module, io: NetIO, sessions: dict, args: tuple[torch.Tensor, ...], threads: int,
                  repeat: int = 5) -> dict:
    """Best-of-`repeat` seconds of the network on `args` (its image, and
    level): PyTorch eager (in channels_last, as the restorer runs it) and
    each onnxruntime session, timed in turn in every round, with `threads`
    threads each."""
    from .bench import best_of

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    net_cl = net.to(memory_format=torch.channels_last)
    x, *rest = args
    x_cl = x.contiguous(memory_format=torch.channels_last)
    xn = feeds(io, args)

    def run_torch():
        with torch.inference_mode():
            net_cl(x_cl, *rest)

    fns = [run_torch] + [lambda s=s: s.run([io.output], xn) for s in sessions.values()]
    try:
        secs = best_of(fns, repeat=repeat, warmup=1)
    finally:
        torch.set_num_threads(torch_threads)
    return {"input": list(x.shape), "threads": threads, "repeat": repeat,
            "seconds": dict(zip(["torch eager", *sessions], secs))}
