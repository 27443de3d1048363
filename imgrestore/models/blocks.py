"""Shared layers.

`ECB` is the edge-oriented convolution block of the mobile-SR seed (ECBSR
family): parallel linear branches that fold *exactly* into one 3x3
convolution.

    3x3 conv
    1x1 conv -> 3x3 conv
    1x1 conv -> Sobel-x   (fixed mask, learned per-channel scale and bias)
    1x1 conv -> Sobel-y
    1x1 conv -> Laplacian
    identity              (only when in == out channels)

Every branch is linear, so the sum of branches is itself a 3x3 convolution.
Two forwards exist:

* `forward_branched` runs the branches one by one: the textbook training form,
  used to check the fold.
* `forward` (the default while training) computes the folded kernel from the
  branch parameters on every call and runs one convolution. It is the same
  function of the same parameters, so gradients are identical, but it costs
  what the deployed network costs (online re-parameterization). This is what
  makes training on two CPU cores affordable.

Exactness at the borders: a 1x1 conv with bias followed by a 3x3 conv with
zero padding would see zeros where the fold sees the bias. The branched form
therefore pads the *input* with zeros before the 1x1 conv (a 1x1 conv of a zero
pixel is exactly its bias) and runs the 3x3 with no padding, so branched and
folded agree everywhere, borders included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
_SOBEL_Y = _SOBEL_X.t().contiguous()
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


class _MaskBranch(nn.Module):
    """1x1 conv followed by a fixed 3x3 mask applied per channel, with a
    learned per-channel scale and bias.

    The 1x1 conv has no bias: every mask here sums to zero, so a constant
    added before it contributes exactly nothing (a dead parameter)."""

    def __init__(self, cin: int, cout: int, mask: torch.Tensor):
        super().__init__()
        assert abs(float(mask.sum())) < 1e-6, "a bias before a mask with non-zero sum is not dead"
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        # small random start (std 1e-3), drawn by uniform_: it has a C++ meta
        # kernel, so the registry's shape check (built on the meta device)
        # does not load torch's Python meta kernels, over a second at start-up
        self.scale = nn.Parameter(torch.empty(cout).uniform_(-1.7e-3, 1.7e-3))
        self.bias = nn.Parameter(torch.empty(cout).uniform_(-1.7e-3, 1.7e-3))
        self.register_buffer("mask", mask.clone(), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # files trained before the dead bias was removed carry it; it
        # contributed exactly zero (the mask sums to zero), so dropping it
        # loads the same function
        state_dict.pop(prefix + "conv.bias", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        # K[o, i] = w1x1[o, i] * scale[o] * mask          -> (O, I, 3, 3)
        w = self.conv.weight[:, :, 0, 0]  # (O, I)
        k = (w * self.scale[:, None])[:, :, None, None] * self.mask
        return k, self.bias

    def forward_branched(self, xpad: torch.Tensor) -> torch.Tensor:
        y = self.conv(xpad)  # (B, O, H+2, W+2)
        k = (self.scale[:, None, None, None] * self.mask).expand(y.shape[1], 1, 3, 3)
        return F.conv2d(y, k, self.bias, groups=y.shape[1])


class ECB(nn.Module):
    """Edge-oriented convolution block. `cin` -> `cout`, 3x3 receptive field.

    `mid_mult` widens the 1x1 -> 3x3 branch (ECBSR's depth multiplier).
    After `reparameterize()` the block is a plain `nn.Conv2d` inside
    (`self.deploy`), and the branch parameters are gone.
    """

    def __init__(self, cin: int, cout: int, mid_mult: float = 2.0, identity: bool = True):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.identity = identity and cin == cout
        mid = max(1, int(round(cout * mid_mult)))
        self.conv3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv1_3a = nn.Conv2d(cin, mid, 1)
        self.conv1_3b = nn.Conv2d(mid, cout, 3)
        self.sobel_x = _MaskBranch(cin, cout, _SOBEL_X)
        self.sobel_y = _MaskBranch(cin, cout, _SOBEL_Y)
        self.laplacian = _MaskBranch(cin, cout, _LAPLACIAN)
        self.deploy: nn.Conv2d | None = None

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel (cout, cin, 3, 3) and bias equal to the sum of
        all branches."""
        k = self.conv3.weight
        b = self.conv3.bias
        # 1x1 then 3x3: K = k1 (*) k0 -> sum_m k1[o, m] * k0[m, i]
        k0 = self.conv1_3a.weight[:, :, 0, 0]  # (M, I)
        k1 = self.conv1_3b.weight  # (O, M, 3, 3)
        k = k + torch.einsum("omhw,mi->oihw", k1, k0)
        b = b + (k1.sum(dim=(2, 3)) @ self.conv1_3a.bias) + self.conv1_3b.bias
        for branch in (self.sobel_x, self.sobel_y, self.laplacian):
            kb, bb = branch.folded()
            k = k + kb
            b = b + bb
        if self.identity:
            eye = torch.zeros_like(k)
            idx = torch.arange(self.cout)
            eye[idx, idx, 1, 1] = 1.0
            k = k + eye
        return k, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy is not None:
            return self.deploy(x)
        k, b = self.folded()
        return F.conv2d(x, k, b, padding=1)

    def forward_branched(self, x: torch.Tensor) -> torch.Tensor:
        xpad = F.pad(x, (1, 1, 1, 1))
        y = self.conv3(x)
        y = y + self.conv1_3b(self.conv1_3a(xpad))
        for branch in (self.sobel_x, self.sobel_y, self.laplacian):
            y = y + branch.forward_branched(xpad)
        if self.identity:
            y = y + x
        return y

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one 3x3 conv. Idempotent."""
        if self.deploy is not None:
            return
        k, b = self.folded()
        conv = nn.Conv2d(self.cin, self.cout, 3, padding=1)
        conv.weight.copy_(k)
        conv.bias.copy_(b)
        for name in ("conv3", "conv1_3a", "conv1_3b", "sobel_x", "sobel_y", "laplacian"):
            delattr(self, name)
        self.deploy = conv


def window_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each channel's mean over the k x k window around each pixel, counting
    only real pixels (fewer at the image's borders): (B, C, H, W) -> same.
    Two 1-D box filters: the valid part of a window is a rectangle, so the
    mean of the column means is the 2-D mean. A local statistic, unlike a
    global pooling, keeps a tiled run equal to the untiled one."""
    x = F.avg_pool2d(x, (k, 1), 1, (k // 2, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), 1, (0, k // 2), count_include_pad=False)
