"""Small image filters shared by training terms, metrics and transforms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Rec. 601 luma weights of R, G, B
LUMA = (0.299, 0.587, 0.114)


def is_grey(x: Tensor) -> Tensor:
    """Per image of ``Bx3xHxW``: whether its three channels are equal at every pixel (how a
    grayscale file decodes to RGB); a bool tensor of shape ``B``."""
    return (x.amax(1) == x.amin(1)).flatten(1).all(1)


def luma(x: Tensor) -> Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of ``Bx3xHxW``, ``Bx1xHxW``."""
    r, g, b = LUMA
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def gaussian_blur(x: Tensor, sigma: float, circular: bool = False) -> Tensor:
    """Separable Gaussian blur of ``BxCxHxW`` (kernel ``2 ceil(3 sigma) + 1``, reflected
    borders; replicated where the image is smaller than the kernel; with ``circular``,
    wrapped around, for periodic canvases that tile)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    if circular:
        mode = "circular"
    else:
        mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    x = F.pad(x, [radius, radius, radius, radius], mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
