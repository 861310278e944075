"""The LightningCLI of ``fastprotect fit``/``validate`` (built by
:func:`fastprotect.cli.make_cli`).

A module of its own, so that protecting images does not import Lightning, and so that the
class can be pickled by name (a DDP run started by spawning sends the CLI's objects to each
process).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch
import yaml
from lightning.pytorch import Callback
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from .errors import ConfigError
from .fileutil import is_within, next_free

_PLAIN = (bool, int, float, str, list, tuple, type(None))
#: settings that a checkpoint's weights and buffers fix: the mixture's shape, its target
#: images and their entropies; a resumed run cannot change them
_STORED = ("targets", "groups", "resolution", "latent_grid", "view", "isoluminant")


def _note(message: str) -> None:
    print(f"fastprotect: note: {message}", file=sys.stderr)


def _init_args(item) -> object | None:
    """The ``init_args`` namespace of a logger or callback entry of the parsed config."""
    return getattr(item, "init_args", None) if not isinstance(item, (bool, str)) else None


class RunConfig(SaveConfigCallback):
    """Writes the parsed config into the run's folder when ``fit`` starts, never over an
    earlier run's: ``config-1.yaml`` and so on, as the model file takes
    ``model-1.safetensors``. ``validate`` writes none (it would replace the config of the
    training run whose folder it reads)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        if not self.already_saved and trainer.log_dir:
            self.config_filename = next_free(Path(trainer.log_dir) / "config.yaml").name
        super().setup(trainer, pl_module, stage)


def _plain(value):
    """Tuples as lists, so a value read back from a checkpoint compares equal."""
    return list(value) if isinstance(value, tuple) else value


