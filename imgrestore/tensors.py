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
