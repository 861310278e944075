"""Perceptual visibility maps ``M(x, x + delta)`` in ``[0, 1]`` for adaptive strength.

``LPIPSMap``: the spatial LPIPS distance (AlexNet backbone, ``lpips`` package), divided by
``tau`` and clamped. It needs torchvision's AlexNet weights, resolved from the torch hub
cache or ``$FASTPROTECT_WEIGHTS_DIR/torchvision/`` (never downloaded at run time here).

``JNDMap``: weights-free. A just-noticeable-difference threshold per pixel from luminance
masking (Chou & Li 1995: the eye tolerates larger changes on dark and bright backgrounds)
and texture masking (larger changes hide in high local gradient), as Impasto used; the
map is the luma difference in JND units, blurred, clamped to ``[0, 1]``. With a
``colour_weight`` above 0 it also sees colour: the difference is
``sqrt(dY^2 + colour_weight * |dC|^2)``, ``dC`` the colour part of the change (the change
minus its luma, per channel). A map that measures luma only is blind to a colour-only
(isoluminant) perturbation and lowers its strength nowhere.

Both are ``nn.Module``\\ s taking ``Bx3xHxW`` images in ``[0, 1]`` and returning ``Bx1xHxW``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .filters import luma as _luma

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


class StrengthMapFallback(UserWarning):
    """``auto`` fell back to the JND map because the LPIPS backbone weights are missing."""


def _box(x: Tensor, k: int) -> Tensor:
    """``k x k`` mean filter with replicated borders, as separable sums of shifted views
    (about 5x faster than ``avg_pool2d`` on the CPU for large maps; same values)."""
    p = k // 2
    h, w = x.shape[-2], x.shape[-1]
    xp = F.pad(x, [p, p, 0, 0], mode="replicate")
    rows = xp[..., 0:w]
    for i in range(1, k):
        rows = rows + xp[..., i : i + w]
    rp = F.pad(rows, [0, 0, p, p], mode="replicate")
    out = rp[..., 0:h, :]
    for i in range(1, k):
        out = out + rp[..., i : i + h, :]
    return out / (k * k)


class JNDMap(nn.Module):
    """Weights-free visibility map: ``clamp(blur(|Y(x_hat) - Y(x)| / JND(x)), 0, 1)``.

    Args:
        texture_weight: how much local gradient (0-255 scale) raises the threshold.
        colour_weight: how much a colour change counts beside a luma change: a colour
            change of ``c`` levels (the length of its per-channel colour part) counts as a
            luma change of ``sqrt(colour_weight) * c``. 0 (the default): luma only, the
            map of the first models. The eye resolves fine colour detail far worse than
            fine luma detail, so a small weight is what fine colour grain warrants.
    """

    def __init__(self, texture_weight: float = 0.12, colour_weight: float = 0.0) -> None:
        super().__init__()
        if colour_weight < 0:
            raise ValueError(f"colour_weight must be at least 0, got {colour_weight}")
        self.texture_weight = texture_weight
        self.colour_weight = float(colour_weight)

    def threshold(self, x: Tensor) -> Tensor:
        """Per-pixel JND on the 0-255 luma scale, ``Bx1xHxW``."""
        return self._threshold(_luma(x) * 255)

    def _threshold(self, y: Tensor) -> Tensor:
        # In place on fresh temporaries: large images need several full-size maps here.
        bg = _box(y, 5)
        dark = bg.clamp(0, 127).div_(127).sqrt_().mul_(-17).add_(20)  # 17(1 - sqrt(bg/127)) + 3
        lum = torch.where(bg <= 127, dark, bg.sub_(127).mul_(3 / 128).add_(3))
        del dark
        s = F.pad(_box(y, 3), [1, 1, 1, 1], mode="replicate")
        grad = (s[..., 1:-1, 2:] - s[..., 1:-1, :-2]).abs_()
        grad = grad.maximum((s[..., 2:, 1:-1] - s[..., :-2, 1:-1]).abs_())
        del s
        return lum.maximum(_box(grad, 5).mul_(4 * self.texture_weight))

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        y = _luma(x).mul_(255)
        if self.colour_weight > 0:
            # out of place where autograd needs the inputs (the callers use no gradient;
            # at a zero change the square root has none)
            d = (x_hat - x).mul_(255)
            dy = _luma(d)
            colour = d.sub_(dy).square().sum(1, keepdim=True)
            diff = (dy.square() + self.colour_weight * colour).sqrt()
            return _box(diff / self._threshold(y), 5).clamp(0, 1)
        diff = _luma(x_hat).mul_(255).sub_(y).abs_()  # luma only
        return _box(diff.div_(self._threshold(y)), 5).clamp_(0, 1)


def find_alexnet() -> Path | None:
    """torchvision's AlexNet weights, if present locally (torch hub cache or weights dir)."""
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE]
    if os.environ.get("FASTPROTECT_WEIGHTS_DIR"):
        root = Path(os.environ["FASTPROTECT_WEIGHTS_DIR"])
        candidates += [root / "torchvision" / ALEXNET_FILE, root / ALEXNET_FILE]
    return next((c for c in candidates if c.is_file()), None)


