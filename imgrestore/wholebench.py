"""`imgrestore bench whole`: the speed a user sees, the whole command.

Each figure is a real `imgrestore upscale` (or `denoise`, `deblock`) run as
a subprocess (start-up,
imports, decode, tiles, network, encode, the atomic write), on a stated
input size and output format, best of `repeat` after a warm-up run, in
output megapixels per second. Next to it, measured in the same rounds: a
whole-process Pillow bicubic resize of the same input to the same format
(the reference; for denoise and deblock, scale 1, it is Pillow decoding and
re-encoding the file), and the network alone (tiles + network + quantize, no
start-up or IO) in a process of its own for each backend. The commands are timed in
turn in every round, so a busy moment of the machine does not land on one
of them, and the machine's load is reported with the figures.

The inputs: a photo given by path (centre-cropped to the size's aspect and
resized), else generated photo-like images (`photo_like`): flat or noise
images would flatter or punish the PNG encoder. An upscaler's input is a
PNG; denoise's the image with Gaussian noise of sigma 25 (fixed seed) saved
as JPEG quality 95, as a camera's noisy photo; deblock's the image saved as
JPEG quality 20 (whose tables the command reads).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_PNG_LEVEL = 1

# the reference: Pillow's bicubic resize of the same file, whole process, the
# same format (JPEG as imgrestore writes it: quality 95, 4:4:4; PNG at
# Pillow's fastest compressing level, REFERENCE_PNG_LEVEL)
BICUBIC_SCRIPT = """
import sys
from pathlib import Path
from PIL import Image
src, dst, scale, fmt, level = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
files = sorted(Path(src).iterdir()) if Path(src).is_dir() else [Path(src)]
for f in files:
    im = Image.open(f).convert("RGB")
    big = im.resize((im.width * scale, im.height * scale), Image.BICUBIC)
    out = Path(dst) / (f.stem + "." + fmt) if Path(src).is_dir() else Path(dst)
    if fmt == "jpg":
        big.save(out, "JPEG", quality=95, subsampling=0, optimize=False)
    else:
        big.save(out, "PNG", compress_level=level)
"""


# The network alone (tiles, network, quantize: `Restorer.run_pixels`) on
# the case's images, best of `repeat` after a warm-up, in a process of its
# own per backend: two runtimes' thread pools in one process (both spin
# between calls) slow each other down on small images.
NETWORK_SCRIPT = """
import json, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
model, backend, source = sys.argv[1], sys.argv[2], Path(sys.argv[5])
threads, repeat = int(sys.argv[3]), int(sys.argv[4])
backend, _, precision = backend.partition("-")  # torch-fp32, torch-bf16: torch at that precision
if backend == "torch":
    import torch
    torch.set_num_threads(threads)
from imgrestore.tasks import load
r = load(model, device="cpu", backend=backend, threads=threads, precision=precision or "auto")
files = sorted(source.iterdir()) if source.is_dir() else [source]
images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
best = float("inf")
for i in range(repeat + 1):
    t = time.perf_counter()
    for a in images:
        r.run_pixels(a)
    if i:
        best = min(best, time.perf_counter() - t)
print(json.dumps(best))
"""

# One command run with timers around the functions where the time goes;
# writes {phase: seconds} as JSON to argv[1]. Phases nest (a tile's time
# includes the network's); `profile` makes them exclusive.
PROFILE_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
out = sys.argv.pop(1)
acc = {}

def timed(owner, name, key):
    fn = getattr(owner, name)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)

from imgrestore import cli, io, onnxrun, restorer
acc["import"] = time.perf_counter() - t0
timed(cli, "_setup_torch", "load")
timed(cli, "_load_restorer", "load")
timed(io, "decode", "decode")
timed(io, "encode", "encode")
for cls in (io.PngStream, io.JpegStream, io.TiffStream):
    timed(cls, "write", "encode")
    timed(cls, "close", "encode")
timed(io.os, "fsync", "fsync")
timed(restorer.Restorer, "_run_tile", "tile")
timed(restorer.Restorer, "forward", "network")
timed(restorer.Restorer, "forward_tail", "network")
timed(onnxrun.OnnxRestorer, "_run_tile", "tile")
timed(restorer, "assemble", "merge")
make_session = onnxrun.session
def session(*a, **k):
    s = make_session(*a, **k)
    timed(s, "run", "network")
    return s
onnxrun.session = session
code = 0
try:
    cli.cli(prog_name="imgrestore")
except SystemExit as e:
    code = e.code or 0
acc["total"] = time.perf_counter() - t0
acc["imported torch"] = "torch" in sys.modules
with open(out, "w") as f:
    json.dump(acc, f)
sys.stdout.flush()
sys.stderr.flush()
import os
os._exit(code)  # as cli.main leaves
"""

