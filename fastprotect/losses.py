"""Protection loss terms ("loss callbacks"), each a small module chosen and weighted in YAML.

A term gets one :class:`LossInputs` per step and returns an unweighted scalar; the
LightningModule adds ``weight * term`` over all terms and logs each one as
``train/<name>`` and ``val/<name>``. A new term (like :class:`JpegRobustLoss`, or a perceptual
regulariser) is a new subclass: the module does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import Encoder
from .filters import bilateral_filter, gaussian_blur, guided_filter, luma


@dataclass
class LossInputs:
    """Everything a term may use for one batch.

    Attributes:
        x: clean images ``Bx3xRxR``.
        x_hat: protected images (differentiable w.r.t. the perturbations).
        latent: ``E(x_hat)``.
        features: intermediate maps of ``E(x_hat)`` by name (the union all terms asked for).
        target_latent: ``E(y^t)`` for each sample's target.
        target_features: the same maps of ``E(y^t)``.
        encoder: the frozen encoder, for terms that need another pass.
        eta: the model's L-inf budget (terms on the perturbation are measured in it).
    """

    x: Tensor
    x_hat: Tensor
    latent: Tensor
    features: dict[str, Tensor]
    target_latent: Tensor
    target_features: dict[str, Tensor]
    encoder: Encoder
    eta: float = 8 / 255


class LossTerm(nn.Module):
    """Base class of a loss term.

    Args:
        weight: multiplier of this term in the total loss.
    """

    name: str = "term"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def layers(self, encoder: Encoder) -> tuple[str, ...]:
        """Feature maps this term reads (resolved against the encoder)."""
        return ()

    def forward(self, inputs: LossInputs) -> Tensor:
        raise NotImplementedError

    def describe(self, encoder: Encoder) -> dict:
        """What this term is, for the model file's recipe."""
        return {"class": type(self).__name__, "name": self.name, "weight": self.weight}


class LatentLoss(LossTerm):
    """The z-space texture term ``||E(x_hat) - z_y^t||^2`` (mean squared)."""

    name = "latent"

    def forward(self, inputs: LossInputs) -> Tensor:
        return F.mse_loss(inputs.latent, inputs.target_latent)


class MultiLayerLoss(LossTerm):
    """The multi-layer term ``(1/L) sum_l ||F^l(x_hat) - F^l(y^t)||^2`` (mean squared).

    Its ``weight`` is the paper's ``lambda``.

    Args:
        weight: ``lambda``.
        layers: encoder feature-map names; ``None`` takes the encoder's ``default_layers``.
    """

    name = "multilayer"

    def __init__(self, weight: float = 1.0, layers: Sequence[str] | None = None) -> None:
        super().__init__(weight)
        self._layers = tuple(layers) if layers is not None else None

    def layers(self, encoder: Encoder) -> tuple[str, ...]:
        chosen = self._layers if self._layers is not None else encoder.default_layers
        encoder.check_layers(chosen)
        return chosen

    def forward(self, inputs: LossInputs) -> Tensor:
        names = self.layers(inputs.encoder)
        total = sum(F.mse_loss(inputs.features[n], inputs.target_features[n]) for n in names)
        return total / len(names)

    def describe(self, encoder: Encoder) -> dict:
        return {**super().describe(encoder), "layers": list(self.layers(encoder))}


class JpegRobustLoss(LossTerm):
    """Expectation over JPEG: ``||E(JPEG_q(x_hat)) - z_y^t||^2`` with ``q`` drawn uniformly
    from ``qualities`` per sample, through kornia's differentiable JPEG codec.

    Trains the perturbation to survive the lossy re-encoding platforms apply; one extra
    encoder pass per step.

    Args:
        weight: multiplier in the total loss.
        qualities: ``(low, high)`` JPEG quality range.
    """

    name = "jpeg"

    def __init__(self, weight: float = 1.0, qualities: Sequence[float] = (50.0, 95.0)) -> None:
        super().__init__(weight)
        lo, hi = (float(q) for q in qualities)
        if not 1 <= lo <= hi <= 100:
            raise ValueError(
                f"JPEG qualities must satisfy 1 <= low <= high <= 100, got {qualities}"
            )
        self.qualities = (lo, hi)

    def forward(self, inputs: LossInputs) -> Tensor:
        import kornia

        x_hat = inputs.x_hat
        lo, hi = self.qualities
        q = lo + (hi - lo) * torch.rand(x_hat.shape[0], device=x_hat.device)
        compressed = kornia.enhance.jpeg_codec_differentiable(x_hat, q)
        return F.mse_loss(inputs.encoder.latent(compressed), inputs.target_latent)

    def describe(self, encoder: Encoder) -> dict:
        return {**super().describe(encoder), "qualities": list(self.qualities)}


