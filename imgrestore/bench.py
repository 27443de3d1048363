"""Metrics and timing, nothing else: one PSNR, SSIM, the a*b* AuC, the
best-of timer and the MAC counter. How each task is measured with them (which pairs, which
baseline) is the task's (`tasks/`); the `bench` command's runners are in
`benchmarks.py` (DESIGN.md, "How quality and speed are measured")."""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .color import rgb_to_lab, rgb_to_y
from .tensors import to_tensor


def psnr(a, b, peak: float = 255.0) -> float:
    """PSNR in dB of two images of the same shape (numpy arrays or tensors)
    on a scale whose top is `peak`; inf when they are equal."""
    a, b = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, np.float64) for x in (a, b))
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


def y255(a: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float64 BT.601 Y on 0..255."""
    return rgb_to_y(to_tensor(a))[0, 0].double().numpy() * 255.0


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) 0..255 images, Gaussian window 11, sigma 1.5."""
    x = torch.from_numpy(a)[None, None].double()
    y = torch.from_numpy(b)[None, None].double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx**2
    syy = F.conv2d(y * y, w) - my**2
    sxy = F.conv2d(x * y, w) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(m.mean())


AUC_MAX = 150  # a*b* distance thresholds 0..150 (Zhang et al. 2016)


def ab_auc(out: np.ndarray, truth: np.ndarray) -> float:
    """Zhang et al.'s hue accuracy: the share of pixels whose a*b* is within t
    of the truth's, averaged over t = 0, 1, ..., 150 (1 = every pixel exact).
    Since sum_t [d <= t] = max(0, 151 - ceil(d)), one pass suffices."""
    d = (rgb_to_lab(to_tensor(out))[:, 1:] - rgb_to_lab(to_tensor(truth))[:, 1:]).norm(dim=1)
    return float((AUC_MAX + 1 - torch.ceil(d)).clamp(min=0).mean() / (AUC_MAX + 1))


def best_of(fns: list[Callable[[], object]], repeat: int = 3, warmup: int = 1) -> list[float]:
    """Best-of-`repeat` seconds of each of `fns` (after `warmup` calls of
    each), the functions timed in turn in every round so that a busy moment
    of the machine does not land on one of them."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def time_call(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best-of-`repeat` seconds for `fn()` (after `warmup` calls)."""
    return best_of([fn], repeat, warmup)[0]


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, counted with hooks on
    convolutions and linear layers."""
    total = 0

    def conv_hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out.numel() * k
        elif isinstance(mod, nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.out_channels // mod.groups
            total += inp[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total
