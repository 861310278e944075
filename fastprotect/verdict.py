"""A per-image verdict: how far the protection moves an attacker's encoder, against the
noise floor, and when an image is one where protection cannot work.

Two parts:

- **Checks** (cheap, every image): an image whose shorter side is under
  :data:`TINY_SIDE` px is enlarged several times by an attacker's resize, so its
  perturbation is stretched into a smooth blur that encodes like the image; an image whose
  attacker's view is mostly flat colour (:data:`FLAT_SHARE` of its pixels with a local luma
  standard deviation under :data:`FLAT_STD`) gives the perturbation nowhere to hide, and
  the adaptive strength map turns it down there.
- **Strength** (three encoder passes at the view): the latent shift
  ``||E(v(x_hat)) - E(v(x))||`` divided by the shift that ±eta random sign noise added at
  the image's own resolution causes, ``||E(v(x + n)) - E(v(x))||``, where ``v`` is the
  attacker's resize (shorter side to the view, antialiased bilinear; the longer side capped
  at 4 views) and ``E`` the model's encoder; grey images are compared with grey noise.
  Random noise of the full budget is what anyone gets for free; a ratio near 1 means the
  protection does no more. The labels are this tool's reading of the ratio, not a guarantee:
  ``strong`` from :data:`STRONG` up, ``moderate`` from :data:`MODERATE`, ``weak`` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .filters import gaussian_blur, is_grey, luma

TINY_SIDE = 64
FLAT_STD = 1.0 / 255
FLAT_SHARE = 0.85
STRONG = 2.0
MODERATE = 1.2
DEFAULT_VIEW = 512


@dataclass
class Verdict:
    """``label`` is strong, moderate or weak (``None`` without the strength part);
    ``ratio`` the latent shift over the noise floor's; ``warnings`` the failed checks."""

    label: str | None = None
    ratio: float | None = None
    view: int = DEFAULT_VIEW
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = []
        if self.label is not None:
            parts.append(
                f"{self.label}: the attacker's encoder moves {self.ratio:.1f}x as far as under "
                f"random noise of the same budget ({self.view}-px view)"
            )
        parts += [f"warning: {w}" for w in self.warnings]
        return "; ".join(parts) if parts else "no problem found"


def flat_share(view: Tensor) -> float:
    """Share of pixels of ``1x3xHxW`` whose local luma standard deviation (Gaussian window,
    sigma 1.5) is under :data:`FLAT_STD`."""
    y = luma(view)
    mean = gaussian_blur(y, 1.5)
    var = (gaussian_blur(y * y, 1.5) - mean * mean).clamp_min(0)
    return float((var.sqrt() < FLAT_STD).float().mean())


def checks(x: Tensor, view: int = DEFAULT_VIEW, colour_only: bool = False) -> list[str]:
    """The cheap checks of ``1x3xHxW`` in ``[0, 1]``: tiny and flat images, and grey images
    under a model whose perturbation is ``colour_only`` (isoluminant)."""
    h, w = x.shape[-2:]
    out = []
    if colour_only and bool(is_grey(x).all()):
        out.append(
            "a grey image and a colour-only (isoluminant) model: grey images are kept grey, "
            "which removes the colour perturbation (only the little luma its clipping leaves "
            "remains), so this image is almost unprotected; protect it with a model whose "
            "perturbation changes luma, such as the earlier release: "
            "--model fastprotect-taef2-v1"
        )
    if min(h, w) < TINY_SIDE:
        out.append(
            f"only {w}x{h} px: an attacker's resize to {view} px enlarges it "
            f"{view / min(h, w):.0f}x and smooths the perturbation away; do not rely on it"
        )
    share = flat_share(verdict_view(x, min(view, min(h, w))))
    if share >= FLAT_SHARE:
        out.append(
            f"{100 * share:.0f} % of the image is flat colour: the perturbation has little "
            "texture to hide in and is turned down there, so protection is weakest"
        )
    return out


def _crop8(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    return x[..., : max(8, h // 8 * 8), : max(8, w // 8 * 8)]


def sign_noise(x: Tensor, eta: float, seed: int = 0) -> Tensor:
    """``x`` plus ±``eta`` random sign noise (seeded), clamped to ``[0, 1]``: the noise floor
    (:func:`fastprotect.eval.baselines.sign_noise`).

    Grey images (three equal channels) get grey noise, one sign for all three channels, as
    their protection is grey too."""
    from .eval.baselines import sign_noise as noisy  # only for the strength part

    if bool(is_grey(x).all()):
        return noisy(x[:, :1], eta, seed).expand_as(x)
    return noisy(x, eta, seed)


def verdict_view(x: Tensor, view: int = DEFAULT_VIEW) -> Tensor:
    """The attacker's view of ``x`` (shorter side to ``view``), its longer side capped at
    4 ``view`` so that long thin images stay affordable, cropped to multiples of 8."""
    h, w = x.shape[-2:]
    scale = min(view / min(h, w), 4 * view / max(h, w))
    size = (max(8, round(h * scale)), max(8, round(w * scale)))
    if size != (h, w):
        x = torch.nn.functional.interpolate(
            x, size=size, mode="bilinear", antialias=True, align_corners=False
        )
    return _crop8(x)


def shift_ratio(z: Tensor, z_hat: Tensor, z_noise: Tensor) -> float:
    """``||z_hat - z|| / ||z_noise - z||``."""
    return float((z_hat - z).norm()) / max(float((z_noise - z).norm()), 1e-12)


def noise_ratio(
    encoder, x: Tensor, x_hat: Tensor, eta: float, view: int = DEFAULT_VIEW, seed: int = 0
) -> float:
    """Latent shift of ``x_hat`` over that of ±``eta`` sign noise, at the attacker's view."""
    v = [verdict_view(t, view) for t in (x, x_hat, sign_noise(x, eta, seed))]
    return shift_ratio(*(encoder.latent(t) for t in v))


def label(ratio: float) -> str:
    return "strong" if ratio >= STRONG else "moderate" if ratio >= MODERATE else "weak"


@torch.no_grad()
def judge(protector, x: Tensor, x_hat: Tensor, view: int = DEFAULT_VIEW) -> Verdict:
    """The whole verdict of one ``1x3xHxW`` image and its protected version."""
    ratio = noise_ratio(protector.encoder, x, x_hat, protector.mop.config.eta, view)
    colour_only = protector.mop.config.isoluminant
    return Verdict(label(ratio), ratio, view, checks(x, view, colour_only))