# the profile's phases, exclusive, in the order a command meets them:
# the interpreter's start and exit; importing imgrestore's command line (numpy,
# Pillow, click); loading the model (torch or onnxruntime imported, weights
# read, graph built); decoding the input (colour conversions included);
# a tile's trip to float and back to 8 bits (the crop and quantize around
# the network); the network; merging bands into a whole output (small
# outputs); encoding (PNG filter + deflate, JPEG); fsync of the output;
# the rest (the pipeline, band bookkeeping, gray/alpha handling, file IO)
PHASES = ("start+exit", "import", "load model", "decode", "tiles", "network", "merge", "encode", "fsync", "other")


def profile(argv: list[str], env: dict, tmp: Path) -> dict:
    """Where one run of the command `argv` (a `command_argv`) spends its
    time, in seconds per phase (PHASES), with the run's wall time."""
    out = tmp / "profile.json"
    t = time.perf_counter()
    p = subprocess.run([argv[0], "-c", PROFILE_SCRIPT, str(out)] + argv[3:], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"profiling {' '.join(argv)} failed: {p.stderr.decode(errors='replace')}")
    import json

    acc = json.loads(out.read_text())
    tile, network = acc.get("tile", 0.0), acc.get("network", 0.0)
    merge = acc.get("merge", 0.0)
    phases = {
        "start+exit": wall - acc["total"],
        "import": acc["import"],
        "load model": acc.get("load", 0.0),
        "decode": acc.get("decode", 0.0),
        "tiles": max(0.0, tile - network),
        "network": network,
        "merge": max(0.0, merge - tile) if merge else 0.0,  # a merge drives the tiles it merges
        "encode": acc.get("encode", 0.0),
        "fsync": acc.get("fsync", 0.0),
    }
    phases["other"] = max(0.0, wall - sum(phases.values()))
    return {"wall": wall, "phases": phases, "imported_torch": acc["imported torch"]}


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 with a photo's statistics where an encoder looks:
    a 1/f amplitude spectrum (smooth regions, edges at every scale),
    correlated colour channels, and a little sensor grain."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    mix = rng.normal(0, 0.35, (3, 3)).astype(np.float32) + np.eye(3, dtype=np.float32)  # colour correlation
    grid = 3
    amp = 1.0
    while grid < max(h, w) // 2:
        gh, gw = max(2, grid * h // max(h, w)), max(2, grid * w // max(h, w))
        coarse = rng.standard_normal((gh, gw, 3)).astype(np.float32) @ mix
        for c in range(3):
            acc[..., c] += amp * np.asarray(Image.fromarray(coarse[..., c], "F").resize((w, h), Image.BICUBIC))
        grid *= 2
        amp *= 0.5  # 1/f: each octave up, half the amplitude
    lo, hi = np.percentile(acc, (1, 99))
    img = (acc - lo) / (hi - lo) * 235 + 10 + rng.normal(0, 2.0, acc.shape)  # grain, sigma 2
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def photo_input(photo: str | Path, h: int, w: int) -> np.ndarray:
    """The photo centre-cropped to w:h and resized to (h, w, 3) uint8."""
    from PIL import Image

    with Image.open(photo) as im:
        im = im.convert("RGB")
        s = min(im.width / w, im.height / h)
        cw, ch = w * s, h * s
        box = ((im.width - cw) / 2, (im.height - ch) / 2, (im.width + cw) / 2, (im.height + ch) / 2)
        return np.asarray(im.resize((w, h), Image.LANCZOS, box=box))


@dataclass
class Case:
    """One input set: a large image or a folder of small ones."""

    name: str  # "2000x1500" or "folder 16 x 320x240"
    source: Path  # a file or a folder
    in_mp: float  # input megapixels in all


TASKS = ("upscale", "denoise", "deblock")


def save_input(a: np.ndarray, stem: Path, task: str) -> Path:
    """Write the input image `a` as `task`'s command meets it (see the
    module's docstring); returns the file."""
    from PIL import Image

    if task == "denoise":
        noisy = a.astype(np.float32) + np.random.default_rng(0).normal(0, 25, a.shape).astype(np.float32)
        path = stem.with_suffix(".jpg")
        Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)).save(path, quality=95)
    elif task == "deblock":
        path = stem.with_suffix(".jpg")
        Image.fromarray(a).save(path, quality=20)
    else:
        path = stem.with_suffix(".png")
        Image.fromarray(a).save(path, compress_level=1)
    return path


