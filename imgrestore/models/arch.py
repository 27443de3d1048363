"""What an architecture tells the rest of imgrestore, declared next to it.

Each family file describes its architectures once with an `ArchSpec`: how to
build one from its saved config, the context one output pixel needs (tile
overlap), the input size multiple, whether tiling is exact, and the channel
groups the pruner may cut. `registry.ARCHS` lists the specs; nothing outside
a family file reaches into its layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..defaults import DEFAULT_TILE


@dataclass
class Group:
    """Channels that must be removed together because several layers share
    them."""

    name: str
    size: int
    outs: list[nn.Module]  # layers whose output channels are this group
    ins: list[tuple[nn.Module, int]]  # (layer, offset) reading this group as input channels
    dws: list[nn.Conv2d] = field(default_factory=list)  # depthwise convs on the group
    acts: list[nn.Module] = field(default_factory=list)  # per-channel activations (PReLU)
    gates: list[nn.Module] = field(default_factory=list)  # writers; the first one feeds GLCA
    # a per-image vector broadcast over positions (the colorizer's global
    # features): it has as many independent samples as calibration images
    broadcast: bool = False


@dataclass
class ChannelGroups:
    """A model described to the pruner: its groups, and how to record the
    pruned widths in the model's config (so the constructor rebuilds it)."""

    groups: list[Group]
    set_widths: Callable[[dict[str, int]], None]
    # wide groups keep a multiple of this many channels (see prune.width_step)
    round_to: int = 8


@dataclass(frozen=True)
class ArchSpec:
    id: str
    model: type[nn.Module]  # built as model(**config), training or deploy form
    # pixels of input context one output pixel depends on (for tile overlap)
    receptive_radius: Callable[[dict], int]
    size_multiple: int = 1  # input sides must be a multiple of this
    tile_safe: bool = True  # a tiled run equals the untiled one; else the image runs whole
    tile: int = DEFAULT_TILE  # the command's default tile side (input pixels)
    # model -> its prunable channel groups (None: not prunable). May fold the
    # model first: the groups describe the form that runs.
    channel_groups: Callable[[nn.Module], ChannelGroups] | None = None
    # why a family without channel groups cannot be pruned (prune says it)
    not_prunable: str = ""

    def build(self, config: dict) -> nn.Module:
        return self.model(**config)
