"""The `Task` record: everything that makes a task one, in one place.

Nothing here imports torch: the command line builds its commands from the
task table before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Task:
    name: str  # the weights files' `task`, and the command's name
    noun: str  # what its models are called in messages ("an upscaler")
    help: str  # the command's help
    # the descriptor that runs its models; its keyword arguments are the
    # command's settings (see `settings`)
    restorer: type
    suffix: Callable[[Any], str]  # restorer -> suffix of outputs written next to their input
    # every suffix `suffix` can give, as regular expressions (folder and glob
    # scans leave such files out, and those with a model's name after them:
    # `pipeline.default_suffix`)
    output_suffixes: tuple[str, ...] = ()
    # the command's own click options (decorators), on top of the shared
    # groups the command line gives every processing command
    options: tuple = ()
    # own option values as click gave them -> as the functions below take
    # them (raises click.UsageError for options that contradict each other)
    parse: Callable[[dict], dict] = lambda values: values
    default_model: Callable[[dict], str] = lambda values: ""  # own option values -> shipped model
    # own option values, --max-pixels -> the restorer's keyword arguments
    # (raises click.BadParameter for a bad value)
    settings: Callable[[dict, int], dict] = lambda values, max_pixels: {}
    # (restorer, own option values) -> why this model does not fit them, or None
    check: Callable[[Any, dict], str | None] = lambda restorer, values: None
    # (restorer, own option values, load(model name) -> restorer, whether
    # the user chose the model) -> what the command runs: the restorer, or a
    # wrapper of it (upscale: any scale, a width or a height)
    wrap: Callable[[Any, dict, Callable[[str], Any], bool], Any] = lambda restorer, values, load, chosen: restorer
    tiled: bool = True  # the command tiles (--tile, --tile-overlap mean something)
    # what runs its models: "torch", and "onnx" where the exported network
    # is the whole model (an image in, the restored image out: `onnxrun`)
    backends: tuple[str, ...] = ("torch",)
    # what `--precision auto` may pick for its torch networks: ("fp32",) or
    # ("fp32", "bf16") where bfloat16 was measured to keep its quality
    precisions: tuple[str, ...] = ("fp32",)
    # how training pairs are made: a sampler class with `.rng` and `.batch(n)`
    pairs: type | None = None
    # (raw model, folder or files, limit) -> quality summary, next to the
    # task's baseline measured in the same run
    evaluate: Callable[..., dict] | None = None
    # (calibration folders, scale, seed) -> `Calibration` for prune
    calibration: Callable[[list[str], int, int], "Calibration"] | None = None
    timing_input: Callable[[], Any] | None = None  # () -> the input prune times and counts MACs on
    # (model, scale) -> GMACs per `cost_unit`; `cost_key` names it in `models --json`
    cost: Callable[[Any, int], float] | None = None
    cost_key: str = ""
    cost_unit: str = ""
    # the network as `export` writes it (an ONNX graph); None: not exported
    net: "NetIO | None" = None


@dataclass(frozen=True)
class NetIO:
    """A task's network seen from outside, as `imgrestore export` writes it:
    the names and meaning of its input and output tensors, how a photo
    becomes an input (for the export's check and int8 calibration), and the
    range of its output (the peak of the PSNR between two runtimes)."""

    input: str  # the graph's input name
    output: str  # the graph's output name
    doc: str  # what the two hold: shapes, value ranges (written in the .onnx)
    sample: Callable[[Any], Any]  # (H, W, 3) uint8 photo -> the network's input, (1, C, h, w)
    # () -> the lowest and highest output value (a function: the bound may
    # live with the model, which imports torch)
    out_range: Callable[[], tuple[float, float]]
    # a second input, (N,) float32: the network's level hint (denoise,
    # deblock), negative for blind; `levels`: the hints the export's check
    # and int8 calibration run each photo at
    level: str | None = None
    levels: tuple[float, ...] = ()


@dataclass
class Calibration:
    """Calibration data of one task for prune: a batch sampler, the
    compensation batch, held-out batches for quality, the task loss for
    fitting gates and a quality measure (PSNR, dB); and how to fine-tune: a
    batch sampler, the loss given the pruned and the unpruned (teacher)
    model, a learning rate, and a line for the provenance."""

    batches: Callable[[int], tuple]
    calib: Any
    held: tuple
    loss: Callable[[Any, tuple], Any]
    quality: Callable[[Any, tuple], float]
    tune_batches: Callable[[int], tuple]
    tune_loss: Callable[[Any, Any, tuple], Any]
    tune_lr: float
    tune_note: str


def distill(net, teacher, b: tuple, truth_share: float = 0.0):
    """Fine-tuning loss: L1 to the unpruned model's output on the batch input,
    with `truth_share` of it L1 to the batch's own target instead."""
    import torch
    import torch.nn.functional as F

    y = net(b[0])
    with torch.no_grad():
        want = teacher(b[0])
    loss = F.l1_loss(y, want)
    return loss if not truth_share else (1 - truth_share) * loss + truth_share * F.l1_loss(y, b[1])


def checkpoint_sampler(source, n: int, seed: int, every: int = 500):
    """step -> a batch of `n` from `source` (anything with `.rng` and
    `.batch(n)`), reseeded at every checkpoint (`every` steps, the training
    loop's `save_every`) so that a resumed run sees the same data."""
    def sample(step: int):
        if step % every == 0:
            source.rng.seed(seed * 1_000_003 + step)
        return source.batch(n)
    return sample
