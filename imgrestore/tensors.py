"""The one conversion between pixels (numpy) and tensors (torch).

Pixels are (H, W, C), or (N, H, W, C) for a batch, of uint8 or uint16;
tensors are (1, C, H, W), or (N, C, H, W), float in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch


def peak(dtype) -> float:
    """The largest code value of a pixel dtype (uint8 or uint16)."""
    return 65535.0 if np.dtype(dtype) == np.uint16 else 255.0


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """(H, W, C) -> (1, C, H, W), or (N, H, W, C) -> (N, C, H, W), float in
    [0, 1]. Copies: torch wants writable memory, and views of images are not."""
    t = torch.from_numpy(np.array(a))
    t = t.permute(2, 0, 1)[None] if t.dim() == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(peak(a.dtype))


def to_pixels(t: torch.Tensor, dtype=np.uint8) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) float in [0, 1] -> (H, W, C) of `dtype`,
    clamped and rounded to the nearest code value."""
    t = t[0] if t.dim() == 4 else t
    top = peak(dtype)
    return t.clamp(0.0, 1.0).mul(top).round_().permute(1, 2, 0).cpu().numpy().astype(dtype)


def shuffle_residual_pixels(y: torch.Tensor, x: torch.Tensor, scale: int, out: np.ndarray) -> None:
    """An upscaler's read-out at the input's resolution: `y` the tail's (1,
    C*s*s, h, w) channels (channel c*s*s + dy*s + dx is colour c at sub-pixel
    (dy, dx)), `x` the (1, C, h, w) input -> `out` (h*s, w*s, C) uint8 or
    uint16 (a view is fine), equal element for element to
    `to_pixels(shuffle_residual(y, x, s))`: the same float operations (add
    the input, clamp, scale, round), and the pixel shuffle done on the
    codes. Overwrites `y`."""
    c, s = x.shape[1], scale
    h, w = y.shape[-2:]
    z = y[0].unflatten(0, (c, s * s))  # (C, s*s, h, w)
    z.add_(x[0, :, None]).clamp_(0.0, 1.0).mul_(peak(out.dtype)).round_()
    codes = z.to(torch.uint8 if out.dtype == np.uint8 else torch.int32).unflatten(1, (s, s))  # (C, dy, dx, h, w)
    codes = codes.permute(3, 1, 4, 2, 0).cpu()  # (h, dy, w, dx, C)
    if out.dtype == np.uint8:
        torch.from_numpy(out).view(h, s, w, s, c).copy_(codes)
    else:
        np.copyto(out.reshape(h, s, w, s, c), codes.numpy(), casting="unsafe")