class KeepOnInterrupt(Callback):
    """Ctrl-C during ``fit``: the perturbations trained so far are written as
    ``model-interrupted.safetensors``, and the checkpoint to resume from is named."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        if trainer.global_step and hasattr(pl_module, "_write_model"):
            pl_module._write_model(interrupted=True)
            _note(f"stopped at step {trainer.global_step}; the model so far is written above")
        keeper = trainer.checkpoint_callback
        ckpt = getattr(keeper, "last_model_path", "") or getattr(keeper, "best_model_path", "")
        if ckpt:
            _note(f"resume with the same command and --ckpt_path {ckpt}")
        elif keeper is not None:
            _note(f"no checkpoint was saved yet (in {keeper.dirpath}) to resume from")
        else:
            _note("this run keeps no checkpoints to resume from (no ModelCheckpoint in its config)")


class ProjectCLI(LightningCLI):
    def before_fit(self) -> None:
        self.trainer.callbacks.append(KeepOnInterrupt())

    def _parse_ckpt_path(self) -> None:
        """On ``fit``, the config's hyperparameters win over the checkpoint's.

        LightningCLI parses a checkpoint's hyperparameters over the config, so a resumed
        ``fit`` whose config changes one (a strength floor, the learning rate) would
        silently train with the checkpoint's value. Here the config wins (the mixture's
        shape must still match the checkpoint's, or loading it fails), and each
        hyperparameter that differs is named; those the checkpoint's weights and buffers fix
        (``_STORED``) are refused. ``validate`` keeps Lightning's behaviour: the model is
        rebuilt as the checkpoint says.
        """
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if ckpt_path and _lightning_resolves(ckpt_path):
            LightningCLI._parse_ckpt_path(self)  # "last", a URL, a sharded folder: Lightning's
            return
        if ckpt_path:
            ckpt = _read_checkpoint(ckpt_path)  # a wrong path fails here, in one line
        if sub != "fit":
            LightningCLI._parse_ckpt_path(self)
            return
        if not ckpt_path:
            return
        model = self.config[sub].get("model")
        for key, old in sorted(ckpt.get("hyper_parameters", {}).items()):
            if key.startswith("_"):
                continue
            if key not in model:
                _note(
                    f"{ckpt_path} has model.{key} = {old!r}, which this version does not "
                    "take; it is ignored"
                )
                continue
            new = model.get(key)
            if key == "targets":  # None is the module's default set
                new, old = new or ["low", "mid", "high"], old or ["low", "mid", "high"]
            if not isinstance(new, _PLAIN) or _plain(new) == _plain(old):
                continue
            if key in _STORED:
                raise ConfigError(
                    f"model.{key} is {new!r} here, {old!r} in {ckpt_path}: a resumed run keeps "
                    f"the checkpoint's mixture (its {', '.join(_STORED)} are stored in "
                    "it); start a new run to change it"
                )
            _note(f"model.{key} is {new!r} here, {old!r} in {ckpt_path}; training uses {new!r}")

    def before_instantiate_classes(self) -> None:
        """Where the run writes: logger and checkpoint folders follow the final
        ``trainer.default_root_dir``, and a new run does not start in an earlier run's
        checkpoint folder.

        A config's ``${trainer.default_root_dir}`` is resolved within that file, before the
        command line or a later config changes the root: the logs and checkpoints would
        stay in the old folder (and a new ``last.ckpt`` replace the old run's). Paths under
        a root that a config file named are moved under the final one.
        """
        sub = self.config.get("subcommand")
        if sub not in ("fit", "validate"):
            return
        cfg = self.config[sub]
        trainer = cfg.get("trainer")
        root = trainer.get("default_root_dir") if trainer is not None else None
        if not root:
            return
        root = Path(root)
        earlier = set()
        for file in cfg.get("config") or []:
            try:
                doc = yaml.safe_load(Path(str(file)).read_text())
            except (OSError, yaml.YAMLError):
                continue
            named = ((doc or {}).get("trainer") or {}).get("default_root_dir")
            if isinstance(named, str) and "${" not in named and Path(named) != root:
                earlier.add(Path(named))
        loggers = trainer.get("logger")
        entries = [
            (what, args, key)
            for what, items, key in (
                ("logger", loggers if isinstance(loggers, list) else [loggers], "save_dir"),
                ("checkpoint", trainer.get("callbacks") or [], "dirpath"),
            )
            for item in items
            if (args := _init_args(item)) is not None and args.get(key)
        ]
        for _what, args, key in entries:
            path = Path(str(args.get(key)))
            if is_within(path, root):  # already where the run writes (a root inside another)
                continue
            # the deepest root that holds it: the one its config's interpolation named
            holders = [o for o in earlier if is_within(path, o)]
            if holders:
                old = max(holders, key=lambda o: len(o.resolve().parts))
                args[key] = str(root / path.resolve().relative_to(old.resolve()))
        if sub == "fit" and not cfg.get("ckpt_path"):
            for what, args, key in entries:
                folder = Path(str(args.get(key)))
                if what == "checkpoint" and any(folder.glob("*.ckpt")):
                    raise ConfigError(
                        f"{folder} holds an earlier run's checkpoints: resume it with "
                        f"--ckpt_path {folder / 'last.ckpt'}, or start this run in another "
                        "folder (--trainer.default_root_dir)"
                    )

    def instantiate_classes(self) -> None:
        """A setting the model or data refuse (a target name, a fraction out of range) is
        the user's to fix: one line, no traceback."""
        try:
            super().instantiate_classes()
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"cannot build the run from its config: {e}") from e


def _lightning_resolves(ckpt_path: str) -> bool:
    """A ``--ckpt_path`` that names no local file but that Lightning resolves itself."""
    value = str(ckpt_path)
    return (
        value in ("last", "best", "hpc", "registry")
        or value.startswith("registry:")
        or "://" in value
        or Path(value).is_dir()
    )


def _read_checkpoint(path: str) -> dict:
    """A Lightning checkpoint, or a one-line error naming what ``path`` is instead."""
    if not Path(path).is_file():
        raise ConfigError(f"--ckpt_path {path}: no such file")
    what = f"--ckpt_path {path}: not a Lightning checkpoint"
    if str(path).endswith(".safetensors"):
        raise ConfigError(f"{what} (a model file? resume from a .ckpt in the run's checkpoints)")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise ConfigError(f"{what} ({str(e).splitlines()[0]})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{what} (no state_dict)")
    return ckpt
