"""The attacker's view: how a perturbation defined at the attacker's scale reaches an image.

A mimic never encodes the file as published. Its pipeline first resizes each image so that
its shorter side is the model's working size (512 px for SD-1.5-class LoRA training,
768-1024 for SDXL/FLUX-class), and may crop it. A *view* is that resized image; its size
``V`` is the length of the shorter side in pixels.

A view model (``MoPConfig.view = V > 0``) defines each perturbation as a periodic canvas
of period ``R`` *in view pixels*: the attacker who works at ``V`` sees the canvas 1:1,
whatever the image's own resolution or aspect ratio. :func:`canvas_to_image` lays the
periodic canvas over the image's view-size frame (top-left aligned, cropped to the aspect
ratio) and resizes it isotropically (bicubic) to the image, so nothing is stretched anisotropically
and a 5x larger original carries a 5x larger pattern that the attacker's resize brings
back to scale. An attacker at another working size ``V'`` sees the canvas scaled by
``V'/V``; :class:`AttackerViews` trains the perturbations over a range of such scales,
resize filters and publishing resolutions (an expectation over the attacker's resize), on
``crop x crop`` view-space crops so one step costs one crop-sized encoder pass.

Legacy models (``view = 0``, format v1) stretch their ``RxR`` perturbation to the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: resize filters an attacker's pipeline may use (torch's names)
FILTERS = ("bilinear", "bicubic", "area")


def _min(a, b):
    """``min`` of two sizes that stays symbolic under ``torch.jit.trace`` (where sizes are
    0-dim tensors) and ``torch.export`` (``SymInt``)."""
    if isinstance(a, Tensor):
        return torch.minimum(a, b)
    return torch.sym_min(a, b)


def view_frame(h, w, view: int):
    """The size ``(hv, wv)`` of an ``h x w`` image's frame in view pixels (shorter side
    ``view``), rounded up so that the canvas covers the whole image."""
    m = _min(h, w)
    return (h * view + m - 1) // m, (w * view + m - 1) // m


def _max(a: int, b):
    """``max`` of an int and a size that stays symbolic under tracing and export."""
    if isinstance(b, Tensor):
        return torch.clamp(b, min=a)
    return torch.sym_max(a, b)


def capped_view(h, w, view: int, cap: float = 0.0):
    """The view size a canvas is laid over on an ``h x w`` image: ``view``, or with a
    publish ``cap`` (see ``MoPConfig.publish_cap``) at least ``ceil(min(h, w) / cap)``,
    so the canvas is enlarged at most ``cap`` times. Integer arithmetic (the cap in
    thousandths), so it traces and exports."""
    if not cap:
        return view
    c = round(cap * 1000)
    m = _min(h, w)
    return _max(view, (m * 1000 + c - 1) // c)


#: a view frame's shorter side is at most this many times the image's: a view model's frame
#: for an image whose shorter side is under ``view / 16`` px (32 px at a 512-px view) is laid
#: at ``16 x`` that side instead, so a 1 x 4000 px strip needs a 16 x 64000 frame, not a
#: 512 x 2048000 one (12 GB). Such images are too small to protect anyway (the verdict
#: warns under 64 px); for every larger one the frame is unchanged.
MAX_FRAME_UPSCALE = 16


def frame_view(h, w, view: int, cap: float = 0.0):
    """The shorter side, in view pixels, of the frame a canvas is laid over on an ``h x w``
    image: :func:`capped_view`, at most :data:`MAX_FRAME_UPSCALE` times ``min(h, w)``.
    Symbolic under tracing and export, as :func:`capped_view`."""
    v = capped_view(h, w, view, cap)
    limit = _min(h, w) * MAX_FRAME_UPSCALE
    if isinstance(v, Tensor) and isinstance(limit, Tensor):
        return torch.minimum(v, limit)
    if isinstance(v, Tensor):
        return torch.clamp(v, max=limit)
    if isinstance(limit, Tensor):
        return torch.clamp(limit, max=v)
    return torch.sym_min(v, limit)


def tile_canvas(canvas: Tensor, hv, wv, top=0, left=0) -> Tensor:
    """The periodic canvas ``Bx3xRxR`` read over an ``hv x wv`` frame starting at
    ``(top, left)`` (indices taken modulo ``R``); differentiable w.r.t. the canvas.

    Shape:
        canvas: ``BxCxRxR``. Returns ``BxCxhvxwv``.
    """
    r = canvas.shape[-1]
    rows = (torch.arange(hv, device=canvas.device) + top) % r
    cols = (torch.arange(wv, device=canvas.device) + left) % r
    return canvas.index_select(2, rows).index_select(3, cols)


def canvas_to_image(canvas: Tensor, h, w, view: int, cap: float = 0.0) -> Tensor:
    """Map periodic canvases (period ``R`` view pixels) onto an ``h x w`` image.

    The canvas is tiled over the image's view frame (:func:`view_frame`) and resized
    isotropically to ``h x w``, bicubic (antialiased when shrinking): it keeps more of a
    fine-grained canvas through the attacker's downsampling than bilinear
    (docs/training.md). With a publish ``cap`` the frame is at least ``min(h, w) / cap``
    view pixels on its shorter side (:func:`capped_view`); on an image whose shorter side
    is under ``view / 16`` px the frame is ``16 x`` that side (:func:`frame_view`), so the
    memory stays bounded on thin strips.
    Works under tracing and ``torch.export`` for every image size.

    Shape:
        canvas: ``BxCxRxR``. Returns ``BxCxhxw``.
    """
    hv, wv = view_frame(h, w, frame_view(h, w, view, cap))
    frame = tile_canvas(canvas, hv, wv)
    return F.interpolate(frame, size=(h, w), mode="bicubic", antialias=True, align_corners=False)


def attacker_resize(x: Tensor, view: int, mode: str = "bilinear") -> Tensor:
    """Resize ``Bx3xHxW`` images so that the shorter side is ``view`` (antialiased)."""
    h, w = x.shape[-2:]
    m = min(h, w)
    size = (max(1, round(h * view / m)), max(1, round(w * view / m)))
    return _resize(x, size, mode)


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)


def _log_uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    u = torch.rand((), generator=g).item()
    return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


class AttackerViews(nn.Module):
    """Training-time expectation over the attacker's view of a protected crop.

    For each sample: a random phase of the periodic canvas; a random *publish* factor
    ``p`` (the published image has ``p`` native pixels per view pixel: protect resizes
    the canvas by ``p``, bicubic, as :func:`canvas_to_image` does); a random attacker
    scale ``s`` (the attacker works at ``s * V``: it sees the canvas scaled by ``s``) with
    a random resize filter. The same
    geometry (without the filters) is applied to the target canvas, so the target latent
    moves with the perturbation. All of it happens on a ``crop x crop`` view-space crop.

    Args:
        scales: ``(lo, hi)`` of ``s``, log-uniform (``(1, 2)`` covers views ``V..2V``).
        publish: ``(lo, hi)`` of ``p``, log-uniform (``(1, 1)``: published at the view size;
            below 1: published smaller than the view, the attacker enlarges it).
        filters: the attacker's resize filters, drawn uniformly.
        max_side: largest intermediate (published) crop side, bounding the cost.
    """

    def __init__(
        self,
        scales: Sequence[float] = (0.75, 2.0),
        publish: Sequence[float] = (1.0, 3.0),
        filters: Sequence[str] = FILTERS,
        max_side: int = 1024,
    ) -> None:
        super().__init__()
        s_lo, s_hi = (float(v) for v in scales)
        p_lo, p_hi = (float(v) for v in publish)
        if not 0 < s_lo <= s_hi:
            raise ValueError(f"view scales must satisfy 0 < low <= high, got {scales}")
        if not 0 < p_lo <= p_hi:
            raise ValueError(f"publish factors must satisfy 0 < low <= high, got {publish}")
        unknown = [f for f in filters if f not in FILTERS]
        if unknown or not filters:
            raise ValueError(f"filters must be among {FILTERS}, got {list(filters)}")
        self.scales, self.publish = (s_lo, s_hi), (p_lo, p_hi)
        self.filters, self.max_side = tuple(filters), int(max_side)
        #: the model's publish cap (``MoPConfig.publish_cap``; set by the training module):
        #: a draw publishes the canvas enlarged min(p, cap) times, and the attacker, who
        #: shrinks the image by p, sees it scaled by s * min(p, cap) / p
        self.publish_cap = 0.0

    def describe(self) -> dict:
        """The settings, for the model file's recipe."""
        return {
            "scales": list(self.scales),
            "publish": list(self.publish),
            "filters": list(self.filters),
            "max_side": self.max_side,
            "publish_cap": self.publish_cap,
        }

    def sample(self, g: torch.Generator | None = None) -> tuple[float, float, str]:
        """One draw of ``(s, p, filter)``."""
        s = _log_uniform(*self.scales, g)
        p = _log_uniform(*self.publish, g)
        f = self.filters[int(torch.randint(len(self.filters), (), generator=g))]
        return s, p, f

    def view_of(
        self,
        canvas: Tensor,
        crop: int,
        s: float,
        p: float,
        mode: str,
        top: int = 0,
        left: int = 0,
        filtered: bool = True,
    ) -> Tensor:
        """The ``crop x crop`` attacker's-view crop of one periodic canvas ``CxRxR``.

        ``filtered=False`` skips the publish round trip (for the target canvas)."""
        side = math.ceil(crop / s) + 2  # canvas pixels the crop needs, with a margin
        frame = tile_canvas(canvas[None], side, side, top, left)
        out = math.ceil(side * s)
        if filtered and p != 1.0:
            pub = min(self.max_side, max(8, round(side * p)))
            frame = _resize(frame, (pub, pub), "bicubic")  # protect maps the canvas on
            frame = _resize(frame, (out, out), mode)  # the attacker's resize
        else:
            frame = F.interpolate(frame, size=(out, out), mode="bilinear", align_corners=False)
        o = (out - crop) // 2
        return frame[0, :, o : o + crop, o : o + crop]

    def forward(
        self, delta: Tensor, target: Tensor, crop: int, g: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Views of perturbation canvases and of their target canvases.

        Shape:
            delta: ``Bx3xRxR`` (differentiable); target: ``Bx3xRxR``.
            Returns ``Bx3xcropxcrop`` twice.
        """
        r = delta.shape[-1]
        ds, ys = [], []
        for b in range(delta.shape[0]):
            s, p, mode = self.sample(g)
            if self.publish_cap and p > self.publish_cap:
                s, p = s * self.publish_cap / p, self.publish_cap
            top, left = (int(v) for v in torch.randint(r, (2,), generator=g))
            ds.append(self.view_of(delta[b], crop, s, p, mode, top, left))
            ys.append(self.view_of(target[b], crop, s, 1.0, mode, top, left, filtered=False))
        return torch.stack(ds), torch.stack(ys)
