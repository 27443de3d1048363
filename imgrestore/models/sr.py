"""Super-resolution family.

`ECBSR`: the re-parameterizable mobile SR network of the seed. A head ECB,
`blocks` body ECBs (PReLU after each), and a tail ECB to `colors * scale**2`
channels, a global residual (the input repeated `scale**2` times, that is a
fixed 1x1 conv, so nearest-neighbour upsampling is the base the network
corrects) and a pixel shuffle. Output is clipped to [0, 1] outside training,
so it quantizes to 8 bits cleanly.

After `reparameterize()` every ECB is one plain 3x3 conv: the deployed
network is `blocks + 2` 3x3 convolutions, which is what a pruned model's
`widths` describe (pruning happens on the folded form; see prune.py).

`FSRCNN`: the classic reference network (Dong et al. 2016, d=56 s=12 m=4,
Y channel), kept only as a speed reference for `bench`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ArchSpec, ChannelGroups, Group
from .blocks import ECB


@dataclass
class ECBSRConfig:
    scale: int = 4  # upscaling factor, 2..4
    colors: int = 3  # image channels in and out
    channels: int = 16  # feature width of head and body
    blocks: int = 4  # body ECBs between head and tail
    mid_mult: float = 2.0  # width of the 1x1->3x3 branch relative to the output
    deploy: bool = False  # True: built from plain convs (folded or pruned)
    # per-layer output widths of head + body (len blocks + 1); set by pruning.
    widths: list[int] | None = field(default=None)

    def layer_widths(self) -> list[int]:
        return list(self.widths) if self.widths else [self.channels] * (self.blocks + 1)


def shuffle_residual(y: torch.Tensor, x: torch.Tensor, scale: int, training: bool) -> torch.Tensor:
    """The upscalers' output: the tail's (B, C*s*s, H, W) channels (channel
    c*s*s + k is colour c at sub-pixel k) plus the input repeated s*s times
    (nearest-neighbour upsampling as the base), pixel-shuffled to (B, C, H*s,
    W*s); clipped to [0, 1] outside training, so it quantizes cleanly."""
    y = y + x.repeat_interleave(scale * scale, dim=1)
    y = F.pixel_shuffle(y, scale)
    return y if training else y.clamp(0.0, 1.0)


class BranchedSR(nn.Module):
    """What the re-parameterizable upscalers share: a dataclass `cfg` (their
    saved config, with `scale`), and one `_forward(x, branched)` to the tail's
    channels, run either the usual way or with every foldable layer branch
    by branch (to check the fold); `shuffle_residual` finishes both."""

    cfg: object

    def config(self) -> dict:
        return asdict(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shuffle_residual(self._forward(x, branched=False), x, self.cfg.scale, self.training)

    def forward_branched(self, x: torch.Tensor) -> torch.Tensor:
        """The multi-branch training form, branch by branch (for checks)."""
        return shuffle_residual(self._forward(x, branched=True), x, self.cfg.scale, self.training)

    def forward_tail(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the tail's (B, C*s*s, H, W) channels, before the
        residual and the pixel shuffle: the restorer finishes them at the
        input's resolution (`tensors.shuffle_residual_pixels`), four to nine
        times fewer float passes over the output."""
        return self._forward(x, branched=False)

    def _forward(self, x: torch.Tensor, branched: bool) -> torch.Tensor:
        raise NotImplementedError


class ECBSR(BranchedSR):
    def __init__(self, **kwargs):
        super().__init__()
        cfg = ECBSRConfig(**kwargs)
        if cfg.widths is not None and not cfg.deploy:
            raise ValueError("per-layer widths exist only for the folded (deploy) form")
        if len(cfg.layer_widths()) != cfg.blocks + 1:
            raise ValueError(f"widths must have {cfg.blocks + 1} entries")
        self.cfg = cfg
        widths = cfg.layer_widths()
        ins = [cfg.colors] + widths
        outs = widths + [cfg.colors * cfg.scale**2]
        layers = []
        for i, (cin, cout) in enumerate(zip(ins, outs)):
            if cfg.deploy:
                layers.append(nn.Conv2d(cin, cout, 3, padding=1))
            else:
                # no identity for the head (3->C) and the tail (C->3s^2)
                body = 0 < i < len(outs) - 1
                layers.append(ECB(cin, cout, cfg.mid_mult, identity=body))
        self.layers = nn.ModuleList(layers)
        self.acts = nn.ModuleList(nn.PReLU(c) for c in widths)

    def _forward(self, x: torch.Tensor, branched: bool) -> torch.Tensor:
        y = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if branched and isinstance(layer, ECB) and layer.deploy is None:
                y = layer.forward_branched(y)
            else:
                y = layer(y)
            if i < last:
                y = self.acts[i](y)
        return y

    @torch.no_grad()
    def reparameterize(self) -> "ECBSR":
        """Fold every ECB into a plain conv and mark the config as deploy.
        Idempotent; returns self."""
        if self.cfg.deploy:
            return self
        convs = []
        for layer in self.layers:
            layer.reparameterize()
            convs.append(layer.deploy)
        self.layers = nn.ModuleList(convs)
        self.cfg.deploy = True
        return self


def ecbsr_groups(model: ECBSR) -> ChannelGroups:
    """ECBSR is pruned after folding: the deployed form is a plain chain of
    3x3 convolutions, each layer's output is one group, read by the next
    layer. Before folding, the identity branch of a body block would tie a
    layer's input and output channels together; after folding they are all
    one kernel, which is what runs. The tail's outputs feed the pixel shuffle
    in groups of scale**2 (and the global residual) and are never pruned."""
    model.reparameterize()
    convs, acts = list(model.layers), list(model.acts)
    groups = [Group(str(i), convs[i].out_channels, outs=[convs[i]], ins=[(convs[i + 1], 0)],
                    acts=[acts[i]], gates=[acts[i]]) for i in range(len(convs) - 1)]

    def set_widths(w):
        model.cfg.widths = [w[g.name] for g in groups]
    # dense 3x3 convolutions run faster on the CPU only at multiples of 16
    # channels (measured in weights/MODEL_CARD.md, "Pruning")
    return ChannelGroups(groups, set_widths, round_to=16)


ARCH = ArchSpec(
    id="ecbsr",
    model=ECBSR,
    # head + body + tail 3x3 convs, one pixel each
    receptive_radius=lambda c: ECBSRConfig(**c).blocks + 2,
    channel_groups=ecbsr_groups,
)


class FSRCNN(nn.Module):
    """FSRCNN(d=56, s=12, m=4) on one channel: the speed reference."""

    def __init__(self, scale: int = 4, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        self.scale = scale
        layers = [nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(
            d, 1, 9, stride=scale, padding=4, output_padding=scale - 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.body(x))
