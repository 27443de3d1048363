"""The one re-parameterization walker.

A module that can fold its training branches into deploy convolutions says
so with an idempotent `reparameterize()` (`blocks.ECB`, `sr.ECBSR`); this
walker folds every such module of a network once, outermost first (a family's
own `reparameterize` also records the folded form in its config).
"""

from __future__ import annotations

from torch import nn


def reparameterize(net: nn.Module) -> nn.Module:
    """Fold `net` in place into the form that runs; returns it. Idempotent."""
    if callable(getattr(net, "reparameterize", None)):
        net.reparameterize()
        return net
    for child in net.children():
        reparameterize(child)
    return net
