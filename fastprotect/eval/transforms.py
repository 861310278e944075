"""What an attacker's data pipeline may do to a protected image before fine-tuning on it.

Each transform maps ``Bx3xHxW`` images in ``[0, 1]`` to the same shape:

- :func:`jpeg`: a real JPEG round trip through Pillow (8-bit, 4:2:0 chroma subsampling,
  Pillow's defaults) at a given quality;
- :func:`resize_down_up`: shrink by a factor (antialiased bilinear) and enlarge back
  (bilinear), as when a platform stores a thumbnail and a model upsamples it;
- :func:`blur`: Gaussian blur, kernel ``2 * ceil(3 sigma) + 1``, reflected borders;
- :func:`gaussian_noise`: additive Gaussian noise, clamped; seeded, so reruns agree.

``ROBUSTNESS`` names the set the evaluation reports by default (SPEC section 4);
``TRANSFORMS`` holds them and the ones asked for by name (``--transforms``):
``jpeg95_444``, JPEG at quality 95 without chroma subsampling, which is how ``fastprotect
protect --format jpeg`` (and ``--format keep`` for JPEG inputs) writes its output.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..filters import gaussian_blur


def jpeg(x: Tensor, quality: int, subsampling: int = -1) -> Tensor:
    """Encode each image as JPEG at ``quality`` with Pillow and decode it again
    (``subsampling`` 0: 4:4:4, as ``fastprotect protect`` writes JPEG; -1: Pillow's
    default, 4:2:0)."""
    out = []
    for img in x:
        rgb = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=subsampling)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out.append(torch.from_numpy(back.copy()).permute(2, 0, 1))
    return torch.stack(out).to(x.device, x.dtype) / 255


def resize_down_up(x: Tensor, factor: float = 0.5) -> Tensor:
    """Resize by ``factor`` (antialiased bilinear) and back to the original size."""
    h, w = x.shape[-2:]
    small = (max(1, round(h * factor)), max(1, round(w * factor)))
    down = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def blur(x: Tensor, sigma: float = 1.0) -> Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return gaussian_blur(x, sigma)


def gaussian_noise(x: Tensor, sigma: float = 0.05, seed: int = 0) -> Tensor:
    """``clamp(x + N(0, sigma^2), 0, 1)`` with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    return (x + sigma * noise).clamp(0, 1)


ROBUSTNESS: dict[str, Callable[[Tensor], Tensor]] = {
    "clean": lambda x: x,
    "jpeg75": lambda x: jpeg(x, 75),
    "jpeg90": lambda x: jpeg(x, 90),
    "resize0.5": lambda x: resize_down_up(x, 0.5),
    "blur1": lambda x: blur(x, 1.0),
    "noise0.05": lambda x: gaussian_noise(x, 0.05),
}

TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    **ROBUSTNESS,
    "jpeg95_444": lambda x: jpeg(x, 95, subsampling=0),
}
