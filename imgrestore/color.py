"""Colour conversions in torch. Images are (B, C, H, W) float in [0, 1]."""

from __future__ import annotations

import torch

# ITU-R BT.601 luma as used by the SR literature (Y in [16, 235] on 0..255)
_Y_W = (65.481, 128.553, 24.966)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) BT.601 Y in [16/255, 235/255]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (16.0 + _Y_W[0] * r + _Y_W[1] * g + _Y_W[2] * b) / 255.0