def make_cases(tmp: Path, size: tuple[int, int] | None, folder: tuple[int, int, int] | None,
               photo: str | None, task: str = "upscale") -> list[Case]:
    """The large image (`size` = (w, h)) and the folder (`folder` = (n, w,
    h)) as files under `tmp` (`save_input`; either may be None: not
    timed)."""
    def folder_images(n, fw, fh):
        if not photo:
            return [photo_like(fh, fw, seed=i + 1) for i in range(n)]
        # distinct crops of the photo seen at four times the size
        big = photo_input(photo, fh * 4, fw * 4)
        return [np.ascontiguousarray(big[(i // 4 % 4) * fh * 3 // 4:][:fh, (i % 4) * fw * 3 // 4:][:, :fw])
                for i in range(n)]

    cases = []
    if size:
        w, h = size
        img = photo_input(photo, h, w) if photo else photo_like(h, w)
        large = save_input(img, tmp / f"large-{w}x{h}", task)
        cases.append(Case(f"{w}x{h}", large, w * h / 1e6))
    if folder:
        n, fw, fh = folder
        d = tmp / f"folder-{n}x{fw}x{fh}"
        d.mkdir()
        imgs = folder_images(n, fw, fh)
        for i, a in enumerate(imgs):
            save_input(a, d / f"img{i:03d}", task)
        cases.append(Case(f"folder {n} x {fw}x{fh}", d, n * fw * fh / 1e6))
    return cases


def _env() -> dict:
    """The children import the same imgrestore as this process."""
    import imgrestore

    env = dict(os.environ)
    root = str(Path(imgrestore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _runner(argv: list[str], env: dict):
    def run():
        p = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    return run


def command_argv(case: Case, out: Path, scale: int, model: str | None, backend: str, threads: int,
                 fmt: str, task: str = "upscale") -> list[str]:
    """The imgrestore command a user would type for the case."""
    argv = [sys.executable, "-m", "imgrestore", task, *([f"--x{scale}"] if task == "upscale" else []),
            "--threads", str(threads), "-q", "--overwrite", "--format", fmt]
    backend, _, precision = backend.partition("-")  # torch-fp32, torch-bf16: torch at that --precision
    if backend != "torch":
        argv += ["--backend", backend]
    if precision:
        argv += ["--precision", precision]
    if model:
        argv += ["--model", model]
    return argv + [str(case.source), "-o", str(out)]


def check_runnable(models: list[str], backends: list[str]) -> None:
    """Raise the error the command itself would give (`ModelNotFound`,
    `BackendError`) for a model or backend it cannot run, before anything
    is timed."""
    from . import catalog

    for model in models:
        catalog.resolve(model)
        if "onnx" in backends:
            from . import onnxrun

            onnxrun.require_runtime()
            onnxrun.graph_path(model)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def bench_whole(scale: int, models: list[str], backends: list[str], formats: list[str],
                size: tuple[int, int] | None, folder: tuple[int, int, int] | None, photo: str | None,
                threads: int, repeat: int, log=lambda m: None, profiles: bool = False, task: str = "upscale") -> dict:
    """Rows of {case, format, method, seconds, mp_per_s, vs_bicubic}: the
    whole command of `task` per model (none given: the shipped one of the
    task and scale) and backend and the reference per format, and the
    network alone per model and backend, for each case. With `profiles`, one
    more run of each command under timers: where its time goes (`profile`).
    For denoise and deblock the scale is 1."""
    from .bench import best_of

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} ({', '.join(TASKS)})")
    scale = scale if task == "upscale" else 1
    default_model = f"upscale-x{scale}" if task == "upscale" else task
    check_runnable(models or [default_model], backends)
    shown = {m: Path(m).stem for m in models}
    runs = [(m, b, f"imgrestore {task}{f' --model {shown[m]}' if len(models) > 1 else ''}, {b}")
            for m in (models or [None]) for b in backends]
    reference = ("Pillow bicubic, whole process (reference)" if task == "upscale"
                 else "Pillow decode + encode, whole process (reference)")
    env = _env()
    rows, profiled = [], []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="imgrestore-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cases = make_cases(tmp, size, folder, photo, task)
        for case in cases:
            out_mp = case.in_mp * scale * scale
            for fmt in formats:
                folder_out = case.source.is_dir()
                out_for = (lambda tag: tmp / f"out-{tag}" if folder_out else tmp / f"out-{tag}.{fmt}")
                names, fns = [], []
                for i, (model, b, name) in enumerate(runs):
                    names.append(name)
                    argv = command_argv(case, out_for(f"{i}-{b}"), scale, model, b, threads, fmt, task)
                    fns.append(_runner(argv, env))
                    if profiles:
                        profiled.append({"case": case.name, "format": fmt, "backend": b, "model": shown.get(model),
                                         **profile(argv, env, tmp)})
                ref_out = out_for("bicubic")
                if folder_out:
                    ref_out.mkdir(exist_ok=True)
                names.append(reference)
                fns.append(_runner([sys.executable, "-c", BICUBIC_SCRIPT, str(case.source), str(ref_out),
                                    str(scale), fmt, str(REFERENCE_PNG_LEVEL)], env))
                log(f"timing {case.name} -> {task}{f' x{scale}' if task == 'upscale' else ''} {fmt}: {len(fns)} "
                    f"commands, best of {repeat}")
                secs = best_of(fns, repeat=repeat, warmup=1)
                ref = secs[-1]
                for name, sec in zip(names, secs):
                    rows.append({"case": case.name, "format": fmt, "method": name, "seconds": sec,
                                 "mp_per_s": out_mp / sec, "vs_bicubic": ref / sec})
            # the network alone, on the same pixels
            for m, b, name in runs:
                p = subprocess.run([sys.executable, "-c", NETWORK_SCRIPT, m or default_model, b, str(threads),
                                    str(repeat), str(case.source)], env=env, capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError(f"timing the network of {m or default_model} failed: {p.stderr}")
                sec = float(p.stdout.strip().splitlines()[-1])
                rows.append({"case": case.name, "format": "-",
                             "method": name.replace(f"imgrestore {task}", "network only (tiles, no start-up or IO)"),
                             "seconds": sec, "mp_per_s": out_mp / sec, "vs_bicubic": None})
    return {"task": task, "scale": scale, "models": [shown[m] for m in models] or [default_model], "threads": threads,
            "repeat": repeat, "input": photo or "generated photo-like images",
            "load_average": {"before": load_before, "after": load_average()}, "cpus": os.cpu_count(),
            "rows": rows, "profiles": profiled, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
