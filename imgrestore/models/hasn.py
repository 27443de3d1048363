"""Quality-tier super-resolution: a hybrid attention separable network.

After HASN (hybrid attention separable network for efficient SR), written
for imgrestore's contracts. Feature extraction is separable: a depthwise 3x3
(re-parameterized: a depthwise 3x3, a depthwise 1x1 and the identity fold
exactly into one depthwise 3x3) followed by two 1x1 ("fully connected")
layers with an activation between. No residual connection after each block:
the blocks run as a plain chain, and a 1x1 fusion of every block's output
(plus one long skip from the head) gives the tail all depths at once.

The hybrid attention block gates each feature by a channel term and a
spatial term that cover each other's blind spots:

* channel attention: which channels matter *here*. HASN (like RCAN) pools
  each channel over the whole map; a tile would then see other statistics
  than the whole image. Ours pools over a local `window` (a box mean, stride
  1), so the gate is a function of a fixed neighbourhood and tiling stays
  exact.
* spatial attention: where the block's features matter, from a narrow 1x1
  projection through two depthwise 3x3 convolutions (dilation 1 and 2), so
  that it sees 7x7 pixels at full resolution instead of upsampling a coarse
  map (ESA's interpolation would make tile seams).

Every layer is local, so `receptive_radius` bounds what one output pixel
sees, and a tiled run equals the untiled one.

The tail is a 3x3 convolution to `colors * scale**2` channels and a pixel
shuffle, on top of the input repeated `scale**2` times (nearest upsampling
as the base, as in ECBSR); outside training the output is clipped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ArchSpec
from .blocks import window_mean
from .sr import BranchedSR

NEG_SLOPE = 0.05  # leaky ReLU: cheaper on the CPU than GELU, and sign-free at the gates' inputs


@dataclass
class HASNConfig:
    scale: int = 4  # upscaling factor, 2..4
    colors: int = 3  # image channels in and out
    channels: int = 48  # feature width
    blocks: int = 6  # hybrid attention separable blocks
    expand: float = 2.0  # width of the first 1x1 layer relative to `channels`
    attn: int = 16  # width of the spatial attention's projection
    squeeze: int = 4  # channel attention's reduction
    window: int = 7  # side of the channel attention's local pooling window (odd)
    deploy: bool = False  # True: the depthwise branches are folded

    def hidden(self) -> int:
        return max(1, int(round(self.channels * self.expand)))


class SepDW(nn.Module):
    """Depthwise 3x3 + depthwise 1x1 + identity: linear, so one depthwise 3x3
    after `reparameterize()`. The 1x1 branch is computed from the unpadded
    input and the identity adds the input itself, so the fold is exact at
    the borders too."""

    def __init__(self, c: int, deploy: bool = False):
        super().__init__()
        self.c = c
        self.dw3 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.dw1: nn.Conv2d | None = None if deploy else nn.Conv2d(c, c, 1, groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dw1 is None:
            return self.dw3(x)
        k, b = self.folded()
        return F.conv2d(x, k, b, padding=1, groups=self.c)

    def forward_branched(self, x: torch.Tensor) -> torch.Tensor:
        if self.dw1 is None:
            return self.dw3(x)
        return self.dw3(x) + self.dw1(x) + x

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        center = torch.zeros_like(self.dw3.weight)
        center[:, :, 1, 1] = self.dw1.weight[:, :, 0, 0] + 1.0
        return self.dw3.weight + center, self.dw3.bias + self.dw1.bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.dw1 is None:
            return
        k, b = self.folded()
        self.dw3.weight.copy_(k)
        self.dw3.bias.copy_(b)
        self.dw1 = None


class HybridAttention(nn.Module):
    """One gate per feature: sigmoid(channel term + spatial term).

    The channel term squeezes the features (1x1 to `c // squeeze`), takes
    their local mean and expands them back: which channels this
    neighbourhood needs. The 1x1 is linear, so squeezing before the mean is
    the same function as after it, at a `squeeze`-th of the pooling cost.
    The spatial term projects to `attn` channels and runs two depthwise 3x3s
    (dilation 1 and 2): where, at full resolution, a feature matters. Adding
    the two inside one sigmoid lets each cover the other's blind spot (a
    channel gate is flat over positions, a narrow spatial map has few
    channels) for one sigmoid and one multiply per feature."""

    def __init__(self, c: int, attn: int, squeeze: int, window: int):
        super().__init__()
        self.window = window
        mid = max(1, c // squeeze)
        self.ca1 = nn.Conv2d(c, mid, 1)
        self.ca2 = nn.Conv2d(mid, c, 1)
        self.sa_in = nn.Conv2d(c, attn, 1)
        self.sa_dw1 = nn.Conv2d(attn, attn, 3, padding=1, groups=attn)
        self.sa_dw2 = nn.Conv2d(attn, attn, 3, padding=2, dilation=2, groups=attn)
        self.sa_out = nn.Conv2d(attn, c, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        ca = self.ca2(F.leaky_relu(window_mean(self.ca1(f), self.window), NEG_SLOPE))
        sa = self.sa_out(self.sa_dw2(F.leaky_relu(self.sa_dw1(self.sa_in(f)), NEG_SLOPE)))
        return f * torch.sigmoid(ca + sa)

    @staticmethod
    def radius(window: int) -> int:
        return max(window // 2, 1 + 2)


class HASB(nn.Module):
    """Hybrid attention separable block: depthwise 3x3, 1x1 -> act -> 1x1,
    hybrid attention. No residual."""

    def __init__(self, cfg: HASNConfig):
        super().__init__()
        c, h = cfg.channels, cfg.hidden()
        self.dw = SepDW(c, cfg.deploy)
        self.fc1 = nn.Conv2d(c, h, 1)
        self.fc2 = nn.Conv2d(h, c, 1)
        self.attn = HybridAttention(c, cfg.attn, cfg.squeeze, cfg.window)

    def forward(self, x: torch.Tensor, branched: bool = False) -> torch.Tensor:
        y = self.dw.forward_branched(x) if branched else self.dw(x)
        y = self.fc2(F.leaky_relu(self.fc1(y), NEG_SLOPE))
        return self.attn(y)


class HASN(BranchedSR):
    def __init__(self, **kwargs):
        super().__init__()
        cfg = HASNConfig(**kwargs)
        if cfg.window < 1 or cfg.window % 2 == 0:
            raise ValueError("window must be an odd number of pixels")
        if not 1 <= cfg.scale <= 8:
            raise ValueError("scale must be 1..8")
        self.cfg = cfg
        c = cfg.channels
        self.head = nn.Conv2d(cfg.colors, c, 3, padding=1)
        self.blocks = nn.ModuleList(HASB(cfg) for _ in range(cfg.blocks))
        self.fuse = nn.Conv2d(c * cfg.blocks, c, 1) if cfg.blocks else None
        self.body = nn.Conv2d(c, c, 3, padding=1)
        self.tail = nn.Conv2d(c, cfg.colors * cfg.scale**2, 3, padding=1)
        with torch.no_grad():  # start near the nearest-neighbour base, not at noise around it
            self.tail.weight.mul_(0.1)

    def _forward(self, x: torch.Tensor, branched: bool) -> torch.Tensor:
        h = self.head(x)
        y, outs = h, []
        for block in self.blocks:
            y = block(y, branched)
            outs.append(y)
        if self.fuse is not None:
            y = self.fuse(torch.cat(outs, dim=1))
        y = F.leaky_relu(self.body(y), NEG_SLOPE) + h
        return self.tail(y)

    @torch.no_grad()
    def reparameterize(self) -> "HASN":
        """Fold every block's depthwise branches; idempotent; returns self."""
        for block in self.blocks:
            block.dw.reparameterize()
        self.cfg.deploy = True
        return self


def hasn_radius(config: dict) -> int:
    cfg = HASNConfig(**config)
    # head, body, tail 3x3s; per block the depthwise 3x3 and the attention
    return 3 + cfg.blocks * (1 + HybridAttention.radius(cfg.window))


ARCH = ArchSpec(id="hasn", model=HASN, receptive_radius=hasn_radius)
