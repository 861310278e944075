"""Per-image metrics (every function returns one value per image, shape ``B``).

- invisibility: :func:`psnr`, :func:`ssim` (kornia's implementations) of ``x_hat`` against
  ``x``;
- :func:`latent_pull`: ``||E(x_hat) - z_y||^2 / ||E(x) - z_y||^2`` (lower is stronger; 1
  means the perturbation moved nothing toward the target);
- :func:`disruption`: ``PSNR(D(E(x)), x) - PSNR(D(E(x_hat)), x)`` in dB (higher means what
  a mimic learns from the latent is further from the art).

Images are ``Bx3xHxW`` in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable

import kornia
import torch
from torch import Tensor


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of each image of ``y`` against ``x`` (peak 1)."""
    pairs = zip(x, y, strict=True)
    return torch.stack([kornia.metrics.psnr(a[None], b[None], 1.0) for a, b in pairs])


def ssim(x: Tensor, y: Tensor, window_size: int = 11) -> Tensor:
    """Mean SSIM of each image of ``y`` against ``x`` (Gaussian window, kornia)."""
    return kornia.metrics.ssim(x, y, window_size, max_val=1.0).flatten(1).mean(1)


def latent_pull(z_hat: Tensor, z: Tensor, z_target: Tensor) -> Tensor:
    """``||z_hat - z_y||^2 / ||z - z_y||^2`` per image."""
    num = (z_hat - z_target).pow(2).flatten(1).sum(1)
    return num / (z - z_target).pow(2).flatten(1).sum(1)


@torch.no_grad()
def reconstruction_psnr(x: Tensor, z: Tensor, decode: Callable[[Tensor], Tensor]) -> Tensor:
    """``PSNR(D(z), x)`` per image: how much of the art the decoded latent ``z`` keeps."""
    return psnr(x, decode(z).clamp(0, 1))


@torch.no_grad()
def disruption(
    x: Tensor,
    x_hat: Tensor,
    encode: Callable[[Tensor], Tensor],
    decode: Callable[[Tensor], Tensor],
) -> Tensor:
    """``PSNR(D(E(x)), x) - PSNR(D(E(x_hat)), x)`` in dB per image.

    Both reconstructions are compared with the *clean* image: the question is how far
    what the autoencoder keeps of the protected image is from the art itself.
    """
    return reconstruction_psnr(x, encode(x), decode) - reconstruction_psnr(x, encode(x_hat), decode)
