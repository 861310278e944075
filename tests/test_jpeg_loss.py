"""The JPEG-robust loss term: the value it claims, gradients through the codec, and a fit."""

from __future__ import annotations

import kornia
import pytest
import torch
import torch.nn.functional as F

from fastprotect.encoders import TINY_CONFIG, DiffusersVAEEncoder
from fastprotect.losses import JpegRobustLoss, LossInputs
from fastprotect.modelfile import read_header

from .conftest import needs_data
from .test_training import fit_tiny


def _inputs(encoder, x_hat, z_y):
    return LossInputs(x_hat, x_hat, encoder.latent(x_hat), {}, z_y, {}, encoder)


def test_value_is_the_latent_distance_after_differentiable_jpeg():
    enc = DiffusersVAEEncoder(config=TINY_CONFIG, seed=0)
    g = torch.Generator().manual_seed(0)
    x_hat = torch.rand(2, 3, 32, 32, generator=g).requires_grad_(True)
    z_y = torch.randn(2, 4, 16, 16, generator=g)
    term = JpegRobustLoss(qualities=(75, 75))
    got = term(_inputs(enc, x_hat, z_y))
    compressed = kornia.enhance.jpeg_codec_differentiable(x_hat, torch.tensor([75.0, 75.0]))
    assert got.item() == pytest.approx(F.mse_loss(enc.latent(compressed), z_y).item(), rel=1e-5)
    got.backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


def test_bad_quality_range_is_refused():
    with pytest.raises(ValueError, match="1 <= low <= high <= 100"):
        JpegRobustLoss(qualities=(90, 50))


@needs_data
def test_fit_with_the_jpeg_term_logs_it_and_records_it(tmp_path):
    cli, _ = fit_tiny(
        tmp_path,
        "--trainer.max_steps=4",
        "--model.losses+=fastprotect.losses.JpegRobustLoss",
        "--model.losses.qualities=[60, 90]",
    )
    assert "train/jpeg" in cli.trainer.logged_metrics
    recipe = read_header(tmp_path / "model.safetensors")["recipe"]
    terms = {t["name"]: t for t in recipe["losses"]}
    assert terms["jpeg"]["qualities"] == [60.0, 90.0]
