"""Per-image metrics (every function returns one value per image, shape ``B``).

- invisibility: :func:`psnr`, :func:`ssim` (kornia's implementations) of ``x_hat`` against
  ``x``, and :func:`lowfreq_psnr`, the PSNR of both after a Gaussian blur (sigma 2 px): the
  error the eye sees best (smooth, structured patterns) without the fine grain it overlooks;
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

from ..filters import gaussian_blur


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of each image of ``y`` against ``x`` (peak 1)."""
    pairs = zip(x, y, strict=True)
    return torch.stack([kornia.metrics.psnr(a[None], b[None], 1.0) for a, b in pairs])


def lowfreq_psnr(x: Tensor, y: Tensor, sigma: float = 2.0) -> Tensor:
    """PSNR in dB of ``G_sigma * y`` against ``G_sigma * x`` (Gaussian blur, reflected
    borders): it ranks a coloured, smooth pattern as more visible than fine grain of the
    same PSNR, as the eye does (docs/evaluation.md)."""
    return psnr(gaussian_blur(x, sigma), gaussian_blur(y, sigma))


def ssim(x: Tensor, y: Tensor, window_size: int = 11) -> Tensor:
    """Mean SSIM of each image of ``y`` against ``x`` (Gaussian window, kornia). Inputs are
    made contiguous (NCHW) first: a decoded image is a permuted, channels-last view, which
    kornia's depthwise filters handle more slowly (one 512x512 image on 2 cores: 0.117 s ->
    0.016 s, ``tools/bench_report_passes.py``). On an image under ``window_size // 2 + 1``
    px on a side the window shrinks to the largest odd size the image pads to (1 px: 1)."""
    x, y = x.contiguous(), y.contiguous()
    window_size = min(window_size, 2 * min(x.shape[-2:]) - 1)
    return kornia.metrics.ssim(x, y, window_size, max_val=1.0).flatten(1).mean(1)


def latent_pull(z_hat: Tensor, z: Tensor, z_target: Tensor) -> Tensor:
    """``||z_hat - z_y||^2 / ||z - z_y||^2`` per image."""
    num = (z_hat - z_target).pow(2).flatten(1).sum(1)
    return num / (z - z_target).pow(2).flatten(1).sum(1)


@torch.no_grad()
def reconstruction_psnr(x: Tensor, z: Tensor, decode: Callable[[Tensor], Tensor]) -> Tensor:
    """``PSNR(D(z), x)`` per image: how much of the art the decoded latent ``z`` keeps.

    Where ``x``'s sides are no multiple of the autoencoder's factor the decoded image is a
    little larger; it is cropped to ``x``'s size."""
    h, w = x.shape[-2:]
    return psnr(x, decode(z)[..., :h, :w].clamp(0, 1))


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
