"""Purifications: what an attacker may do to strip a protection before fine-tuning.

The recipes follow the robustness study of Hönig et al. (2024), "Adversarial perturbations
cannot reliably protect artists from generative AI" (code: ethz-spylab/robust-style-mimicry),
and the tools it tests. Each maps ``Bx3xHxW`` images in ``[0, 1]`` to images of the same
content; all keep the size but :func:`social_chain` (which shrinks large images) and
:func:`impress` (which purifies large images at a shorter side of 512). Images are
rounded to 8 bits first, as a published file would be. docs/evaluation.md lists each with
its parameters.

- :func:`skimage_gaussian_noise`: ``skimage.util.random_noise(mode="gaussian",
  var=sigma**2)`` (clipped), seeded.
- :func:`lanczos_down_up`: shrink by 4 and enlarge back with Lanczos; after the noise, a
  model-free stand-in for "noisy upscaling" (the published attack enlarges with a
  diffusion upscaler, which is not available here).
- :func:`crop_resize`: bicubic to a shorter side of 512, centre crop of 75 % of each side
  (384 of 512), bicubic back, then back to the input size. It moves the content, so it is
  scored against the same transform of the clean image (:data:`GEOMETRIC`).
- :func:`adverse_cleaner`: AdverseCleaner's filter chain, 64 bilateral filters (diameter
  5, sigma 8 in colour and space), then 4 guided filters (radius 4, eps 16, in 8-bit units)
  with the image itself as the guide, as the tool's script does; needs OpenCV's contrib
  build.
- :func:`social_chain`: a social network's re-encoding, the longer side to at most 1080
  (Lanczos), then JPEG q85 (4:2:0).
- :func:`impress`: IMPRESS-style consistency purification with the evaluation
  autoencoder (Cao et al. 2023): from the image plus Gaussian noise, Adam on
  ``||D(E(x')) - x'||^2 + alpha * max(d(x', x) - eps, 0)`` with a cosine schedule, the
  loss summed over the pixels so that each step is about the learning rate (:data:`IMPRESS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .transforms import jpeg

#: transforms that move the content: scored against the same transform of the clean image
GEOMETRIC = ("crop_resize",)
#: IMPRESS as run here. From the reference code (Cao et al.'s ``impress.py`` defaults):
#: alpha and eps of the closeness term, the cosine schedule's floor of 1e-5. Changed: 20
#: steps for the CPU where it takes 40, a step of 0.001 on [0, 1] and starting noise of
#: 0.01, and the loss summed over each image's pixels (``loss: "pixel sum"``) where the
#: reference averages them. With an average the gradient per pixel is about 1e-7 on a
#: 512-px image, below Adam's epsilon (1e-5 in the reference code, and here until
#: 2026-12-01), so each step is far smaller than the learning rate and shrinks as the image
#: grows; summed, every step is about the learning rate whatever the image size: a stronger
#: IMPRESS than the reference code's, on purpose (docs/evaluation.md).
IMPRESS = {
    "steps": 20,
    "lr": 0.001,
    "adam_eps": 1e-8,
    "loss": "pixel sum",
    "alpha": 0.5,
    "eps": 0.1,
    "noise": 0.01,
    "max_side": 512,
}


def _to_uint8(img: Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _from_uint8(arrs: list[np.ndarray], like: Tensor) -> Tensor:
    out = [torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1) for a in arrs]
    return torch.stack(out).to(like.device, like.dtype) / 255


def _per_image(x: Tensor, fn: Callable[[np.ndarray], np.ndarray]) -> Tensor:
    return _from_uint8([fn(_to_uint8(img)) for img in x], x)


def skimage_gaussian_noise(x: Tensor, sigma: float, seed: int = 0) -> Tensor:
    """Gaussian noise of standard deviation ``sigma`` as scikit-image adds it, clipped."""
    from skimage.util import random_noise

    out = []
    for i, img in enumerate(x):
        arr = _to_uint8(img).astype(np.float64) / 255
        out.append(random_noise(arr, mode="gaussian", var=sigma**2, rng=seed + i))
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in out]).to(x)


def lanczos_down_up(x: Tensor, factor: int = 4) -> Tensor:
    """Shrink by ``factor`` and enlarge back to the same size, Lanczos both ways."""

    def one(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        small = (max(1, round(w / factor)), max(1, round(h / factor)))
        im = Image.fromarray(a).resize(small, Image.Resampling.LANCZOS)
        return np.asarray(im.resize((w, h), Image.Resampling.LANCZOS))

    return _per_image(x, one)


def crop_resize(x: Tensor, side: int = 512, keep: float = 0.75) -> Tensor:
    """Bicubic to a shorter side of ``side``, centre crop ``keep`` of each side, bicubic
    back to the ``side`` frame, then to the input size."""

    def one(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        s = side / min(h, w)
        big = (max(1, round(w * s)), max(1, round(h * s)))
        im = Image.fromarray(a).resize(big, Image.Resampling.BICUBIC)
        cw, ch = round(big[0] * keep), round(big[1] * keep)
        left, top = (big[0] - cw) // 2, (big[1] - ch) // 2
        im = im.crop((left, top, left + cw, top + ch)).resize(big, Image.Resampling.BICUBIC)
        return np.asarray(im.resize((w, h), Image.Resampling.BICUBIC) if big != (w, h) else im)

    return _per_image(x, one)


def adverse_cleaner(x: Tensor, passes: int = 64, guided_passes: int = 4) -> Tensor:
    """``passes`` bilateral filters (d 5, sigma 8 and 8), then ``guided_passes`` guided
    filters (radius 4, eps 16) guided by the input, in 8-bit units."""
    try:
        import cv2

        guided = cv2.ximgproc.guidedFilter
    except (ImportError, AttributeError) as e:
        raise RuntimeError(
            "the adversecleaner transform needs OpenCV's contrib build: "
            "pip install 'fastprotect[eval]' (opencv-contrib-python-headless)"
        ) from e

    def one(a: np.ndarray) -> np.ndarray:
        img = a.astype(np.float32)
        y = img.copy()
        for _ in range(passes):
            y = cv2.bilateralFilter(y, 5, 8, 8)
        for _ in range(guided_passes):
            y = guided(img, y, 4, 16)
        return np.clip(np.round(y), 0, 255).astype(np.uint8)

    return _per_image(x, one)


def social_chain(x: Tensor, long_side: int = 1080, quality: int = 85) -> Tensor:
    """The longer side to at most ``long_side`` (Lanczos; never enlarged), then JPEG."""

    def one(a: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        if max(h, w) <= long_side:
            return a
        s = long_side / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.LANCZOS))

    shrunk = [one(_to_uint8(img)) for img in x]
    return torch.cat([jpeg(_from_uint8([a], x), quality) for a in shrunk])


def impress(
    x: Tensor,
    encode: Callable[[Tensor], Tensor],
    decode: Callable[[Tensor], Tensor],
    distance: Callable[[Tensor, Tensor], Tensor],
    steps: int = IMPRESS["steps"],
    lr: float = IMPRESS["lr"],
    adam_eps: float = IMPRESS["adam_eps"],
    alpha: float = IMPRESS["alpha"],
    eps: float = IMPRESS["eps"],
    noise: float = IMPRESS["noise"],
    max_side: int = IMPRESS["max_side"],
    seed: int = 0,
    pixel_sum: bool = IMPRESS["loss"] == "pixel sum",
    trace: Callable[[int, float, float, Tensor], None] | None = None,
) -> Tensor:
    """Consistency purification: the image the autoencoder reproduces best, near ``x``.

    Images whose shorter side is above ``max_side`` are first shrunk to it (antialiased
    bilinear), as an attacker purifies at its working size; the result keeps that size.
    ``pixel_sum=False`` averages the loss over the pixels, as the reference code and the
    earlier setting did (:data:`IMPRESS`). ``trace(step, inconsistency, distance, image)``
    is called before each step with the mean inconsistency ``||D(E(x')) - x'||^2`` and
    distance of the image being purified, and once more after the last step with those of
    the 8-bit result (``step == steps``).
    """
    from ..views import attacker_resize

    if min(x.shape[-2:]) > max_side:
        x = attacker_resize(x, max_side)
    x = (x.clamp(0, 1) * 255).round() / 255
    g = torch.Generator().manual_seed(seed)
    start = x + noise * torch.randn(x.shape, generator=g).to(x)
    xp = start.clamp(0, 1).detach().requires_grad_(True)
    opt = torch.optim.Adam([xp], lr=lr, eps=adam_eps)
    h, w = x.shape[-2:]
    scale = float(x.numel()) if pixel_sum else 1.0
    with torch.enable_grad():
        for i in range(steps):
            for group in opt.param_groups:  # cosine from lr to 1e-5 (1e-5: the reference's floor)
                group["lr"] = 1e-5 + (lr - 1e-5) * 0.5 * (1 + math.cos(math.pi * i / steps))
            recon = decode(encode(xp))[..., :h, :w]
            consistency = ((recon - xp) ** 2).mean()
            d = distance(xp, x)
            if trace is not None:
                trace(i, consistency.item(), d.mean().item(), xp.detach())
            loss = scale * (consistency + alpha * (d - eps).clamp_min(0).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                xp.clamp_(0, 1)
    out = ((xp.detach() * 255).round() / 255).to(x.dtype)
    if trace is not None:
        with torch.no_grad():
            recon = decode(encode(out))[..., :h, :w]
            trace(steps, ((recon - out) ** 2).mean().item(), distance(out, x).mean().item(), out)
    return out


def ssim_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 - SSIM``, the weights-free stand-in for LPIPS in :func:`impress`."""
    from .metrics import ssim

    return 1 - ssim(a, b)


#: model-free purifications by name (``evaluate --transforms``)
PURIFICATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gnoise0.05": lambda x: skimage_gaussian_noise(x, 0.05),
    "gnoise0.1": lambda x: skimage_gaussian_noise(x, 0.1),
    "gnoise0.05_up4": lambda x: lanczos_down_up(skimage_gaussian_noise(x, 0.05), 4),
    "gnoise0.1_up4": lambda x: lanczos_down_up(skimage_gaussian_noise(x, 0.1), 4),
    "jpeg50": lambda x: jpeg(x, 50),
    "crop_resize": crop_resize,
    "adversecleaner": adverse_cleaner,
    "social": social_chain,
}
#: purifications that need the evaluation autoencoder (bound by ``evaluate``)
AUTOENCODER_PURIFICATIONS = ("impress",)
#: ``--transforms purification`` expands to these
PURIFICATION_SET = (*PURIFICATIONS, *AUTOENCODER_PURIFICATIONS)
