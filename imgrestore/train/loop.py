"""The training loop shared by every task.

A task supplies a model, a batch sampler, a loss and an evaluation; the loop
does Adam with a cosine schedule, periodic checkpoints that resume exactly
where they stopped (model + optimizer moments + step, all in safetensors:
no pickle), logging, and the final self-describing weights file.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import weights


@dataclass
class TrainTask:
    arch: str
    task: str
    scale: int
    model: nn.Module
    config: dict
    batch: Callable[[int], tuple]  # step -> batch tensors
    loss: Callable[[nn.Module, tuple], torch.Tensor]
    evaluate: Callable[[nn.Module], dict] | None = None  # final metrics
    quick_eval: Callable[[nn.Module], dict] | None = None  # periodic, cheap
    # model -> {parameter name prefix: learning-rate factor} (others: 1)
    lr_scales: Callable[[nn.Module], dict[str, float]] | None = None
    provenance: dict = field(default_factory=dict)


@dataclass
class TrainOptions:
    steps: int
    out: Path
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup: int = 200
    save_every: int = 500
    eval_every: int = 2000
    log: Callable[[str], None] = print
    resume: bool = True
    snapshots: bool = False  # also keep OUT.stepN.safetensors at every periodic evaluation
    # the forward pass and loss in float32, or under bfloat16 autocast (the
    # weights, the optimizer and the backward's accumulation stay float32):
    # HASN x4, one thread, native bf16: 0.47 s a step against 0.66, the same
    # training loss and hold-out after 400 steps (weights/MODEL_CARD.md)
    precision: str = "fp32"


def init_from(model: torch.nn.Module, path: Path, log=print) -> None:
    """Warm start: copy every tensor whose name and shape match (e.g. the head
    and body of an x2 model into an x4 one; the tail differs)."""
    wf = weights.read(path)
    own = model.state_dict()
    copied = {k: v for k, v in wf.tensors.items() if k in own and own[k].shape == v.shape}
    own.update(copied)
    model.load_state_dict(own)
    from ..registry import own_state

    log(f"initialized {len(copied)}/{len(own_state(model))} tensors from {path}")


def split_holdout(files: list[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic split by the CRC32 of the file name: the same files are
    held out on every machine and in every resumed run."""
    if fraction <= 0:
        return files, []
    cut = int(fraction * 10_000)
    kept, held = [], []
    for f in files:
        (held if zlib.crc32(f.name.encode()) % 10_000 < cut else kept).append(f)
    return kept, held


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def _save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, meta: dict) -> None:
    from safetensors.torch import save as to_bytes

    from ..io import write_atomic
    from ..registry import own_state

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in own_state(model).items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                n = names[id(p)]
                tensors[f"opt.{n}.exp_avg"] = st["exp_avg"].contiguous()
                tensors[f"opt.{n}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
                tensors[f"opt.{n}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    write_atomic(to_bytes(tensors, metadata={"step": str(step), "meta": json.dumps(meta)}), path, overwrite=True)


def _load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, dict]:
    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    t = load_file(str(path))
    from ..registry import own_state

    own = {k[6:]: v for k, v in t.items() if k.startswith("model.")}
    if set(own) != set(own_state(model)):
        raise ValueError(f"{path}: the training state does not match the model")
    model.load_state_dict(own, strict=False)
    for n, p in model.named_parameters():
        if f"opt.{n}.exp_avg" in t:
            opt.state[p] = {
                "exp_avg": t[f"opt.{n}.exp_avg"],
                "exp_avg_sq": t[f"opt.{n}.exp_avg_sq"],
                "step": t[f"opt.{n}.step"].reshape(()),
            }
    return int(md["step"]), json.loads(md.get("meta", "{}"))


def lr_at(step: int, o: TrainOptions) -> float:
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    t = (step - o.warmup) / max(1, o.steps - o.warmup)
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def train(task: TrainTask, o: TrainOptions) -> dict:
    model = task.model
    scales = task.lr_scales(model) if task.lr_scales else {}
    groups: dict[float, list] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            f = next((v for k, v in scales.items() if n.startswith(k)), 1.0)
            groups.setdefault(f, []).append(p)
    opt = torch.optim.Adam([{"params": ps, "lr_scale": f} for f, ps in groups.items()], lr=o.lr, betas=(0.9, 0.99))
    state = _state_path(o.out)
    start, elapsed0 = 0, 0.0
    if o.resume and state.exists():
        start, meta = _load_state(state, model, opt)
        elapsed0 = meta.get("elapsed_s", 0.0)
        o.log(f"resumed from {state} at step {start}")
    t0 = time.time()
    running = 0.0
    model.train()
    for step in range(start, o.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o) * g["lr_scale"]
        batch = task.batch(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=o.precision == "bf16"):
            loss = task.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        done = step + 1
        if done % 100 == 0:
            el = elapsed0 + time.time() - t0
            rate = (time.time() - t0) / (done - start)
            o.log(f"step {done}/{o.steps} loss {running / 100:.5f} lr {lr_at(step, o):.2e} "
                  f"{rate:.3f}s/step elapsed {el / 60:.1f}min")
            running = 0.0
        if task.quick_eval and done % o.eval_every == 0:
            model.eval()
            o.log(f"step {done} eval {json.dumps(task.quick_eval(model))}")
            if o.snapshots:  # every evaluated step kept, to choose from on the hold-out
                _write(task, o, done, elapsed0 + time.time() - t0, metrics=None,
                       out=o.out.with_name(f"{o.out.stem}.step{done}{o.out.suffix}"))
            model.train()
        if done % o.save_every == 0 or done == o.steps:
            _save_state(state, model, opt, done, {"elapsed_s": elapsed0 + time.time() - t0})
            _write(task, o, done, elapsed0 + time.time() - t0, metrics=None)
    model.eval()
    metrics = task.evaluate(model) if task.evaluate else {}
    _write(task, o, o.steps, elapsed0 + time.time() - t0, metrics=metrics)
    o.log(f"wrote {o.out} metrics {json.dumps(metrics)}")
    return metrics


def _write(task: TrainTask, o: TrainOptions, step: int, elapsed: float, metrics: dict | None,
           out: Path | None = None) -> None:
    prov = dict(task.provenance)
    prov.update(steps=step, planned_steps=o.steps, lr=o.lr, train_minutes=round(elapsed / 60, 1),
                torch=torch.__version__)
    if o.precision != "fp32":
        prov["precision"] = o.precision
    if metrics is not None:
        prov["metrics"] = metrics
    from ..registry import own_state

    weights.save(out or o.out, own_state(task.model), arch=task.arch, config=task.config,
                 task=task.task, scale=task.scale, provenance=prov)
