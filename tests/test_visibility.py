"""Invisibility measures: the training term on colour and low frequencies, and the
low-frequency PSNR the evaluation reports beside PSNR."""

from __future__ import annotations

import pytest
import torch

from fastprotect.eval.metrics import lowfreq_psnr, psnr
from fastprotect.filters import gaussian_blur
from fastprotect.losses import LossInputs, VisibilityLoss

ETA = 8 / 255


def _term(d: torch.Tensor, **kwargs) -> float:
    x = torch.full_like(d, 0.5)
    inputs = LossInputs(x, x + d, torch.zeros(1), {}, torch.zeros(1), {}, None, ETA)
    return VisibilityLoss(**kwargs)(inputs).item()


def _checker(n: int = 32) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return ((i + j) % 2 * 2 - 1).float().expand(1, 3, n, n)


def test_a_grey_plane_costs_one_in_low_frequencies_and_nothing_in_colour():
    d = torch.full((1, 3, 32, 32), ETA)
    assert _term(d, chroma=1.0, low_frequency=1.0) == pytest.approx(1.0, rel=1e-4)
    assert _term(d, chroma=1.0, low_frequency=0.0) == pytest.approx(0.0, abs=1e-9)


def test_a_coloured_plane_costs_its_colour_by_hand():
    d = torch.zeros(1, 3, 16, 16)
    d[:, 0] = ETA  # red only: luma 0.299 eta, colour (0.701, -0.299, -0.299) eta
    expected = (0.701**2 + 2 * 0.299**2) / 3
    assert _term(d, chroma=1.0, low_frequency=0.0) == pytest.approx(expected, rel=1e-4)


def test_grey_fine_grain_is_far_cheaper_than_a_coloured_smooth_pattern_of_equal_size():
    grain = _checker() * ETA
    t = torch.linspace(0, 3.14, 32)
    smooth = torch.stack([torch.sin(t)[:, None].expand(32, 32), -torch.sin(t)[None].expand(32, 32),
                          torch.zeros(32, 32)])[None] * ETA  # fmt: skip
    assert _term(grain) < 0.01
    assert _term(smooth) > 50 * _term(grain)


def test_bad_visibility_settings_are_refused():
    with pytest.raises(ValueError, match="sigma > 0"):
        VisibilityLoss(sigma=0)
    with pytest.raises(ValueError, match="chroma >= 0"):
        VisibilityLoss(chroma=-1)


def test_gaussian_blur_keeps_constants_and_mass_and_handles_tiny_images():
    flat = torch.full((1, 3, 20, 30), 0.3)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat, atol=1e-6)
    impulse = torch.zeros(1, 1, 41, 41)
    impulse[..., 20, 20] = 1
    out = gaussian_blur(impulse, 2.0)
    assert out.sum().item() == pytest.approx(1.0, rel=1e-5) and out.max() < 0.05
    assert gaussian_blur(torch.rand(1, 3, 3, 2), 2.0).shape == (1, 3, 3, 2)


def test_lowfreq_psnr_ranks_fine_grain_as_less_visible_than_a_smooth_pattern():
    x = torch.full((1, 3, 64, 64), 0.5)
    grain = x + _checker(64) * ETA
    t = torch.linspace(0, 6.28, 64)
    smooth = x + torch.sin(t)[None, None, :, None].expand(1, 3, 64, 64) * ETA * 1.41
    # about equal PSNR, very different visibility
    assert abs(psnr(x, grain).item() - psnr(x, smooth).item()) < 0.1
    assert lowfreq_psnr(x, grain).item() > lowfreq_psnr(x, smooth).item() + 20
