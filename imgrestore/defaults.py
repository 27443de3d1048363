"""Defaults shared by the command line and the library (no heavy imports:
the CLI reads them before torch is loaded)."""

# input pixels per tile side. Smaller tiles keep the 32-channel feature maps
# in cache: x4 on a 512x512 input ran 16.9 output MP/s untiled, 32.3 with
# 256 tiles, 29.3 with 128 (2 threads, this machine); memory stays small.
DEFAULT_TILE = 256
# the colorizer's working resolution (long side)
DEFAULT_RENDER = 256
# `imgrestore train colorize` (the shipped colorizer's settings; the library's
# make_task uses the same): rebalancing lambda (1 = none), weight of the
# foreground term, fraction of the files held out
TRAIN_COLORIZE = {"rebalance": 1.0, "fg_weight": 0.25, "holdout": 0.05}
