"""Latent statistics used to route an image: entropy ``H(z)`` and the reduced latent for ``A``.

Both run at training time (labels, centroids) and at inference (the same rule), so they
live in one place and are TorchScript-friendly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_square(x: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize of ``Bx3xHxW`` images to ``size x size``.

    This is the assignment input, in training and at inference alike. A same-size resize
    is the identity (measured: bit-exact), and having no shape branch keeps the exported
    graph valid for every input size.
    """
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def latent_entropy(z: Tensor, bins: int, lo: float, hi: float) -> Tensor:
    """Per-channel Shannon entropy (bits) of a fixed-range, fixed-bin histogram of ``z``.

    Values outside ``[lo, hi]`` fall into the end bins.

    Shape:
        z: ``BxCxhxw``. Returns ``BxC``.
    """
    b, c = z.shape[0], z.shape[1]
    flat = z.detach().float().reshape(b, c, -1)
    idx = ((flat - lo) / (hi - lo) * bins).floor().clamp(0, bins - 1).long()
    counts = torch.zeros(b, c, bins, dtype=torch.float32, device=z.device)
    counts.scatter_add_(2, idx, torch.ones_like(flat))
    p = counts / flat.shape[-1]
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(-1)


def reduce_latent(z: Tensor, grid: int) -> Tensor:
    """The reduction the assignment function clusters on: channel-wise average pooling of
    ``z`` to a ``grid x grid`` map, flattened to ``C * grid * grid`` features.

    Shape:
        z: ``BxCxhxw``. Returns ``Bx(C*grid*grid)``.
    """
    return F.adaptive_avg_pool2d(z.detach().float(), grid).flatten(1)


def route(entropy: Tensor, target_entropy: Tensor) -> Tensor:
    """Target index ``argmin_t ||H(z) - H(z_y^t)||_1``.

    Shape:
        entropy: ``BxC``; target_entropy: ``TxC``. Returns ``B`` (long).
    """
    return (entropy[:, None, :] - target_entropy[None]).abs().sum(-1).argmin(1)


def nearest(features: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid (squared Euclidean), ``BxD`` and ``KxD`` -> ``B``."""
    d = (features[:, None, :] - centroids[None]).pow(2).sum(-1)
    return d.argmin(1)
