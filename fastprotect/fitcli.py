"""The LightningCLI of ``fastprotect fit``/``validate``/``test`` (built by
:func:`fastprotect.cli.make_cli`).

A module of its own, so that protecting images does not import Lightning, and so that the
class can be pickled by name (a DDP run started by spawning sends the CLI's objects to each
process).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI


class ProjectCLI(LightningCLI):
    def _parse_ckpt_path(self) -> None:
        """LightningCLI parses a checkpoint's hyperparameters over the config, so a resume
        whose config changes one (a strength floor, the learning rate) would silently train
        with the checkpoint's value. Here the config wins (the mixture's shape must still
        match the checkpoint's, or loading it fails), and each hyperparameter it changes is
        named."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        model = self.config[sub].get("model")
        for key, old in sorted(ckpt.get("hyper_parameters", {}).items()):
            new = model.get(key) if not key.startswith("_") and key in model else old
            if isinstance(new, (bool, int, float, str, list, type(None))) and new != old:
                print(
                    f"fastprotect: note: model.{key} is {new!r} here, {old!r} in "
                    f"{ckpt_path}; training goes on with {new!r}",
                    file=sys.stderr,
                )
