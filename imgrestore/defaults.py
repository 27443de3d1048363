"""Defaults shared by the command line and the library (no heavy imports:
the CLI reads them before torch is loaded)."""

# input pixels per tile side: tiles this small keep the feature maps in the
# CPU's cache, which made the upscalers faster than untiled runs, and memory
# stays small (`imgrestore bench upscale` times both).
DEFAULT_TILE = 256
# the colorizer's working resolution (long side)
DEFAULT_RENDER = 256
# `imgrestore train colorize` (the shipped colorizer's settings; the library's
# make_task uses the same): rebalancing lambda (1 = none), weight of the
# foreground term, fraction of the files held out
TRAIN_COLORIZE = {"rebalance": 1.0, "fg_weight": 0.25, "holdout": 0.05}