class LPIPSMap(nn.Module):
    """Spatial LPIPS (AlexNet) distance divided by ``tau``, clamped to ``[0, 1]``.

    Args:
        alexnet: path of torchvision's ``alexnet-owt-7be5be79.pth``.
        tau: LPIPS distance that counts as fully visible.
    """

    def __init__(self, alexnet: str | Path, tau: float = 0.1) -> None:
        super().__init__()
        import lpips
        import torchvision

        with warnings.catch_warnings():
            # lpips asks torchvision for alexnet(pretrained=False), a deprecated spelling.
            warnings.simplefilter("ignore", UserWarning)
            net = lpips.LPIPS(net="alex", spatial=True, pnet_rand=True, verbose=False)
        features = torchvision.models.alexnet().features
        state = torch.load(alexnet, map_location="cpu", weights_only=True)
        features.load_state_dict(
            {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        )
        for piece in (
            net.net.slice1,
            net.net.slice2,
            net.net.slice3,
            net.net.slice4,
            net.net.slice5,
        ):
            for name, module in piece.named_children():
                module.load_state_dict(features[int(name)].state_dict())
        self.net = net.eval().requires_grad_(False)
        self.tau = tau
        self.border = 32

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        # AlexNet needs at least 31 px; a fixed replicate border makes every size work
        # (1x1 included) with one graph for all sizes, and is cropped off again.
        p = self.border
        pair = F.pad(torch.cat([x, x_hat]) * 2 - 1, [p, p, p, p], mode="replicate")
        d = self.net(pair[: x.shape[0]], pair[x.shape[0] :])  # spatial: input size
        return (d[..., p:-p, p:-p] / self.tau).clamp(0, 1)


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def build_strength_map(kind: str = "auto", colour_weight: float = 0.0) -> tuple[nn.Module, str]:
    """The visibility map to use: ``lpips``, ``jnd``, or ``auto`` (LPIPS when its backbone
    weights are present, else JND, announced once as a warning). ``colour_weight`` is the
    JND map's (:class:`JNDMap`); LPIPS sees colour of its own.

    Returns:
        The module and its name.
    """
    if kind not in ("auto", "lpips", "jnd"):
        raise ValueError(f"strength map must be auto, lpips or jnd, got {kind!r}")
    jnd = JNDMap(colour_weight=colour_weight)  # the answer, or the fallback of auto
    if kind == "jnd":
        return jnd, "jnd"
    missing = [m for m in ("lpips", "torchvision") if not importable(m)]
    if missing:
        why = (
            f"LPIPS needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''} "
            "(the full install: bash tools/setup.sh, or pip install 'fastprotect[train]')"
        )
        if kind == "lpips":
            raise FileNotFoundError(why)
        warnings.warn(
            f"{why}; adaptive strength uses the weights-free JND map instead",
            StrengthMapFallback,
            stacklevel=2,
        )
        return jnd, "jnd"
    path = find_alexnet()
    if path is not None:
        return LPIPSMap(path), "lpips"
    if kind == "lpips":
        raise FileNotFoundError(
            f"LPIPS needs torchvision's {ALEXNET_FILE} in {torch.hub.get_dir()}/checkpoints/ "
            "or $FASTPROTECT_WEIGHTS_DIR/torchvision/"
        )
    warnings.warn(
        f"LPIPS backbone weights ({ALEXNET_FILE}) not found; adaptive strength uses the "
        "weights-free JND map instead",
        StrengthMapFallback,
        stacklevel=2,
    )
    return jnd, "jnd"
