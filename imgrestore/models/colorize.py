"""Colorization family.

`FusionColorNet` follows "Let there be Color!" (Iizuka et al. 2016), made
lightweight with depthwise-separable blocks (HASN) and given the stacked
multi-scale attention of the lightweight-colorization seed:

    L (working resolution) -> low-level features (shared) -> local mid-level
                                                         (stacked MSA blocks)
    L (resized to global_size) -> the same low-level features -> global path
        (strided, pooled, fully connected) -> 256-d global vector -> class logits
    fusion: the global vector is broadcast to every local position, 1x1 conv
    decoder: two x2 up-samplings with skips -> a*b* at half the working
             resolution, bounded by tanh (x AB_RANGE)

The caller upsamples a*b* to the photo's full size and joins it to the
photo's own full-resolution L, so every detail of the input is kept and the
network's cost is fixed by the working resolution, not the photo's size.
The global path can look at another image (`global_from`): its global
features then set the colours (the seed's style transfer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .arch import ArchSpec, ChannelGroups, Group

AB_RANGE = 110.0  # |a|, |b| bound of the output
AB_BIN = 10.0  # a*b* bin width of the "bins" head (and of training's colour histogram)
AB_BINS = int(2 * AB_RANGE // AB_BIN)  # 22 bins per axis, centres -105, -95, ..., 105


def bin_centres() -> torch.Tensor:
    """(AB_BINS * AB_BINS, 2) a*b* centres, a-major."""
    c = -AB_RANGE + AB_BIN * (torch.arange(AB_BINS, dtype=torch.float32) + 0.5)
    return torch.stack(torch.meshgrid(c, c, indexing="ij"), dim=-1).reshape(-1, 2)


@dataclass
class ColorNetConfig:
    width: int = 32  # channels at 1/2 resolution; 2x at 1/4, 4x at 1/8
    global_size: int = 128  # side of the global path's fixed-size input
    global_dim: int = 256  # global feature vector
    classes: int = 0  # classification head outputs (0: none)
    mid_blocks: int = 3  # stacked multi-scale attention blocks at 1/8
    # per-stage channel counts that differ from the defaults below (set by
    # pruning): s1, s2, s3 (the 1/2, 1/4, 1/8 feature streams, skips
    # included), s3b (fusion and decoder at 1/8), g1, g2 (global convs), ca
    # (hidden units of the channel attention)
    widths: dict | None = None

    def stage_widths(self) -> dict[str, int]:
        w = self.width
        out = dict(s1=w, s2=2 * w, s3=4 * w, s3b=4 * w, g1=8 * w, g2=8 * w, ca=max(4, w))
        unknown = set(self.widths or {}) - set(out)
        if unknown:
            raise ValueError(f"unknown widths {sorted(unknown)}")
        out.update(self.widths or {})
        return out


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class SepBlock(nn.Module):
    """Depthwise 3x3 -> pointwise 1x1 -> activation, with a residual (HASN)."""

    def __init__(self, c: int, dilation: int = 1):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c)
        self.pw = nn.Conv2d(c, c, 1)
        self.act = _act()

    def forward(self, x):
        return x + self.act(self.pw(self.dw(x)))


class MSABlock(nn.Module):
    """Separable conv followed by stacked multi-scale attention: channel
    attention from the pooled descriptor, and spatial attention computed at
    three scales (1, 1/2, 1/4: pooled, convolved, upsampled, summed)."""

    def __init__(self, c: int, hidden: int | None = None):
        super().__init__()
        self.conv = SepBlock(c)
        hidden = hidden or max(4, c // 4)
        self.ca = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c))
        self.sa = nn.ModuleList(nn.Conv2d(c, 1, 3, padding=1) for _ in range(3))

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        ca = torch.sigmoid(self.ca(x.mean(dim=(2, 3))))[:, :, None, None]  # (B, C, 1, 1)
        sa = 0
        for i, conv in enumerate(self.sa):
            k = 2**i
            xi = F.avg_pool2d(x, k, ceil_mode=True) if k > 1 else x
            si = conv(xi)
            sa = sa + (F.interpolate(si, size=(h, w), mode="bilinear", align_corners=False) if k > 1 else si)
        return x * ca * torch.sigmoid(sa)  # (B, C, H, W)


class FusionColorNet(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        cfg = ColorNetConfig(**kwargs)
        self.cfg = cfg
        ws = cfg.stage_widths()
        s1, s2, s3, s3b, g1, g2 = (ws[k] for k in ("s1", "s2", "s3", "s3b", "g1", "g2"))
        # low-level, shared by local and global paths: 1/2, 1/4, 1/8
        self.low1 = nn.Sequential(nn.Conv2d(1, s1, 3, 2, 1), _act(), SepBlock(s1))
        self.low2 = nn.Sequential(nn.Conv2d(s1, s2, 3, 2, 1), _act(), SepBlock(s2))
        self.low3 = nn.Sequential(nn.Conv2d(s2, s3, 3, 2, 1), _act(), SepBlock(s3))
        # local mid-level: stacked multi-scale attention
        self.mid = nn.Sequential(*[MSABlock(s3, ws["ca"]) for _ in range(cfg.mid_blocks)])
        # global path: 1/16, 1/32, pooled, fully connected
        self.glob = nn.Sequential(
            nn.Conv2d(s3, g1, 3, 2, 1), _act(), SepBlock(g1),
            nn.Conv2d(g1, g2, 3, 2, 1), _act(), SepBlock(g2),
        )
        self.glob_fc = nn.Sequential(nn.Linear(g2, cfg.global_dim), _act())
        self.classifier = nn.Linear(cfg.global_dim, cfg.classes) if cfg.classes else None
        # fusion layer
        self.fuse = nn.Sequential(nn.Conv2d(s3 + cfg.global_dim, s3b, 1), _act())
        # decoder back to 1/2 with skips from the low-level features
        self.dec3 = nn.Sequential(SepBlock(s3b), SepBlock(s3b, dilation=2))
        self.up2 = nn.Conv2d(s3b, s2, 1)
        self.dec2 = SepBlock(s2)
        self.up1 = nn.Conv2d(s2, s1, 1)
        self.dec1 = SepBlock(s1)
        self.head = nn.Conv2d(s1, 2, 3, padding=1)

    def config(self) -> dict:
        return asdict(self.cfg)

    @staticmethod
    def normalize(l: torch.Tensor) -> torch.Tensor:
        return (l - 50.0) / 50.0

    def global_features(self, l: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) L in [0, 100] at any size -> (B, global_dim)."""
        g = F.interpolate(l, size=(self.cfg.global_size,) * 2, mode="bilinear", align_corners=False,
                          antialias=True)
        f = self.low3(self.low2(self.low1(self.normalize(g))))
        f = self.glob(f).mean(dim=(2, 3))  # (B, 8w)
        return self.glob_fc(f)

    def forward(self, l: torch.Tensor, global_from: torch.Tensor | None = None,
                return_logits: bool = False):
        """l: (B, 1, H, W) L in [0, 100], H and W multiples of 8 ->
        (B, 2, H/2, W/2) a*b* in [-AB_RANGE, AB_RANGE] (and class logits)."""
        x = self.normalize(l)
        f1 = self.low1(x)  # (B, w, H/2, W/2)
        f2 = self.low2(f1)  # (B, 2w, H/4, W/4)
        f3 = self.low3(f2)  # (B, 4w, H/8, W/8)
        g = self.global_features(l if global_from is None else global_from)  # (B, G)
        m = self.mid(f3)
        fused = self.fuse(torch.cat([m, g[:, :, None, None].expand(-1, -1, *m.shape[2:])], dim=1))
        y = self.dec3(fused)
        y = self.dec2(self.up2(F.interpolate(y, size=f2.shape[2:], mode="bilinear", align_corners=False)) + f2)
        y = self.dec1(self.up1(F.interpolate(y, size=f1.shape[2:], mode="bilinear", align_corners=False)) + f1)
        ab = torch.tanh(self.head(y)) * AB_RANGE
        if return_logits:
            return ab, (self.classifier(g) if self.classifier is not None else None)
        return ab