class VisibilityLoss(LossTerm):
    """Invisibility by construction: the energy of the perturbation where the eye sees best.

    ``(chroma * mean(C(d)^2) + low_frequency * mean(G_sigma(d)^2)) / eta^2`` for
    ``d = x_hat - x``, where ``C(d) = d - Y(d)`` is the colour part (each channel's
    departure from the luma change ``Y(d) = 0.299 d_R + 0.587 d_G + 0.114 d_B``) and
    ``G_sigma`` a Gaussian blur of ``sigma`` pixels: the low spatial frequencies. A
    perturbation that pays little here is grey fine grain, which the eye overlooks where a
    coloured, smooth pattern of the same PSNR shows (measured in docs/evaluation.md).
    Dividing by ``eta^2`` makes the term about 1 for a full-budget grey plane.

    Args:
        weight: multiplier in the total loss.
        chroma: weight of the colour energy.
        low_frequency: weight of the low-frequency energy.
        sigma: blur of the low-frequency part, in training (view) pixels.
    """

    name = "visibility"

    def __init__(
        self,
        weight: float = 1.0,
        chroma: float = 1.0,
        low_frequency: float = 1.0,
        sigma: float = 2.0,
    ) -> None:
        super().__init__(weight)
        if chroma < 0 or low_frequency < 0 or sigma <= 0:
            raise ValueError(
                f"need chroma >= 0, low_frequency >= 0, sigma > 0; got {chroma}, "
                f"{low_frequency}, {sigma}"
            )
        self.chroma, self.low_frequency, self.sigma = float(chroma), float(low_frequency), sigma

    def forward(self, inputs: LossInputs) -> Tensor:
        d = inputs.x_hat - inputs.x
        total = self.chroma * (d - luma(d)).pow(2).mean()
        total = total + self.low_frequency * gaussian_blur(d, self.sigma).pow(2).mean()
        return total / inputs.eta**2

    def describe(self, encoder: Encoder) -> dict:
        return {
            **super().describe(encoder),
            "chroma": self.chroma,
            "low_frequency": self.low_frequency,
            "sigma": self.sigma,
        }


class PurificationRobustLoss(LossTerm):
    """Expectation over an IMPRESS-like purification: ``||E(P(x_hat)) - z_y^t||^2``.

    IMPRESS (Cao et al., NeurIPS 2023) removes a perturbation by making the image
    consistent with the autoencoder: it lowers ``||D(E(x')) - x'||^2`` while staying near the
    protected image. ``P`` here is a cheap, differentiable stand-in: ``steps`` signed
    gradient steps of ``step`` on that consistency loss, starting at ``x_hat``, with each
    step's direction computed without a graph and added as a constant (straight-through),
    so the gradient of this term reaches the perturbation through ``x_hat`` itself. The
    encoder's own decoder (TAESD family) is loaded on first use and never saved with the
    model or its checkpoints. Per step: one encoder and decoder pass with their backward,
    then one encoder pass for the term.

    Args:
        weight: multiplier in the total loss.
        steps: purification steps.
        step: size of each (L-inf), in [0, 1] image units.
    """

    name = "purify"

    def __init__(self, weight: float = 1.0, steps: int = 2, step: float = 4 / 255) -> None:
        super().__init__(weight)
        if steps < 1 or not 0 < step <= 1:
            raise ValueError(f"need steps >= 1 and 0 < step <= 1, got {steps}, {step}")
        self.steps, self.step = int(steps), float(step)
        self._decoder: list[nn.Module] = []  # a list: kept out of state_dict and checkpoints

    def decoder(self, encoder: Encoder) -> nn.Module:
        if not self._decoder:
            from .encoders.taesd import TinyAutoencoderDecoder, TinyAutoencoderEncoder

            if not isinstance(encoder, TinyAutoencoderEncoder):
                raise ValueError("the purification term needs a TAESD-family encoder")
            self._decoder.append(TinyAutoencoderDecoder(encoder.variant))
        return self._decoder[0]

    def forward(self, inputs: LossInputs) -> Tensor:
        decoder = self.decoder(inputs.encoder).to(inputs.x_hat.device)
        purified = inputs.x_hat
        for _ in range(self.steps):
            with torch.enable_grad():
                x = purified.detach().requires_grad_(True)
                consistency = F.mse_loss(decoder(inputs.encoder.latent(x)), x)
                (grad,) = torch.autograd.grad(consistency, x)
            purified = (purified - self.step * grad.sign()).clamp(0, 1)
        return F.mse_loss(inputs.encoder.latent(purified), inputs.target_latent)

    def describe(self, encoder: Encoder) -> dict:
        return {**super().describe(encoder), "steps": self.steps, "step": self.step}


