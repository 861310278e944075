"""Per-image baselines at the same budget as MoP, on the same encoder.

- :func:`pgd`: projected gradient descent per image with sign steps, pulling ``E(x_hat)``
  toward a target latent (PhotoGuard's encoder attack; with a texture's latent as the
  target it is Mist's textural loss). ``steps`` forward and backward passes per image.
- :func:`photoguard`: the original encoder attack, toward the latent of a flat grey image.
- :func:`pgd_untargeted`: PGD away from the image's own latent (no target), with the
  decode disruption as its objective (not its ceiling: on clean images targeted
  :func:`pgd` with twice the steps disrupts more, docs/evaluation.md).
- :func:`uniform_noise`, :func:`sign_noise`: random perturbations at the same L-inf budget,
  the floor every method must clear.

Every function returns ``x_hat`` with ``||x_hat - x||_inf <= eta`` and values in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def pgd(
    x: Tensor,
    encode: Callable[[Tensor], Tensor],
    z_target: Tensor,
    eta: float = 8 / 255,
    steps: int = 100,
    step_size: float = 1 / 255,
) -> Tensor:
    """``argmin_{||delta||_inf <= eta} ||E(clamp(x + delta)) - z_target||^2`` by sign steps.

    Args:
        x: ``Bx3xHxW`` images in ``[0, 1]``.
        encode: the encoder ``E`` (differentiable).
        z_target: the latent to pull toward, broadcastable to ``E(x)``.
        eta: L-inf budget.
        steps: iterations (each one forward and one backward pass).
        step_size: the sign step.
    """
    delta = torch.zeros_like(x, requires_grad=True)
    with torch.enable_grad():
        for _ in range(steps):
            loss = (encode((x + delta).clamp(0, 1)) - z_target).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta.sub_(step_size * grad.sign()).clamp_(-eta, eta)
    return (x + delta.detach()).clamp(0, 1)


def photoguard(
    x: Tensor,
    encode: Callable[[Tensor], Tensor],
    eta: float = 8 / 255,
    steps: int = 100,
    step_size: float = 1 / 255,
) -> Tensor:
    """PhotoGuard's encoder attack: PGD toward the latent of a flat grey (0.5) image."""
    with torch.no_grad():
        z_grey = encode(torch.full_like(x[:1], 0.5))
    return pgd(x, encode, z_grey, eta, steps, step_size)


def pgd_untargeted(
    x: Tensor,
    encode: Callable[[Tensor], Tensor],
    eta: float = 8 / 255,
    steps: int = 50,
    step_size: float = 1 / 255,
    seed: int = 0,
) -> Tensor:
    """``argmax_{||delta||_inf <= eta} ||E(clamp(x + delta)) - E(x)||^2`` by sign steps,
    from a seeded uniform start in the ball (at ``delta = 0`` the gradient vanishes)."""
    with torch.no_grad():
        z = encode(x)
    g = torch.Generator().manual_seed(seed)
    start = (torch.rand(x.shape, generator=g, dtype=x.dtype) * 2 - 1) * eta
    delta = start.to(x.device).requires_grad_(True)
    with torch.enable_grad():
        for _ in range(steps):
            loss = (encode((x + delta).clamp(0, 1)) - z).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta.add_(step_size * grad.sign()).clamp_(-eta, eta)
    return (x + delta.detach()).clamp(0, 1)


def uniform_noise(x: Tensor, eta: float = 8 / 255, seed: int = 0) -> Tensor:
    """``clamp(x + U(-eta, eta))`` with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(x.shape, generator=g, dtype=x.dtype).to(x.device) * 2 - 1
    return (x + eta * noise).clamp(0, 1)


def sign_noise(x: Tensor, eta: float = 8 / 255, seed: int = 0) -> Tensor:
    """``clamp(x +- eta)``, each value's sign at random (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, x.shape, generator=g).to(x.device, x.dtype) * 2 - 1
    return (x + eta * signs).clamp(0, 1)