# ---------------------------------------------------------------------------- on a pretrained encoder

@dataclass
class SemanticConfig:
    # the frozen encoder: a shipped weights file by name, and its config (so
    # the architecture is described by this file alone; the tensors are the
    # encoder file's)
    encoder: str = "encoder-efficientnet-lite0"
    encoder_config: dict | None = None
    width: int = 32  # decoder channels at 1/4; 1/2 at 1/2, 2x at 1/8, 4x at 1/16 and 1/32
    global_dim: int = 256  # the fused global vector (from the encoder's pooled head)
    classes: int = 0  # classification head outputs (0: none)
    mid_blocks: int = 2  # stacked multi-scale attention blocks at 1/16
    widths: dict | None = None  # per-stage overrides: d2, d4, d8, d16, ca
    # "ab": a*b* regressed (tanh); "bins": a distribution over a*b* bins
    # (Zhang et al. 2016) read out by its annealed mean at `temperature`
    head: str = "ab"
    temperature: float = 0.38
    # retrain the encoder's blocks after one of its taps and its head with the
    # decoder (their tensors are then this file's, over the encoder file's)
    tune_tail: bool = False
    tune_from: int = 2  # that tap: 1 (after the 1/8 map) or 2 (after the 1/16 map)
    # training only: channel dropout on the encoder's maps and dropout on the
    # global vector (a frozen classifier's features name each training photo
    # well enough for a decoder to memorize its colours)
    dropout: float = 0.0


