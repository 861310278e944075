"""Evaluation: metrics of invisibility and protection, and the robustness transforms.

SPEC section 4 defines what is measured here; :mod:`.metrics` computes each number per
image, :mod:`.transforms` applies the degradations an attacker's pipeline may apply to a
protected image before fine-tuning on it.
"""

from .metrics import disruption, latent_pull, psnr, ssim
from .transforms import ROBUSTNESS, TRANSFORMS, blur, gaussian_noise, jpeg, resize_down_up

__all__ = [
    "ROBUSTNESS",
    "TRANSFORMS",
    "blur",
    "disruption",
    "gaussian_noise",
    "jpeg",
    "latent_pull",
    "psnr",
    "resize_down_up",
    "ssim",
]
