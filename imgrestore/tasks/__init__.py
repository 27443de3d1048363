"""The tasks imgrestore performs, one file each, and the one `TASKS` table.

A task is a `Task` record (`base.py`): its output suffix, its restorer and
the command's own options, how training pairs are made, how it is evaluated,
its calibration data for prune and its timing input. Nothing outside this
package branches on a task's name: it looks the task up here, and a weights
file whose task is not in the table is an `UnknownTask` error.

Adding a task: a model family in `models/`, a `tasks/NAME.py` ending in its
`TASK`, an entry below, its weights and tests.
"""

from __future__ import annotations

import os

from ..errors import UnknownTask, WrongTask
from . import colorize, deblock, denoise, upscale
from .base import Calibration, Task

TASKS: dict[str, Task] = {t.name: t for t in (upscale.TASK, colorize.TASK, denoise.TASK, deblock.TASK)}


def get(name: str, source: object = "") -> Task:
    """The task called `name` (the `task` of a weights file `source`);
    raises `UnknownTask`."""
    task = TASKS.get(name)
    if task is None:
        where = f"{source}: " if source else ""
        raise UnknownTask(f"{where}unknown task {name!r} (this version knows: {', '.join(TASKS)})")
    return task


def check_onnx_backend(t: Task) -> None:
    """`BackendError` unless the task runs on --backend onnx."""
    if "onnx" not in t.backends:
        from ..onnxrun import BackendError

        raise BackendError(f"{t.name} runs on --backend torch only ({t.noun}'s read-out around its "
                           "network is PyTorch code)")


def load(model: str | os.PathLike = "upscale-x4", device: str = "auto", task: str | None = None,
         backend: str = "torch", threads: int | None = None, precision: str = "auto", **settings):
    """Load a shipped model by name, or any imgrestore weights file by path,
    ready to run (re-parameterizable branches folded once, here), as its
    task's restorer built with `settings` (colorize: render_size,
    saturation, reference). With `task`, a model of another task is a
    `WrongTask` error. `backend` "onnx" runs the model's exported graph
    (`onnxrun`; `threads` its threads) and imports no torch; a task whose
    network is not exported for it is a `BackendError`. `precision` (torch):
    fp32, bf16, or auto (bfloat16 where the task allows it and the device
    runs it natively: `restorer.resolve_precision`)."""
    if backend == "onnx":
        from ..onnxrun import BackendError
        from ..onnxrun import load as load_onnx

        t = get(task) if task else None  # None: the graph's own (its metadata)
        if t is not None:
            check_onnx_backend(t)
        if precision != "auto":
            raise BackendError(f"--precision {precision} is for --backend torch (the onnx graphs' arithmetic is "
                               "their own)")
        return load_onnx(model, t, threads=threads, device=device, **settings)
    if backend != "torch":
        raise ValueError(f"unknown backend {backend!r} (torch or onnx)")
    import torch

    from .. import registry, weights
    from ..models.reparam import reparameterize
    from ..restorer import pick_device, resolve_precision

    path = registry.resolve(str(model))
    wf = weights.read(path)
    net = reparameterize(registry.build_from_weights(wf))
    t = get(wf.task, wf.path)
    if task is not None and t.name != task:
        raise WrongTask(f"model {model} is a {t.name} model, not {get(task).noun}")
    dev = pick_device(device)
    net = net.eval().to(dev, memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    name = str(model) if str(model) in registry.SHIPPED else path.stem
    r = t.restorer(net, wf, registry.ARCHS[wf.arch], dev, name, **settings)
    r.precision = resolve_precision(precision, dev, t.precisions)
    return r


__all__ = ["TASKS", "Task", "Calibration", "get", "load"]