class FilterRobustLoss(LossTerm):
    """Expectation over AdverseCleaner-style filtering: ``||E(P(x_hat)) - z_y^t||^2`` where
    ``P`` is ``n`` bilateral filters (diameter 5, sigma 8/255 in colour and 8 px in space,
    as OpenCV's), ``n`` drawn uniformly from ``passes`` each step, then
    ``guided_passes`` guided filters (``radius``, eps 16/255^2) guided by ``x_hat``.

    AdverseCleaner (lllyasviel, 2023) runs 64 such bilateral passes and 4 guided passes on
    the published image; they average colour within regions of similar colour, which is
    where a fine colour perturbation lives. Training sees the attacker's view, smaller than
    the published image, so the filters run there with fewer passes and a smaller guided
    radius (docs/evaluation.md measures how the two compare). The whole chain is
    differentiable (:func:`~fastprotect.filters.bilateral_filter` equals OpenCV's filter);
    one extra encoder pass per step. With 8-48 passes a training step on 2 CPU cores took
    1.9-2.5 s longer (docs/training.md). The pass count is drawn from torch's global
    generator each call, validation included (as :class:`JpegRobustLoss` draws qualities),
    so ``val/filter`` varies a little from one validation to the next.

    Args:
        weight: multiplier in the total loss.
        passes: ``(low, high)`` bilateral passes, inclusive.
        guided_passes: guided filters after them (0: none).
        radius: the guided filter's radius, in view pixels.
    """

    name = "filter"

    def __init__(
        self,
        weight: float = 1.0,
        passes: Sequence[int] = (8, 32),
        guided_passes: int = 4,
        radius: int = 2,
    ) -> None:
        super().__init__(weight)
        if len(passes) != 2 or any(int(n) != n for n in (*passes, guided_passes, radius)):
            raise ValueError(
                "passes must be two whole numbers (low, high), guided_passes and radius whole "
                f"numbers; got {passes}, {guided_passes}, {radius}"
            )
        lo, hi = (int(n) for n in passes)
        if not 1 <= lo <= hi or guided_passes < 0 or radius < 1:
            raise ValueError(
                "need 1 <= passes low <= high, guided_passes >= 0, radius >= 1; got "
                f"{list(passes)}, {guided_passes}, {radius}"
            )
        self.passes, self.guided_passes, self.radius = (lo, hi), int(guided_passes), int(radius)

    def purify(self, x_hat: Tensor, passes: int) -> Tensor:
        """The filter chain with ``passes`` bilateral passes."""
        y = x_hat
        for _ in range(passes):
            y = bilateral_filter(y)
        for _ in range(self.guided_passes):
            y = guided_filter(x_hat, y, self.radius)
        return y

    def forward(self, inputs: LossInputs) -> Tensor:
        lo, hi = self.passes
        n = int(torch.randint(lo, hi + 1, ()))
        filtered = self.purify(inputs.x_hat, n)
        return F.mse_loss(inputs.encoder.latent(filtered), inputs.target_latent)

    def describe(self, encoder: Encoder) -> dict:
        return {
            **super().describe(encoder),
            "passes": list(self.passes),
            "guided_passes": self.guided_passes,
            "radius": self.radius,
        }


def default_losses() -> list[LossTerm]:
    """The full recipe: z-space term plus the multi-layer term with ``lambda = 1``."""
    return [LatentLoss(1.0), MultiLayerLoss(1.0)]
