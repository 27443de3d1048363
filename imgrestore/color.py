"""Colour conversions in torch. Images are (B, C, H, W) float in [0, 1]."""

from __future__ import annotations

import torch

# ITU-R BT.601 luma as used by the SR literature (Y in [16, 235] on 0..255)
_Y_W = (65.481, 128.553, 24.966)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) BT.601 Y in [16/255, 235/255]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (16.0 + _Y_W[0] * r + _Y_W[1] * g + _Y_W[2] * b) / 255.0


# --------------------------------------------------------------------------- CIE Lab (sRGB, D65)

_M_RGB2XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                           [0.212671, 0.715160, 0.072169],
                           [0.019334, 0.119193, 0.950227]])
_M_XYZ2RGB = torch.linalg.inv(_M_RGB2XYZ)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])
_EPS = 216.0 / 24389.0  # (6/29)^3
_KAPPA = 24389.0 / 27.0


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) L in [0, 100], a, b ~ [-110, 110]."""
    lin = _srgb_to_linear(rgb)
    xyz = torch.einsum("ij,bjhw->bihw", _M_RGB2XYZ.to(rgb), lin) / _WHITE.to(rgb)[None, :, None, None]
    f = torch.where(xyz > _EPS, xyz.clamp(min=_EPS) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB -> (B, 1, H, W) Lab L in [0, 100] (cheaper than rgb_to_lab)."""
    y = torch.einsum("j,bjhw->bhw", _M_RGB2XYZ[1].to(rgb), _srgb_to_linear(rgb))[:, None]
    return gray_to_l(y, linear=True)


def gray_to_l(g: torch.Tensor, linear: bool = False) -> torch.Tensor:
    """Gray values in [0, 1] (sRGB-encoded unless `linear`) -> Lab L."""
    y = g if linear else _srgb_to_linear(g)
    f = torch.where(y > _EPS, y.clamp(min=_EPS) ** (1 / 3), (_KAPPA * y + 16) / 116)
    return 116 * f - 16


def l_to_gray(l: torch.Tensor) -> torch.Tensor:
    """Lab L in [0, 100] -> the sRGB-encoded gray value in [0, 1] of that
    lightness (the inverse of `gray_to_l`)."""
    fy = (l + 16) / 116
    y = torch.where(fy > 6 / 29, fy**3, (116 * fy - 16) / _KAPPA)
    return _linear_to_srgb(y.clamp(0.0, 1.0))


def _lab_to_linear(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lab -> (linear RGB, unclipped (B, 3, H, W); luminance Y (B, 1, H, W))."""
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
    xyz = torch.where(f > 6 / 29, f**3, (116 * f - 16) / _KAPPA) * _WHITE.to(lab)[None, :, None, None]
    lin = torch.einsum("ij,bjhw->bihw", _M_XYZ2RGB.to(lab), xyz)
    return lin, xyz[:, 1:2]


def lab_to_rgb_unclipped(lab: torch.Tensor) -> torch.Tensor:
    """Lab -> sRGB with no gamut mapping (values may leave [0, 1])."""
    return _linear_to_srgb(_lab_to_linear(lab)[0])


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab -> sRGB in [0, 1], keeping the luminance the caller gave.

    An out-of-gamut colour is moved straight towards the gray of the same
    luminance, (Y, Y, Y) in linear RGB, just far enough to fit: luminance is
    linear in linear RGB, so Y (and L) stay exactly as given, and only the
    chroma shrinks (never RGB clipping, which would change the luminance).
    The largest factor that fits has a closed form, so this is one pass."""
    lin, y = _lab_to_linear(lab)
    y = y.clamp(0.0, 1.0)
    d = lin - y  # (B, 3, H, W): offset from the gray of the same luminance
    # per channel, the largest s with 0 <= y + s d <= 1
    room = torch.where(d > 0, (1.0 - y) / d.clamp(min=1e-12), torch.where(d < 0, y / (-d).clamp(min=1e-12),
                                                                           torch.ones_like(d)))
    s = room.amin(dim=1, keepdim=True).clamp(max=1.0)
    return _linear_to_srgb((y + s * d).clamp_(0.0, 1.0))


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness of (B, 3, H, W) RGB in [0, 1],
    on the 0..255 scale the paper uses -> (B,)."""
    x = rgb * 255
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    sd = torch.sqrt(rg.flatten(1).var(dim=1, unbiased=False) + yb.flatten(1).var(dim=1, unbiased=False))
    mu = torch.sqrt(rg.flatten(1).mean(dim=1) ** 2 + yb.flatten(1).mean(dim=1) ** 2)
    return sd + 0.3 * mu
