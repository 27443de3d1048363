"""Super-resolution training task: bicubic-downscaled pairs, L1 loss.

Two architectures: `ecbsr` (the fast tier) and `hasn` (the quality tier).
With a `teacher` (a weights file of a stronger upscaler of the same scale,
e.g. RLFN converted by `imgrestore convert rlfn`) the loss is distilled:
`distill` of it is L1 to the teacher's output on the same LR crop, the rest
L1 to the HR crop. The teacher only shapes the training; the shipped network
is ours, and its provenance names the teacher, its file's SHA-256 and its
licence."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..bench import best_of
from ..io import list_images
from ..models.hasn import HASN
from ..models.sr import ECBSR
from ..tasks.base import checkpoint_sampler
from ..tasks.upscale import TASK, load_rgb
from .loop import TrainTask, init_from, split_holdout

HOLDOUT_CROP = 384  # hold-out photos are scored on their centre HR crop (cheap enough for every evaluation)


ARCHS = {"ecbsr": (ECBSR, dict(mid_mult=2.0)), "hasn": (HASN, {})}


def load_teacher(path: Path, scale: int, log=print):
    """A frozen upscaler of `scale` from its weights file, and the line of
    provenance that names it."""
    import hashlib

    from .. import registry, weights

    wf = weights.read(path)
    if wf.task != "upscale" or wf.scale != scale:
        raise SystemExit(f"teacher {path}: a {wf.task} x{wf.scale} model, not an x{scale} upscaler")
    net = registry.build_from_weights(wf).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    src = wf.provenance if isinstance(wf.provenance, dict) else {}
    note = dict(arch=wf.arch, file=Path(path).name, sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                **{k: src[k] for k in ("licence", "origin", "package", "source_file") if k in src})
    log(f"teacher {Path(path).name}: {wf.arch} x{wf.scale}, {registry.count_params(net):,} parameters")
    return net, note


def teacher_runner(teach: torch.nn.Module, precision: str, probe: torch.Tensor, log=print):
    """lr -> the teacher's float32 output, in float32 or under bfloat16
    autocast. `precision` auto times both on `probe` (in turn, best of 2) and
    keeps the faster: bfloat16 convolutions are native on some CPUs (AVX512-BF16,
    AMX) and emulated, slower, on others. Returns (run, the precision used)."""

    def run_fp32(lr):
        with torch.no_grad():
            return teach(lr)

    def run_bf16(lr):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return teach(lr).float()

    runs = {"fp32": run_fp32, "bf16": run_bf16}
    if precision != "auto":
        return runs[precision], precision
    secs = dict(zip(runs, best_of([lambda run=run: run(probe) for run in runs.values()], repeat=2)))
    pick = min(secs, key=secs.get)
    log(f"teacher precision: {pick} ({secs['bf16']:.3f} s a batch in bfloat16, {secs['fp32']:.3f} s in float32)")
    return runs[pick], pick


def make_task(data: list[str], scale: int, *, arch: str = "ecbsr", channels: int = 32, blocks: int = 4,
              patch: int = 48, batch: int = 16, val: list[str] | None = None,
              init: Path | None = None, teacher: Path | None = None, distill: float = 0.5,
              teacher_precision: str = "auto", degrade: str = "bicubic", holdout: float = 0.0, seed: int = 0,
              log=print) -> TrainTask:
    torch.manual_seed(seed)
    cls, extra = ARCHS[arch]
    config = dict(scale=scale, colors=3, channels=channels, blocks=blocks, **extra)
    model = cls(**config)
    config = model.config()
    if init:
        init_from(model, init, log)
    files, held = split_holdout(list_images(data), holdout)
    images = load_rgb(files, min_side=patch * scale)
    log(f"loaded {len(images)} training images from {', '.join(map(str, data))}"
        + (f"; {len(held)} held out" if holdout else ""))
    pairs = TASK.pairs(images, scale, patch, seed=seed, degrade=degrade)

    sample = checkpoint_sampler(pairs, batch, seed)

    teach, teacher_note = load_teacher(teacher, scale, log) if teacher else (None, None)
    # channels_last, as the restorer runs them: a third faster on the CPU
    # (HASN x4, batch 16 of 64 px, one thread: 1.02 s a step against 1.51)
    model.to(memory_format=torch.channels_last)
    teach_run = None
    if teach is not None:
        teach.to(memory_format=torch.channels_last)
        # a batch of its own sampler: the training batches stay what they were
        probe = TASK.pairs(images, scale, patch, seed=seed + 1, degrade=degrade).batch(batch)[0]
        probe = probe.contiguous(memory_format=torch.channels_last)
        teach_run, teacher_precision = teacher_runner(teach, teacher_precision, probe, log)
        teacher_note = dict(teacher_note, precision=teacher_precision)

    def loss(m, b):
        lr, hr = b
        lr = lr.contiguous(memory_format=torch.channels_last)
        y = m(lr)
        if teach is None or not distill:
            return F.l1_loss(y, hr)
        want = teach_run(lr)
        return (1 - distill) * F.l1_loss(y, hr) + distill * F.l1_loss(y, want)

    def evaluate(m, folders=val or [], quick=False):
        """The hold-out (centre crops; settings are chosen on it), then the
        validation folders (only the first one when `quick`)."""
        out = {"holdout": TASK.evaluate(m, held, crop=HOLDOUT_CROP)} if held else {}
        return out | {Path(f).name: TASK.evaluate(m, f) for f in (folders[:1] if quick else folders)}

    return TrainTask(
        arch=arch, task=TASK.name, scale=scale, model=model, config=config,
        batch=sample, loss=loss, evaluate=evaluate,
        quick_eval=(lambda m: evaluate(m, quick=True)) if val or held else None,
        provenance=dict(
            data=[Path(d).name for d in data], images=len(images), patch_lr=patch, batch=batch,
            degradation="pillow bicubic downscale of HR crops zoomed out by U(0.5, 1)" + (
                "; then, on half the LR crops, Gaussian noise of sigma U(0, 4), and a Pillow JPEG of quality "
                "U(60, 95), 4:2:0 or 4:4:4" if degrade == "photo" else ""),
            loss=f"L1, {distill:g} of it to the teacher's output" if teacher else "L1",
            teacher=teacher_note, optimizer="Adam(0.9, 0.99) cosine", init=str(Path(init).name) if init else None,
            seed=seed,
            holdout=dict(fraction=holdout, images=len(held), crop=HOLDOUT_CROP,
                         rule="crc32(file name) % 10000 < fraction * 10000") if holdout else None,
        ),
    )
