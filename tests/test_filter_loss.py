"""The filter-robust training term and its differentiable filters (AdverseCleaner's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastprotect.filters import bilateral_filter, box_mean, guided_filter
from fastprotect.losses import FilterRobustLoss, LossInputs

from .conftest import needs_weights


def _smooth_noisy(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An 8-bit-scale float image with flats, edges and grain (``HxWx3``)."""
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.float32)
    base[:, : w // 2] = (40, 120, 200)
    base[:, w // 2 :] = (200, 90, 30)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.float32)


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255


def test_bilateral_filter_equals_opencv():
    cv2 = pytest.importorskip("cv2", reason="the comparison needs OpenCV ('fastprotect[eval]')")
    a = _smooth_noisy(23, 31)
    ref = cv2.bilateralFilter(a, 5, 8, 8)
    out = bilateral_filter(_to_tensor(a))[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(out - ref).max() < 1e-3


def test_guided_filter_equals_opencv_with_a_grey_guide():
    cv2 = pytest.importorskip("cv2", reason="the comparison needs OpenCV ('fastprotect[eval]')")
    if not hasattr(cv2, "ximgproc"):
        pytest.skip("the comparison needs OpenCV's contrib build ('fastprotect[eval]')")
    a = _smooth_noisy(23, 31)
    guide, src = a[..., 0].copy(), a[..., 1].copy()
    ref = cv2.ximgproc.guidedFilter(guide, src, 4, 16)
    g = torch.from_numpy(guide)[None, None].double() / 255
    p = torch.from_numpy(src)[None, None].double() / 255
    out = guided_filter(g, p, 4, 16 / 255**2)[0, 0].numpy() * 255
    assert np.abs(out - ref).max() < 2e-3


def test_bilateral_filter_smooths_grain_and_keeps_edges():
    x = _to_tensor(_smooth_noisy(32, 32))
    y = x
    for _ in range(8):
        y = bilateral_filter(y)
    left = y[..., 4:-4, 3:12]
    assert left.std(dim=(-1, -2)).max() < x[..., 4:-4, 3:12].std(dim=(-1, -2)).min() / 3
    # the 160-level step between columns 15 and 16 stays a step between neighbours
    # (edge-stopping); a plain blur of the same reach leaves about 20 levels there
    step = (y[0, 0, 4:-4, 16] - y[0, 0, 4:-4, 15]).mean()
    assert step > 150 / 255
    blurred = x
    for _ in range(8):
        blurred = bilateral_filter(blurred, sigma_color=1e3)
    assert (blurred[0, 0, 4:-4, 16] - blurred[0, 0, 4:-4, 15]).mean() < 50 / 255
    # a constant stays constant
    flat = torch.full((1, 3, 9, 9), 0.4)
    assert torch.allclose(bilateral_filter(flat), flat)


def test_box_mean_and_guided_filter_shapes_and_constants():
    x = torch.rand(2, 3, 3, 5)  # smaller than the radius: replicated borders
    assert box_mean(x, 4).shape == x.shape
    flat = torch.full((1, 3, 12, 12), 0.3)
    assert torch.allclose(guided_filter(flat, flat, 2), flat, atol=1e-6)
    # with the source as its own guide and a tiny eps, the filter keeps the source
    src = torch.rand(1, 3, 12, 12).double()
    assert torch.allclose(guided_filter(src, src, 2, 1e-12), src, atol=1e-4)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="1 <= passes low <= high"):
        FilterRobustLoss(passes=(4, 2))
    with pytest.raises(ValueError, match="radius >= 1"):
        FilterRobustLoss(radius=0)
    with pytest.raises(ValueError, match="two whole numbers"):
        FilterRobustLoss(passes=(4,))
    with pytest.raises(ValueError, match="whole"):
        FilterRobustLoss(radius=1.5)
    with pytest.raises(ValueError, match="diameter >= 3"):
        bilateral_filter(torch.rand(1, 3, 8, 8), diameter=1)
    with pytest.raises(ValueError, match="radius >= 1"):
        guided_filter(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), radius=0)


def test_describe_records_the_settings():
    d = FilterRobustLoss(2.0, passes=(3, 5), guided_passes=1, radius=3).describe(None)
    assert d == {"class": "FilterRobustLoss", "name": "filter", "weight": 2.0,
                 "passes": [3, 5], "guided_passes": 1, "radius": 3}  # fmt: skip


class _MeanEncoder:
    """A stand-in encoder: 8x8 average pooling."""

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 8)


def test_value_is_the_latent_distance_after_the_filters_and_gradients_reach_delta():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    delta = (torch.rand_like(x) - 0.5).mul(0.06).requires_grad_(True)
    x_hat = (x + delta).clamp(0, 1)
    target = torch.rand(2, 3, 4, 4)
    term = FilterRobustLoss(passes=(3, 3), guided_passes=2, radius=2)
    enc = _MeanEncoder()
    inputs = LossInputs(x, x_hat, enc.latent(x_hat), {}, target, {}, enc)
    value = term(inputs)
    y = x_hat
    for _ in range(3):
        y = bilateral_filter(y)
    for _ in range(2):
        y = guided_filter(x_hat, y, 2)
    assert torch.allclose(value, F.mse_loss(enc.latent(y), target))
    value.backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_filters_have_exact_gradients():
    torch.manual_seed(0)
    x = (0.5 + 0.05 * torch.randn(1, 3, 6, 6, dtype=torch.double)).requires_grad_(True)
    assert torch.autograd.gradcheck(bilateral_filter, (x,))
    g = torch.rand(1, 3, 6, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: guided_filter(a, b, 2), (g, x))


@needs_weights
def test_trains_with_the_real_encoder_on_a_tiny_crop():
    from fastprotect.encoders.taesd import TinyAutoencoderEncoder

    torch.manual_seed(0)
    encoder = TinyAutoencoderEncoder("taef2").freeze()
    x = torch.rand(1, 3, 32, 32)
    delta = torch.zeros_like(x, requires_grad=True)
    target = torch.randn_like(encoder.latent(x))
    term = FilterRobustLoss(passes=(2, 4))
    losses = []
    opt = torch.optim.Adam([delta], lr=0.01)
    for _ in range(5):
        x_hat = (x + delta).clamp(0, 1)
        loss = term(LossInputs(x, x_hat, encoder.latent(x_hat), {}, target, {}, encoder))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
