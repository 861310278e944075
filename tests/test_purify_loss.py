"""The purification-robust training term (an IMPRESS-like step, straight-through)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastprotect.losses import LossInputs, PurificationRobustLoss

from .conftest import needs_weights


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="steps >= 1"):
        PurificationRobustLoss(steps=0)
    with pytest.raises(ValueError, match="0 < step <= 1"):
        PurificationRobustLoss(step=0)


@needs_weights
def test_value_is_the_latent_distance_after_one_consistency_step():
    from fastprotect.encoders.taesd import TinyAutoencoderDecoder, TinyAutoencoderEncoder

    torch.manual_seed(0)
    encoder = TinyAutoencoderEncoder("taef2").freeze()
    x = torch.rand(2, 3, 32, 32)
    delta = (torch.rand_like(x) - 0.5).mul(0.06).requires_grad_(True)
    x_hat = (x + delta).clamp(0, 1)
    target = torch.randn_like(encoder.latent(x))
    term = PurificationRobustLoss(steps=1, step=4 / 255)
    inputs = LossInputs(
        x=x,
        x_hat=x_hat,
        latent=None,
        features={},
        target_latent=target,
        target_features={},
        encoder=encoder,
    )
    value = term(inputs)
    # the same step by hand: sign of the consistency gradient, taken without a graph
    decoder = TinyAutoencoderDecoder("taef2")
    probe = x_hat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.mse_loss(decoder(encoder.latent(probe)), probe), probe)
    purified = (x_hat.detach() - 4 / 255 * grad.sign()).clamp(0, 1)
    expected = F.mse_loss(encoder.latent(purified), target)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert value.item() != pytest.approx(F.mse_loss(encoder.latent(x_hat), target).item())
    value.backward()  # straight-through: the gradient reaches the perturbation
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    assert term.state_dict() == {}  # the decoder is never saved with a model
    assert term.describe(encoder)["steps"] == 1
