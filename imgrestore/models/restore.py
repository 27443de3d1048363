"""Restoration family (denoise, deblock): a JSNet-style searched network.

The seed (JSNet) searches, per layer, which operation to run and, per
module, which attention to apply and where it connects; several such
"joint search modules" run in a row and a cross-scale fusion module merges
what they saw at different depths. Here:

    x (B, 3, H, W) -> pixel-unshuffle 2 -> (B, 12, H/2, W/2) + 2 hint planes
      -> head 3x3 -> cell 1 -> cell 2 -> ... -> cell N
      -> fusion: 1x1 over [head, cell 1 .. cell N] (features of every depth)
      -> tail 3x3 to 12 channels + the unshuffled input (global residual)
      -> pixel-shuffle 2 -> (B, 3, H, W)

Working at half resolution after the unshuffle (as FFDNet does) buys four
times the depth for the same cost per pixel. The two hint planes are the
degradation level (noise sigma, or JPEG quality, as `level` in [0, 1]) and
a flag saying whether it is known: training withholds it half the time, so
the same network works blind and with a hint (FFDNet's noise-level map,
made optional).

A cell is data (its *genotype*): `{"ops": ["conv3", "sep3"], "attention":
"channel", "connect": "body"}`. The search (train/search.py) builds the
same cell with every choice at once, weighted by architecture parameters
(`MixedOp`, `MixedAttention`), and derives the genotype by taking the
strongest; the derived network stores it in its config, so the weights file
alone rebuilds it.

Tiling stays exact: every attention is local (a 7x7 window mean for channel
attention, a 5x5 conv for spatial attention, a 1x1 for pixel attention), so
an output pixel depends on a bounded neighbourhood (`receptive_radius`),
and tiles start on even pixels (`size_multiple` 2) so that every tile's
unshuffle grid is the image's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ArchSpec
from .blocks import window_mean

# operation -> its radius in half-resolution pixels
OPS: dict[str, int] = {"conv3": 1, "dil3": 2, "sep3": 1, "conv1": 0, "skip": 0}
# attention -> its radius in half-resolution pixels
ATTENTIONS: dict[str, int] = {"none": 0, "channel": 3, "spatial": 2, "pixel": 0}
# where a cell's attention connects: on the body before the residual sum,
# or on the cell's output after it
CONNECTS = ("body", "out")
CA_WINDOW = 7  # channel attention's local window (odd): no pooling over a whole tile
CA_REDUCTION = 4
HINT_PLANES = 2  # level, known


def make_op(name: str, c: int) -> nn.Module:
    """One candidate operation, `c` -> `c` channels, same size."""
    if name == "conv3":
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))
    if name == "dil3":
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=2, dilation=2), nn.ReLU(inplace=True))
    if name == "sep3":
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, c, 1), nn.ReLU(inplace=True))
    if name == "conv1":
        return nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(inplace=True))
    if name == "skip":
        return nn.Identity()
    raise ValueError(f"unknown operation {name!r} (known: {', '.join(OPS)})")


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over a local window instead of the whole image
    (tile-safe): channel weights from the 7x7 mean of each channel. The
    first 1x1 reduction is linear, so it runs before the window mean (the
    same function, on a quarter of the channels)."""

    def __init__(self, c: int):
        super().__init__()
        mid = max(4, c // CA_REDUCTION)
        self.down = nn.Conv2d(c, mid, 1)
        self.up = nn.Conv2d(mid, c, 1)

    def forward(self, x):
        a = F.relu(window_mean(self.down(x), CA_WINDOW))  # (B, mid, H, W)
        return x * torch.sigmoid(self.up(a))


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: a 5x5 conv over the channel mean and max."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 5, padding=2)

    def forward(self, x):
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)  # (B, 2, H, W)
        return x * torch.sigmoid(self.conv(s))


