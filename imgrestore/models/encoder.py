"""A pretrained image classifier as a frozen semantic encoder.

EfficientNet-Lite0 (Tan & Le 2019, the Lite variant: ReLU6, no squeeze-and-
excitation, batch norm folded into the convolutions) rebuilt from our own
layers, so that the shipped file is plain safetensors that our code loads
with no third-party package. `imgrestore convert efficientnet-lite0` writes it
once from the Apache-2.0 PyTorch port of Google's weights and checks that our
layers reproduce the source's class scores.

Input conventions are the TF-Lite ones the weights were trained with: RGB
pixel values v in [0, 255] enter as (v - 127) / 128; strided convolutions pad
like TensorFlow's "SAME" (more padding after than before).

`features(x)` returns the maps at 1/4, 1/8, 1/16, 1/32 of the input and the
1280-channel head map; the colorizer reads them all (a U-Net on a frozen
classifier) and pools the head map into its global vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ArchSpec

# (repeats, kernel, stride, expansion, out channels) of each stage of Lite0
LITE0_STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]


@dataclass
class EncoderConfig:
    stages: list = field(default_factory=lambda: [list(s) for s in LITE0_STAGES])
    stem: int = 32  # stem output channels
    head: int = 1280  # head 1x1 conv channels (pooled: the global vector)
    classes: int = 1000  # ImageNet logits (kept so the convert check can be re-run)


class SameConv(nn.Conv2d):
    """Convolution with TensorFlow "SAME" padding (bias holds folded batch
    norm): output side ceil(input / stride), the odd pixel of padding after.
    Stride 1 pads k - 1, stride 2 pads k - 2 + (input side mod 2), written
    as arithmetic on the side (no branch on it), so an exported graph keeps
    the rule for every input size."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.stride[0] not in (1, 2) or (self.stride[0] == 2 and self.kernel_size[0] < 2):
            raise ValueError("SameConv supports stride 1, and stride 2 with kernels of 2 or more")

    def forward(self, x, weight: torch.Tensor | None = None):
        """`weight`: another kernel of the same size to run instead (the gray stem)."""
        w = self.weight if weight is None else weight
        k, s = self.kernel_size[0], self.stride[0]
        if s == 1:
            return F.conv2d(x, w, self.bias, 1, (k - 1) // 2, 1, self.groups)
        ih, iw = x.shape[-2:]
        ph, pw = k - 2 + ih % 2, k - 2 + iw % 2
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, w, self.bias, s, 0, 1, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project (linear);
    identity skip when shape is kept."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = SameConv(cin, mid, 1) if expand != 1 else None
        self.dw = SameConv(mid, mid, k, stride, groups=mid)
        self.project = SameConv(mid, cout, 1)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu6(self.dw(y)))
        return x + y if self.skip else y


class EfficientLite(nn.Module):
    """EfficientNet-Lite with batch norm folded. `features` is what the
    colorizer uses; `forward` gives class logits (for the convert check)."""

    def __init__(self, **kwargs):
        super().__init__()
        cfg = EncoderConfig(**kwargs)
        self.cfg = cfg
        self.stem = SameConv(3, cfg.stem, 3, 2)
        # taps: the last block before the resolution next halves; channels:
        # those of the maps `features` returns, one per tap, then the head's
        blocks, cin, self.taps, self.channels = [], cfg.stem, [], []
        for i, (r, k, s, e, cout) in enumerate(cfg.stages):
            for j in range(r):
                blocks.append(MBConv(cin, cout, k, s if j == 0 else 1, e))
                cin = cout
            nxt = cfg.stages[i + 1][2] if i + 1 < len(cfg.stages) else 2
            if nxt == 2 and i > 0:
                self.taps.append(len(blocks) - 1)
                self.channels.append(cout)
        self.channels.append(cfg.head)
        self.blocks = nn.ModuleList(blocks)
        self.head = SameConv(cin, cfg.head, 1)
        self.fc = nn.Linear(cfg.head, cfg.classes)

    def config(self) -> dict:
        return asdict(self.cfg)

    @staticmethod
    def normalize(rgb255: torch.Tensor) -> torch.Tensor:
        return (rgb255 - 127.0) / 128.0

    def features(self, x: torch.Tensor, gray: bool = False) -> list[torch.Tensor]:
        """x: (B, 3, H, W) normalized RGB, or (B, 1, H, W) normalized gray
        with `gray` (the stem sums its colour weights: the same result as
        three equal channels, a third of the stem's cost) -> maps at 1/4,
        1/8, 1/16, 1/32 and the head map at 1/32."""
        x = F.relu6(self.stem(x, self.stem.weight.sum(1, keepdim=True) if gray else None))
        out = []
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i in self.taps:
                out.append(x)
        out.append(F.relu6(self.head(x)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)[-1].mean(dim=(2, 3)))


# a shipped component, read by the colorizers that name it; never run alone
ARCH = ArchSpec(id="efficientnet-lite", model=EfficientLite, receptive_radius=lambda c: 0, tile_safe=False)
