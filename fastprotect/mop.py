"""The Mixture of Perturbations: a plain ``nn.Module`` holding everything a model file holds.

For each of ``T`` targets: a global perturbation ``delta_g^t`` and ``K`` group
perturbations ``delta_k^t`` (``3xRxR`` each), the assignment centroids ``A_t`` (``KxD``), and
the target's latent entropy ``H(z_y^t)``. Each perturbation lives in the ``eta/2`` L-inf
ball (the global one gets the whole ``eta`` when ``K == 0``, i.e. a universal perturbation).
With ``view > 0`` the perturbations (and targets) are periodic canvases in the attacker's
view pixels (:mod:`fastprotect.views`). With ``isoluminant`` the perturbation is a pure
colour change: its luma part is removed (or, with ``luma_eta``, clipped to that smaller
bound) before the budget is applied.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .filters import gaussian_blur, luma
from .latents import latent_entropy, nearest, reduce_latent, resize_square, route
from .views import canvas_to_image


@dataclass
class MoPConfig:
    """The hyperparameters a trained model is defined by (stored in the model file)."""

    targets: list[str] = field(default_factory=lambda: ["low", "mid", "high"])
    groups: int = 4
    eta: float = 8 / 255
    resolution: int = 512
    assignment_resolution: int = 512
    entropy_bins: int = 64
    entropy_range: tuple[float, float] = (-4.0, 4.0)
    latent_grid: int = 4
    latent_channels: int = 4
    #: the attacker's working size (shorter side, px) the perturbations are defined at:
    #: periodic canvases of period ``resolution`` view pixels (fastprotect.views); 0: the
    #: legacy mapping, each perturbation stretched to the image
    view: int = 0
    #: the perturbation changes colour only, never luma: ``delta - Y(delta)`` (``Y`` the
    #: luma ``0.299 R + 0.587 G + 0.114 B``), clipped to the budget. The eye sees a
    #: mid-frequency luma pattern where an isoluminant one of the same size is much harder
    #: to see (docs/evaluation.md, "Colour or luma")
    isoluminant: bool = False
    #: with ``isoluminant``: the largest luma change allowed (0: none, colour only). The
    #: luma part ``Y(delta)`` is clipped to ``luma_eta``, added back, and the sum clipped
    #: to ``eta``: a small luma part survives JPEG's half-resolution colour and protects
    #: grey images, where a colour-only perturbation cannot (docs/evaluation.md)
    luma_eta: float = 0.0
    #: with ``luma_eta``: keep the luma part out of the low spatial frequencies by
    #: construction: ``Y - G_sigma * Y`` (a Gaussian blur of this sigma in perturbation
    #: pixels, periodic like the canvas) before the luma clip; 0: no high-pass
    luma_highpass: float = 0.0
    #: a view model's canvas is enlarged at most this many times in the published file
    #: (0: no cap). Without it an image whose shorter side is S carries the canvas
    #: enlarged S / view times, a coarse pattern on a large image; with it the canvas is
    #: laid over a frame of shorter side max(view, S / cap), and the attacker at the view
    #: sees it smaller than trained (fastprotect.views.canvas_to_image)
    publish_cap: float = 0.0

    def __post_init__(self) -> None:
        if self.publish_cap and (self.publish_cap < 1 or not self.view):
            raise ValueError(
                f"publish_cap must be 0 (none) or at least 1, for a view model; got "
                f"{self.publish_cap} (view {self.view})"
            )
        if self.luma_highpass < 0:
            raise ValueError(f"luma_highpass must be >= 0, got {self.luma_highpass}")
        if self.luma_highpass and not self.luma_eta:
            raise ValueError("luma_highpass filters the luma part, which needs luma_eta > 0")
        if math.ceil(3 * self.luma_highpass) >= self.resolution:
            raise ValueError(
                f"luma_highpass {self.luma_highpass} is too wide for {self.resolution}-px canvases"
            )
        if self.luma_eta < 0 or self.luma_eta > self.eta:
            raise ValueError(f"luma_eta must be in [0, eta = {self.eta:.4f}], got {self.luma_eta}")
        if self.luma_eta and not self.isoluminant:
            raise ValueError("luma_eta bounds the luma part of an isoluminant model only")

    @property
    def radius_global(self) -> float:
        return self.eta if self.groups == 0 else self.eta / 2

    @property
    def radius_group(self) -> float:
        return self.eta / 2

    @property
    def feature_dim(self) -> int:
        return self.latent_channels * self.latent_grid**2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["entropy_range"] = list(self.entropy_range)
        if not self.isoluminant:  # absent unless set, so readers before format 3 still read it
            del d["isoluminant"]
        for key in ("luma_eta", "luma_highpass", "publish_cap"):  # absent unless set
            if not d[key]:
                del d[key]
        return d


class MixtureOfPerturbations(nn.Module):
    """Perturbation bank, target routing and group assignment.

    Args:
        config: the model's hyperparameters.
    """

    def __init__(self, config: MoPConfig) -> None:
        super().__init__()
        self.config = config
        t, k, r = len(config.targets), config.groups, config.resolution
        self.global_delta = nn.Parameter(torch.zeros(t, 3, r, r))
        self.group_delta = nn.Parameter(torch.zeros(t, k, 3, r, r))
        self.register_buffer("centroids", torch.zeros(t, k, config.feature_dim))
        self.register_buffer("target_entropy", torch.zeros(t, config.latent_channels))
        self.register_buffer("targets", torch.zeros(t, 3, r, r, dtype=torch.uint8))

    @property
    def num_targets(self) -> int:
        return self.global_delta.shape[0]

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp every perturbation back into its L-inf ball (after each optimiser step)."""
        self.global_delta.clamp_(-self.config.radius_global, self.config.radius_global)
        self.group_delta.clamp_(-self.config.radius_group, self.config.radius_group)

    def perturbation(self, target: Tensor, group: Tensor) -> Tensor:
        """``delta_g^t + delta_k^t`` for each sample, ``Bx3xRxR`` (``K == 0``: global only);
        an isoluminant model's with its luma part clipped to ``luma_eta`` (0: removed), then
        clipped to the budget ``eta``."""
        delta = self.global_delta[target]
        if self.config.groups > 0:
            delta = delta + self.group_delta[target, group]
        if self.config.isoluminant:
            eta = self.config.eta
            y = luma(delta)
            colour = delta - y
            if self.config.luma_eta:
                if self.config.luma_highpass:
                    y = y - gaussian_blur(y, self.config.luma_highpass, circular=True)
                colour = colour + y.clamp(-self.config.luma_eta, self.config.luma_eta)
            delta = colour.clamp(-eta, eta)
        return delta

    def apply(self, x: Tensor, target: Tensor, group: Tensor) -> Tensor:
        """Training-time protection of ``RxR`` images.

        ``clamp(x + delta_g^t + delta_k^t, 0, 1)``.
        """
        return (x + self.perturbation(target, group)).clamp(0, 1)

    def entropy(self, z: Tensor) -> Tensor:
        """``H(z)`` with this model's histogram settings, ``BxC``."""
        lo, hi = self.config.entropy_range
        return latent_entropy(z, self.config.entropy_bins, float(lo), float(hi))

    def reduce(self, z: Tensor) -> Tensor:
        """The reduced latent the centroids live in."""
        return reduce_latent(z, self.config.latent_grid)

    def route(self, z: Tensor) -> Tensor:
        """Target index by the entropy rule, ``B``."""
        return route(self.entropy(z), self.target_entropy)

    def assign(self, z: Tensor, target: Tensor) -> Tensor:
        """Group index by nearest centroid of each sample's target, ``B``."""
        if self.config.groups == 0:
            return torch.zeros_like(target)
        feats = self.reduce(z)
        d = (feats[:, None, :] - self.centroids[target]).pow(2).sum(-1)
        return d.argmin(1)

    def assign_all(self, z: Tensor) -> Tensor:
        """Group index under every target, ``BxT``."""
        if self.config.groups == 0:
            return torch.zeros(z.shape[0], self.num_targets, dtype=torch.long, device=z.device)
        feats = self.reduce(z)
        return torch.stack([nearest(feats, c) for c in self.centroids], 1)

    def target_image(self, target: Tensor, size: tuple[int, int]) -> Tensor:
        """The target textures of ``target`` (``B`` indices) as ``Bx3xHxW`` floats in
        ``[0, 1]``, resized (bilinear) to ``size``: what the per-image baselines pull toward
        and the evaluation measures against; a view model's targets are mapped like its
        perturbations."""
        y = self.targets[target].float() / 255
        if self.config.view:
            return canvas_to_image(
                y, size[0], size[1], self.config.view, self.config.publish_cap
            ).clamp(0, 1)
        return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)

    def assignment_input(self, x: Tensor) -> Tensor:
        """Images resized to the assignment resolution."""
        return resize_square(x, self.config.assignment_resolution)
