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

_PLAIN = (bool, int, float, str, list, tuple, type(None))


def _plain(value):
    """Tuples as lists, so a value read back from a checkpoint compares equal."""
    return list(value) if isinstance(value, tuple) else value


class ProjectCLI(LightningCLI):
    def _parse_ckpt_path(self) -> None:
        """On ``fit``, the config's hyperparameters win over the checkpoint's.

        LightningCLI parses a checkpoint's hyperparameters over the config, so a resumed
        ``fit`` whose config changes one (a strength floor, the learning rate) would
        silently train with the checkpoint's value. Here the config wins (the mixture's
        shape must still match the checkpoint's, or loading it fails), and each
        hyperparameter that differs is named. ``validate`` and ``test`` keep Lightning's
        behaviour: the model is rebuilt as the checkpoint says.
        """
        sub = self.config.get("subcommand")
        if sub != "fit":
            super()._parse_ckpt_path()
            return
        ckpt_path = self.config[sub].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        model = self.config[sub].get("model")
        for key, old in sorted(ckpt.get("hyper_parameters", {}).items()):
            if key.startswith("_"):
                continue
            if key not in model:
                print(
                    f"fastprotect: note: {ckpt_path} has model.{key} = {old!r}, which this "
                    "version does not take; it is ignored",
                    file=sys.stderr,
                )
                continue
            new = model.get(key)
            if isinstance(new, _PLAIN) and _plain(new) != _plain(old):
                print(
                    f"fastprotect: note: model.{key} is {new!r} here, {old!r} in "
                    f"{ckpt_path}; training goes on with {new!r}",
                    file=sys.stderr,
                )
