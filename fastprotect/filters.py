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


def bilateral_filter(
    x: Tensor, diameter: int = 5, sigma_color: float = 8 / 255, sigma_space: float = 8.0
) -> Tensor:
    """A bilateral filter of ``BxCxHxW``, differentiable, defined as OpenCV's
    ``cv2.bilateralFilter``: a circular window of ``diameter`` pixels, spatial weights
    ``exp(-r^2 / (2 sigma_space^2))``, colour weights ``exp(-c^2 / (2 sigma_color^2))``
    where ``c`` is the L1 distance summed over channels, borders mirrored without repeating
    the edge pixel (replicated where the image is smaller than the window). ``sigma_color``
    is in the units of ``x`` (8/255 on [0, 1] is OpenCV's 8 on 8-bit images)."""
    radius = diameter // 2
    if radius < 1 or sigma_color <= 0 or sigma_space <= 0:
        raise ValueError(
            f"need diameter >= 3, sigma_color > 0, sigma_space > 0; got {diameter}, "
            f"{sigma_color}, {sigma_space}"
        )
    h, w = x.shape[-2:]
    mode = "reflect" if min(h, w) > radius else "replicate"
    padded = F.pad(x, [radius] * 4, mode=mode)
    total = torch.zeros_like(x)
    norm = torch.zeros_like(x[:, :1])
    for i in range(-radius, radius + 1):
        for j in range(-radius, radius + 1):
            r2 = i * i + j * j
            if r2 > radius * radius:
                continue
            shifted = padded[:, :, radius + i : radius + i + h, radius + j : radius + j + w]
            c = (shifted - x).abs().sum(1, keepdim=True)
            weight = torch.exp(-0.5 * r2 / sigma_space**2 - 0.5 * (c / sigma_color) ** 2)
            total = total + weight * shifted
            norm = norm + weight
    return total / norm


def box_mean(x: Tensor, radius: int) -> Tensor:
    """The mean of ``BxCxHxW`` over ``(2 radius + 1)``-pixel squares; borders mirrored with
    the edge pixel repeated (OpenCV's ``BORDER_REFLECT``, which its guided filter uses),
    replicated where the image is smaller than ``radius``."""
    r = radius
    if r < 1:
        raise ValueError(f"need radius >= 1, got {radius}")
    if min(x.shape[-2:]) < r:
        x = F.pad(x, [r] * 4, mode="replicate")
    else:
        x = torch.cat([x[..., :r].flip(-1), x, x[..., -r:].flip(-1)], -1)
        x = torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], -2)
    return F.avg_pool2d(x, 2 * r + 1, stride=1)


def guided_filter(guide: Tensor, src: Tensor, radius: int = 4, eps: float = 16 / 255**2) -> Tensor:
    """He et al.'s guided filter (ECCV 2010) of ``src`` by ``guide``, each channel guided by
    the same channel of ``guide`` (``guide`` has one channel or as many as ``src``).
    ``eps`` is in squared units of the images (16 / 255^2 on [0, 1] is 16 on 8-bit).
    OpenCV's ``cv2.ximgproc.guidedFilter`` with a colour guide uses the three channels
    jointly; per channel is the cheaper stand-in used in training."""
    mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
    cov = box_mean(guide * src, radius) - mean_i * mean_p
    var = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)
