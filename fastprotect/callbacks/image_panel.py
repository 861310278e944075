"""Every N steps: a panel of targets, amplified perturbations and protected samples."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch import Tensor


def _grid(rows: list[list[Tensor]]) -> np.ndarray:
    """Rows of ``3xSxS`` tensors in [0, 1] -> one ``HxWx3`` uint8 array (ragged rows padded)."""
    size = rows[0][0].shape[-1]
    width = max(len(r) for r in rows)
    canvas = torch.ones(3, size * len(rows), size * width)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[:, i * size : (i + 1) * size, j * size : (j + 1) * size] = img
    return (canvas.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


class ImagePanel(L.Callback):
    """Logs an image panel to the logger (W&B ``log_image``) and as a PNG in the run folder.

    Row 1: the targets. Row 2..T+1: per target, the global and group perturbations amplified
    to the full range (``0.5 + delta / (2 * eta)``). Last row: training samples and their
    protected versions, side by side.

    Args:
        every_n_steps: how often (optimizer steps); 0 turns it off.
        max_samples: training samples shown.
        size: side of each tile in pixels.
    """

    def __init__(self, every_n_steps: int = 100, max_samples: int = 2, size: int = 128) -> None:
        self.every_n_steps = every_n_steps
        self.max_samples = max_samples
        self.size = size

    def _small(self, x: Tensor) -> Tensor:
        return torch.nn.functional.interpolate(
            x.detach().float().cpu()[None], size=(self.size, self.size), mode="area"
        )[0]

    @torch.no_grad()
    def panel(self, pl_module, batch: dict[str, Tensor]) -> np.ndarray:
        mop = pl_module.mop
        eta = mop.config.eta
        rows = [[self._small(y.float() / 255) for y in mop.targets]]
        for t in range(mop.num_targets):
            row = [self._small(0.5 + mop.global_delta[t] / (2 * eta))]
            row += [self._small(0.5 + d / (2 * eta)) for d in mop.group_delta[t]]
            rows.append(row)
        x, target, group = pl_module._expand(batch)
        x_hat = pl_module.protect_views(x, target, group)[0]
        row = []
        for i in range(min(self.max_samples, len(x))):
            row += [self._small(x[i]), self._small(x_hat[i])]
        rows.append(row)
        return _grid(rows)

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps:
            return
        image = self.panel(pl_module, batch)
        out = Path(trainer.default_root_dir) / "panels"
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out / f"step{step:06d}.png")
        for logger in trainer.loggers:  # W&B is often the second logger, after CSV
            if hasattr(logger, "log_image"):
                logger.log_image(key="train/panel", images=[image], step=step)
