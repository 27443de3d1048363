"""RLFN (residual local feature network, Kong et al. 2022): a teacher.

The quality tier is distilled from ByteDance's released RLFN weights
(Apache-2.0); `imgrestore convert rlfn-x2|rlfn-x4` turns their `.pth` into a
weights file of this architecture once. It is never shipped and never needed
to run imgrestore: training reads it as a teacher, and `bench upscale
--model FILE` measures it as a peer in the same run as our models.

The layer names follow the release, so the conversion is a copy. The
release works on 0..255 pixels; this module takes and returns 0..1 like
every imgrestore network and scales inside. Its enhanced spatial attention
pools with a stride and upsamples a coarse map to the input size, so a tile
sees a different map than the whole image: `tile_safe` is False and it runs
on whole images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ArchSpec

NEG_SLOPE = 0.05


@dataclass
class RLFNConfig:
    scale: int = 4
    colors: int = 3
    channels: int = 52
    blocks: int = 6
    esa: int = 16


class ESA(nn.Module):
    def __init__(self, esa: int, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, esa, 1)
        self.conv_f = nn.Conv2d(esa, esa, 1)
        self.conv2 = nn.Conv2d(esa, esa, 3, stride=2)
        self.conv3 = nn.Conv2d(esa, esa, 3, padding=1)
        self.conv4 = nn.Conv2d(esa, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)
        c3 = F.interpolate(self.conv3(c1), x.shape[2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class RLFB(nn.Module):
    def __init__(self, c: int, esa: int):
        super().__init__()
        self.c1_r = nn.Conv2d(c, c, 3, padding=1)
        self.c2_r = nn.Conv2d(c, c, 3, padding=1)
        self.c3_r = nn.Conv2d(c, c, 3, padding=1)
        self.c5 = nn.Conv2d(c, c, 1)
        self.esa = ESA(esa, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.c1_r(x), NEG_SLOPE)
        y = F.leaky_relu(self.c2_r(y), NEG_SLOPE)
        y = F.leaky_relu(self.c3_r(y), NEG_SLOPE)
        return self.esa(self.c5(y + x))


class RLFN(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        cfg = RLFNConfig(**kwargs)
        self.cfg = cfg
        c = cfg.channels
        self.conv_1 = nn.Conv2d(cfg.colors, c, 3, padding=1)
        for i in range(cfg.blocks):
            setattr(self, f"block_{i + 1}", RLFB(c, cfg.esa))
        self.conv_2 = nn.Conv2d(c, c, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(c, cfg.colors * cfg.scale**2, 3, padding=1),
                                       nn.PixelShuffle(cfg.scale))

    def config(self) -> dict:
        return asdict(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv_1(x * 255.0)
        y = f
        for i in range(self.cfg.blocks):
            y = getattr(self, f"block_{i + 1}")(y)
        y = self.upsampler(self.conv_2(y) + f) / 255.0
        if not self.training:
            y = y.clamp(0.0, 1.0)
        return y


def rlfn_radius(config: dict) -> int:
    # 3x3 convs only counted; the attention's coarse map reaches further,
    # which is why the teacher is not tile-safe
    return 3 + 3 * RLFNConfig(**config).blocks


ARCH = ArchSpec(id="rlfn", model=RLFN, receptive_radius=rlfn_radius, tile_safe=False)
