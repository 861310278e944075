"""The inference module: one ``nn.Module`` from image to protected image.

Every protection path (Python, Lightning predict, the exported graph) is meant to run this
module so that they cannot drift.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import Encoder
from .filters import is_grey, luma
from .mop import MixtureOfPerturbations
from .views import canvas_to_image


def budget_bound(eta: float, s_max: float = 1.0) -> float:
    """The largest change per channel, ``floor(255 * s_max * eta) / 255``: a whole number
    of 8-bit levels, so that the bound holds after rounding to 8 bits."""
    return math.floor(255 * s_max * eta + 1e-6) / 255


class Protector(nn.Module):
    """Encode at the assignment resolution, choose target and group, resize the
    perturbation to the image, scale it by the strength map, add, clamp. (A universal
    model, one target and no groups, skips the encoder: there is nothing to choose.)

    ``x_hat = clamp(x + clip(S(1 - M) * delta, -b, b), 0, 1)`` with
    ``S(u) = s_min + (s_max - s_min) * u`` and ``b = floor(255 * s_max * eta) / 255``, so that
    for 8-bit inputs ``||round(255 x_hat) - 255 x||_inf <= 255 * s_max * eta`` always.

    Args:
        encoder: the encoder the model was trained with.
        mop: the trained mixture.
        strength_map: visibility map ``M(x, x + delta)`` in ``[0, 1]``; ``None`` turns adaptive
            strength off (every pixel gets ``s_max``).
        s_min: strength where the perturbation is fully visible.
        s_max: strength where it is invisible.
        luma_s_min: ``None``: the whole perturbation gets ``S``. A number: only its colour
            part ``delta - Y(delta)`` does; its luma part ``Y(delta)`` (``Y`` the luma
            ``0.299 R + 0.587 G + 0.114 B``) gets ``S`` with this floor instead (a lower
            one, as a model sets it), so a luma pattern fades out of flat regions, where
            the eye sees it, and stays in texture, which hides it (docs/method.md, "Luma
            only where texture hides it").
    """

    def __init__(
        self,
        encoder: Encoder,
        mop: MixtureOfPerturbations,
        strength_map: nn.Module | None = None,
        s_min: float = 0.5,
        s_max: float = 1.0,
        luma_s_min: float | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= s_min <= s_max:
            raise ValueError(f"need 0 <= s_min <= s_max, got {s_min}, {s_max}")
        if luma_s_min is not None and not 0 <= luma_s_min <= s_max:
            raise ValueError(f"need 0 <= luma_s_min <= s_max, got {luma_s_min}, {s_max}")
        self.encoder = encoder.freeze()
        self.mop = mop.eval().requires_grad_(False)
        self.strength_map = strength_map
        self.s_min = float(s_min)
        self.s_max = float(s_max)
        self.luma_s_min = None if luma_s_min is None else float(luma_s_min)
        self.bound = budget_bound(mop.config.eta, s_max)

    # The stages, one method each so the benchmark can time them; forward composes them.
    def encode(self, x: Tensor) -> Tensor:
        """The latent of ``x`` resized to the assignment resolution."""
        return self.encoder.latent(self.mop.assignment_input(x))

    def choose_from_latent(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Target by the entropy rule, group by the nearest centroid; ``B`` each."""
        target = self.mop.route(z)
        return target, self.mop.assign(z, target)

    @property
    def needs_choice(self) -> bool:
        """Whether there is anything to choose: more than one target, or groups. A model
        with one target and no groups (a universal perturbation) needs no encoder pass."""
        return self.mop.num_targets > 1 or self.mop.config.groups > 0

    def choose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Target and group index per image, ``B`` each."""
        if not self.needs_choice:
            zero = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            return zero, zero
        return self.choose_from_latent(self.encode(x))

    def resized_perturbation(self, target: Tensor, group: Tensor, x: Tensor) -> Tensor:
        """``delta_g + delta_k`` mapped onto the image: a view model's periodic canvas tiled
        over the image's view frame and resized isotropically
        (:func:`~fastprotect.views.canvas_to_image`); a legacy model's perturbation
        stretched (bilinear) to the size of ``x``."""
        delta = self.mop.perturbation(target, group)
        c = self.mop.config
        if c.view:
            return canvas_to_image(delta, x.shape[-2], x.shape[-1], c.view, c.publish_cap)
        return F.interpolate(delta, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def scale(self, x: Tensor, delta: Tensor) -> Tensor:
        """``clip(S(1 - M(x, x + delta)) * delta, -b, b)`` (``s_max * delta`` when off);
        with ``luma_s_min``, the luma part of ``delta`` scaled by its own ``S``.

        ``delta`` is overwritten (it is the fresh output of :meth:`resized_perturbation`)."""
        # In-place arithmetic on fresh temporaries keeps the peak memory of large images
        # down (a 2048x2048 RGB float map is 48 MB).
        if self.strength_map is not None:
            m = self.strength_map(x, (x + delta).clamp_(0, 1))
            luma_factor = None  # S_luma(1 - m), before m is overwritten
            if self.luma_s_min is not None:
                luma_factor = m * (self.luma_s_min - self.s_max) + self.s_max
            factor = m.mul_(self.s_min - self.s_max).add_(self.s_max)  # S(1 - m)
            if luma_factor is None:
                delta = delta.mul_(factor)
            else:  # colour part * S + luma part * S_luma
                y = luma(delta)
                delta = delta.sub_(y).mul_(factor).add_(y.mul_(luma_factor))
        else:
            delta = delta * self.s_max
        return delta.clamp_(-self.bound, self.bound)

    def forward(self, x: Tensor) -> Tensor:
        """Protect ``Bx3xHxW`` images in ``[0, 1]`` (any ``H, W >= 1``); grey images (all
        three channels equal everywhere) stay grey (:func:`keep_grey`)."""
        return self.protect(x)[0]

    def protect(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward`, also returning the target index each image used (``B``), so a
        report need not choose again."""
        target, group = self.choose(x)
        delta = self.scale(x, self.resized_perturbation(target, group, x))
        return keep_grey(x, delta.add_(x).clamp_(0, 1)), target


def keep_grey(x: Tensor, protected: Tensor) -> Tensor:
    """``protected`` with grey images of the batch replaced by their luma.

    An image is grey when its three channels are equal at every pixel (how a grayscale
    file decodes to RGB). For those, the perturbation keeps only its luma part
    ``0.299 dR + 0.587 dG + 0.114 dB``, a weighted mean of the channels' perturbations, so
    the L-inf bound still holds, and the result is grey again: ink, pencil and manga
    artists get grayscale back. Colour images pass through unchanged. Branch-free, so the
    exported graph does the same. An isoluminant model's perturbation has no luma part
    (except what its clipping leaves), so a grey image comes back almost unchanged; the
    verdict's checks say so (:func:`fastprotect.verdict.checks`).
    """
    return torch.where(is_grey(x)[:, None, None, None], luma(protected), protected)


@torch.no_grad()
def protect_tensor(protector: Protector, x: Tensor) -> Tensor:
    """Protect one ``3xHxW`` image in ``[0, 1]``; returns the same shape."""
    return protector(x[None])[0]