class PixelAttention(nn.Module):
    """PAN's pixel attention: a 1x1 conv gives a weight per pixel and channel."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


def make_attention(name: str, c: int) -> nn.Module:
    kinds = {"none": lambda c: nn.Identity(), "channel": ChannelAttention, "spatial": SpatialAttention,
             "pixel": PixelAttention}
    if name not in kinds:
        raise ValueError(f"unknown attention {name!r} (known: {', '.join(ATTENTIONS)})")
    return kinds[name](c)


def check_cell(cell: dict) -> dict:
    """A genotype cell, validated: {"ops": [...], "attention": ..., "connect": ...}."""
    if not isinstance(cell, dict) or set(cell) != {"ops", "attention", "connect"}:
        raise ValueError(f"a cell is {{'ops', 'attention', 'connect'}}, got {cell!r}")
    if not cell["ops"] or any(op not in OPS for op in cell["ops"]):
        raise ValueError(f"cell operations must be a non-empty list of {', '.join(OPS)}, got {cell['ops']!r}")
    if cell["attention"] not in ATTENTIONS:
        raise ValueError(f"unknown attention {cell['attention']!r} (known: {', '.join(ATTENTIONS)})")
    if cell["connect"] not in CONNECTS:
        raise ValueError(f"connect must be one of {', '.join(CONNECTS)}, got {cell['connect']!r}")
    return cell


class Cell(nn.Module):
    """A derived joint search module: its operations in a row (the body), its
    attention on the body (`connect` body: x + A(body(x))) or on the sum
    (`out`: A(x + body(x)))."""

    def __init__(self, c: int, ops: list[str], attention: str, connect: str):
        super().__init__()
        self.ops = nn.Sequential(*[make_op(o, c) for o in ops])
        self.att = make_attention(attention, c)
        self.connect = connect

    def forward(self, x):
        b = self.ops(x)
        return x + self.att(b) if self.connect == "body" else self.att(x + b)


def hand_picked(cells: int, layers: int) -> list[dict]:
    """The reference cell the search is compared with: plain 3x3 convolutions
    with local channel attention on the body (an RCAN-style block)."""
    return [{"ops": ["conv3"] * layers, "attention": "channel", "connect": "body"} for _ in range(cells)]


@dataclass
class JSNetConfig:
    task: str = "denoise"  # what the hint planes mean (denoise: sigma / 50; deblock: 1 - quality / 100)
    colors: int = 3  # image channels in and out
    channels: int = 32  # feature width at half resolution
    # the genotype: one dict per cell (see check_cell)
    cells: list[dict] = field(default_factory=lambda: hand_picked(4, 2))
    fuse: bool = True  # the cross-scale fusion module (False: the last cell alone feeds the tail)

    def radius_half(self) -> int:
        """Receptive radius in half-resolution pixels: head, cells, tail."""
        r = 2  # head and tail 3x3
        for cell in self.cells:
            r += sum(OPS[o] for o in cell["ops"]) + ATTENTIONS[cell["attention"]]
        return r


class FeatureNet(nn.Module):
    """Head, cells, fusion and tail around any list of cells (derived or
    searched); `JSNet` and the search's supernet share it."""

    def __init__(self, colors: int, channels: int, cells: list[nn.Module], fuse: bool):
        super().__init__()
        c = channels
        self.colors = colors
        self.head = nn.Sequential(nn.Conv2d(colors * 4 + HINT_PLANES, c, 3, padding=1), nn.ReLU(inplace=True))
        self.cells = nn.ModuleList(cells)
        # cross-scale fusion: features of every depth (the head's and each
        # cell's) side by side, merged by a 1x1 convolution
        self.fusion = (nn.Sequential(nn.Conv2d(c * (len(cells) + 1), c, 1), nn.ReLU(inplace=True))
                       if fuse else None)
        self.tail = nn.Conv2d(c, colors * 4, 3, padding=1)
        # a new network is the identity (the global residual alone): it
        # learns the correction from there (measured faster to train)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor, level: torch.Tensor | float | None = None) -> torch.Tensor:
        """x: (B, colors, H, W) in [0, 1], H and W even; level: None (blind),
        a number or a (B,) tensor in [0, 1] -> (B, colors, H, W)."""
        z = F.pixel_unshuffle(x, 2)  # (B, 4*colors, H/2, W/2)
        b, _, h, w = z.shape
        hint = torch.zeros(b, HINT_PLANES, h, w, dtype=z.dtype, device=z.device)
        if level is not None:
            lv = torch.as_tensor(level, dtype=z.dtype, device=z.device).reshape(-1)
            known = (lv >= 0).to(z.dtype)  # a negative level in a batch: blind for that image
            hint[:, 0] = (lv.clamp(min=0) * known).reshape(-1, 1, 1).expand(b, h, w)
            hint[:, 1] = known.reshape(-1, 1, 1).expand(b, h, w)
        f = self.head(torch.cat([z, hint], 1))
        if self.fusion is None:
            for cell in self.cells:
                f = cell(f)
        else:
            # the fusion's 1x1 convolution over [head, cell 1 .. cell N] side
            # by side, summed depth by depth as each is made (the same
            # function, without holding and concatenating every depth)
            conv, c = self.fusion[0], f.shape[1]
            acc = F.conv2d(f, conv.weight[:, :c], conv.bias)
            for i, cell in enumerate(self.cells, 1):
                f = cell(f)
                acc = acc + F.conv2d(f, conv.weight[:, i * c:(i + 1) * c])
            f = self.fusion[1](acc)
        y = F.pixel_shuffle(self.tail(f) + z, 2)
        if not self.training:
            y = y.clamp(0.0, 1.0)
        return y


class JSNet(FeatureNet):
    """The derived network: built from its config (genotype included)."""

    def __init__(self, **kwargs):
        cfg = JSNetConfig(**kwargs)
        cfg.cells = [check_cell(dict(c)) for c in cfg.cells]
        if not cfg.cells:
            raise ValueError("a JSNet has at least one cell")
        if not 1 <= cfg.channels <= 1024:
            raise ValueError(f"channels must be in 1..1024, got {cfg.channels}")
        super().__init__(cfg.colors, cfg.channels,
                         [Cell(cfg.channels, c["ops"], c["attention"], c["connect"]) for c in cfg.cells], cfg.fuse)
        self.cfg = cfg

    def config(self) -> dict:
        return asdict(self.cfg)


def describe(cells: list[dict]) -> str:
    """A genotype in one line: `conv3+sep3 | channel@body ; ...`."""
    return " ; ".join(f"{'+'.join(c['ops'])} | {c['attention']}@{c['connect']}" for c in cells)


ARCH = ArchSpec(
    id="jsnet",
    model=JSNet,
    # full-resolution pixels: twice the half-resolution radius, plus the
    # unshuffle's own pixel
    receptive_radius=lambda c: 2 * JSNetConfig(**c).radius_half() + 2,
    size_multiple=2,
    # the context (receptive_radius, about 40 pixels) would more than double
    # the work of 256-pixel tiles; 512 keeps it near a third, memory bounded
    tile=512,
    channel_groups=None,
    not_prunable="a searched JSNet cannot be pruned by channel: its width is one residual stream tied through "
                 "every cell, attention gate and the fusion's concatenation, and the search already chose its "
                 "cost; train a narrower one instead (train denoise|deblock --channels N)",
)