class SemanticColorNet(nn.Module):
    """"Let there be Color!" with a pretrained classifier as its low- and
    global-level features, frozen (as Deep Koalarization does), and a light
    trained decoder:

        L -> gray -> EfficientNet-Lite0 (frozen) -> maps at 1/4, 1/8, 1/16, 1/32
                                                  + head map, pooled -> global vector
        fusion at 1/32: the 1/32 map joined with the global vector (1x1 conv)
        decoder: up x2 with the encoder's skip at each scale (U-Net), stacked
                 multi-scale attention at 1/16 and 1/8, and at 1/2 a skip from
                 a small trained convolution of L (edges the encoder's stride
                 has lost) -> a*b* at half the working resolution (tanh x AB_RANGE)

    `global_from` (another image's L) replaces the global vector: its colours'
    style. The encoder's tensors live in their own shipped file (they stay the
    same while the decoder is retrained); `encoder.` is never saved here."""

    # state-dict prefix -> the config field naming the shipped component
    # (registry.COMPONENTS) whose file holds those tensors
    EXTERNAL = {"encoder.": "encoder"}

    def __init__(self, **kwargs):
        super().__init__()
        from .encoder import EfficientLite

        cfg = SemanticConfig(**kwargs)
        self.cfg = cfg
        self.encoder = EfficientLite(**(cfg.encoder_config or {}))
        # the tail: blocks after the `tune_from` tap (1/8 or 1/16), then the
        # head (the maps the skips, the fusion and the global vector read)
        if cfg.tune_from not in (1, 2):
            raise ValueError(f"tune_from must be 1 (the 1/8 map) or 2 (the 1/16 map), not {cfg.tune_from}")
        self.tail_from = self.encoder.taps[cfg.tune_from] + 1
        if self.encoder.taps[3] != len(self.encoder.blocks) - 1:
            raise ValueError("the encoder's 1/32 map must be its last block's output")
        for name, p in self.encoder.named_parameters():
            p.requires_grad_(self.owns(f"encoder.{name}"))
        c4, c8, c16, c32, chead = self.encoder.channels
        w = cfg.width
        ws = dict(d2=max(8, w // 2), d4=w, d8=2 * w, d16=4 * w, ca=max(4, w))
        unknown = set(cfg.widths or {}) - set(ws)
        if unknown:
            raise ValueError(f"unknown widths {sorted(unknown)}")
        ws.update(cfg.widths or {})
        d2, d4, d8, d16 = ws["d2"], ws["d4"], ws["d8"], ws["d16"]
        self.glob_fc = nn.Sequential(nn.Linear(chead, cfg.global_dim), _act())
        self.classifier = nn.Linear(cfg.global_dim, cfg.classes) if cfg.classes else None
        self.fuse = nn.Sequential(nn.Conv2d(c32 + cfg.global_dim, d16, 1), _act())
        self.join16 = nn.Sequential(nn.Conv2d(d16 + c16, d16, 1), _act())
        self.mid16 = nn.Sequential(*[MSABlock(d16, ws["ca"]) for _ in range(cfg.mid_blocks)])
        self.join8 = nn.Sequential(nn.Conv2d(d16 + c8, d8, 1), _act())
        self.mid8 = nn.Sequential(SepBlock(d8), MSABlock(d8, ws["ca"]))
        self.join4 = nn.Sequential(nn.Conv2d(d8 + c4, d4, 1), _act())
        self.mid4 = nn.Sequential(SepBlock(d4), SepBlock(d4, dilation=2))
        self.low = nn.Sequential(nn.Conv2d(1, d2, 3, 2, 1), _act(), SepBlock(d2))
        self.join2 = nn.Sequential(nn.Conv2d(d4 + d2, d2, 1), _act())
        self.mid2 = SepBlock(d2)
        if cfg.head not in ("ab", "bins"):
            raise ValueError(f"unknown head {cfg.head!r}")
        self.head = nn.Conv2d(d2, 2, 3, padding=1) if cfg.head == "ab" else nn.Conv2d(d2, AB_BINS**2, 1)

    def config(self) -> dict:
        return asdict(self.cfg)

    def owns(self, key: str) -> bool:
        """Whether the state-dict entry `key` of the encoder is this file's
        (the tail, when `tune_tail`) rather than the encoder file's."""
        if not (self.cfg.tune_tail and key.startswith("encoder.")):
            return False
        parts = key.split(".")
        return parts[1] == "head" or (parts[1] == "blocks" and int(parts[2]) >= self.tail_from)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # no batch norm or dropout: always its inference form
        return self

    def retail(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Cached maps (1/4, 1/8, 1/16, 1/32, head) -> the same with the maps
        after the `tune_from` tap and the head recomputed from that tap's map
        by the tail as it is now (training with `tune_tail`)."""
        k = self.cfg.tune_from
        x, out = feats[k], list(feats[:k + 1])
        taps = self.encoder.taps
        for i in range(self.tail_from, len(self.encoder.blocks)):
            x = self.encoder.blocks[i](x)
            if i in taps:
                out.append(x)
        return [*out, F.relu6(self.encoder.head(x))]

    def encode(self, l: torch.Tensor) -> list[torch.Tensor]:
        """(B, 1, H, W) L in [0, 100] -> the encoder's maps (no gradient)."""
        from ..color import l_to_gray

        with torch.no_grad():
            g = self.encoder.normalize(l_to_gray(l) * 255.0)
            return self.encoder.features(g, gray=True)

    def global_vector(self, head: torch.Tensor) -> torch.Tensor:
        return self.glob_fc(head.mean(dim=(2, 3)))  # (B, global_dim)

    def decode(self, l: torch.Tensor, feats: list[torch.Tensor], g: torch.Tensor) -> torch.Tensor:
        f4, f8, f16, f32, _ = feats

        def up(x, like):
            return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)

        x = self.fuse(torch.cat([f32, g[:, :, None, None].expand(-1, -1, *f32.shape[2:])], dim=1))
        x = self.mid16(self.join16(torch.cat([up(x, f16), f16], dim=1)))  # (B, d16, H/16, W/16)
        x = self.mid8(self.join8(torch.cat([up(x, f8), f8], dim=1)))  # (B, d8, H/8, W/8)
        x = self.mid4(self.join4(torch.cat([up(x, f4), f4], dim=1)))  # (B, d4, H/4, W/4)
        low = self.low(self.normalize(l))  # (B, d2, H/2, W/2)
        return self.mid2(self.join2(torch.cat([up(x, low), low], dim=1)))  # (B, d2, H/2, W/2)

    def read_out(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder features -> (a*b*, bin logits or None)."""
        if self.cfg.head == "ab":
            return torch.tanh(self.head(x)) * AB_RANGE, None
        z = self.head(x)  # (B, Q, h, w)
        p = torch.softmax(z / self.cfg.temperature, dim=1)
        ab = torch.einsum("bqhw,qc->bchw", p, bin_centres().to(z))
        return ab, z

    normalize = staticmethod(FusionColorNet.normalize)

    def forward(self, l: torch.Tensor, global_from: torch.Tensor | None = None,
                return_logits: bool = False, feats: list[torch.Tensor] | None = None,
                return_bins: bool = False):
        """l: (B, 1, H, W) L in [0, 100], H and W even -> (B, 2, H/2, W/2)
        a*b* in [-AB_RANGE, AB_RANGE] (and class logits; and, with
        `return_bins`, the bin logits or None). `feats`: the encoder's maps of
        `l` when the caller has them (cached in training)."""
        feats = self.encode(l) if feats is None else feats
        if self.cfg.tune_tail and self.training:  # (encode ran without gradient)
            feats = self.retail(feats)
        head = feats[-1] if global_from is None else self.encode(global_from)[-1]
        g = self.global_vector(head)
        p = self.cfg.dropout if self.training else 0.0
        if p:
            feats = [F.dropout2d(f, p) for f in feats[:-1]] + [feats[-1]]
            g = F.dropout(g, p)
        ab, bins = self.read_out(self.decode(l, feats, g))
        logits = self.classifier(g) if self.classifier is not None else None
        if return_bins:
            return ab, logits, bins
        if return_logits:
            return ab, logits
        return ab


# ---------------------------------------------------------------------------- what the rest needs to know

def colornet_groups(model: FusionColorNet) -> ChannelGroups:
    """FusionColorNet's channel groups: each residual stream is one group (a
    SepBlock adds to its input, a skip is added in the decoder, so the block
    convs, the skip and the up-projection share channel indices); depthwise
    convs follow their group; the multi-scale attention multiplies its stream
    channel by channel (its channel-attention output and its spatial-attention
    input are on the stream); the fusion layer reads two groups side by side
    (the local stream and the global vector). The 2-channel a*b* head is never
    pruned."""
    def sep(block):  # SepBlock: dw on the stream, pw reads and writes it
        return dict(outs=[block.pw], ins=[(block.pw, 0)], dws=[block.dw], gates=[block.pw])

    def merge(*parts):
        out = dict(outs=[], ins=[], dws=[], gates=[])
        for p in parts:
            for k in out:
                out[k] += p.get(k, [])
        return out

    m = model
    ws = m.cfg.stage_widths()
    mids = [merge(sep(b.conv), dict(outs=[b.ca[2]], ins=[(b.ca[0], 0)] + [(c, 0) for c in b.sa])) for b in m.mid]
    specs = {
        "s1": merge(dict(outs=[m.low1[0]], gates=[m.low1[0]]), sep(m.low1[2]),
                    dict(ins=[(m.low2[0], 0)]),
                    dict(outs=[m.up1], gates=[m.up1]), sep(m.dec1), dict(ins=[(m.head, 0)])),
        "s2": merge(dict(outs=[m.low2[0]], gates=[m.low2[0]]), sep(m.low2[2]),
                    dict(ins=[(m.low3[0], 0)]),
                    dict(outs=[m.up2], gates=[m.up2]), sep(m.dec2), dict(ins=[(m.up1, 0)])),
        "s3": merge(dict(outs=[m.low3[0]], gates=[m.low3[0]]), sep(m.low3[2]), *mids,
                    dict(ins=[(m.glob[0], 0), (m.fuse[0], 0)])),
        "s3b": merge(dict(outs=[m.fuse[0]], gates=[m.fuse[0]]), sep(m.dec3[0]), sep(m.dec3[1]),
                     dict(ins=[(m.up2, 0)])),
        "g1": merge(dict(outs=[m.glob[0]], gates=[m.glob[0]]), sep(m.glob[2]), dict(ins=[(m.glob[3], 0)])),
        "g2": merge(dict(outs=[m.glob[3]], gates=[m.glob[3]]), sep(m.glob[5]), dict(ins=[(m.glob_fc[0], 0)])),
        "gvec": merge(dict(outs=[m.glob_fc[0]], gates=[m.glob_fc[0]], ins=[(m.fuse[0], ws["s3"])]),
                      dict(ins=[(m.classifier, 0)]) if m.classifier is not None else {}),
    }
    sizes = dict(ws, gvec=m.cfg.global_dim)
    groups = [Group(k, sizes[k], broadcast=(k == "gvec"), **v) for k, v in specs.items()]

    def set_widths(w):
        m.cfg.widths = {k: w[k] for k in ("s1", "s2", "s3", "s3b", "g1", "g2")} | {"ca": ws["ca"]}
        m.cfg.global_dim = w["gvec"]
    return ChannelGroups(groups, set_widths)


# The whole image runs at a working resolution and the caller upsamples the
# a*b*: there is no receptive radius to tile by, and a tile would see only
# part of the photo's global features.
FUSION_ARCH = ArchSpec(id="fusion-colornet", model=FusionColorNet, receptive_radius=lambda c: 0,
                       size_multiple=8, tile_safe=False, channel_groups=colornet_groups)
SEMANTIC_ARCH = ArchSpec(id="semantic-colornet", model=SemanticColorNet, receptive_radius=lambda c: 0,
                         size_multiple=8, tile_safe=False)
