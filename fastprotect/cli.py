"""The ``fastprotect`` command: LightningCLI subcommands plus a few of our own.

``fit``/``validate``/``test``/``predict`` come from LightningCLI (omegaconf parser mode, so
``${...}`` interpolation works in configs). ``info MODEL`` summarises a model file;
``targets`` writes the target images as PNG; ``samples`` writes sample photos.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

from .data import MoPDataModule, NoImagesError
from .modelfile import ModelFileError
from .module import MoPModule
from .weights import ChecksumError, WeightsNotFoundError

OWN_COMMANDS = ("info", "targets", "samples")
# Errors that are the user's to fix: one line, no traceback.
USER_ERRORS = (NoImagesError, ModelFileError, WeightsNotFoundError, ChecksumError)


def _own(argv: Sequence[str]) -> int:
    from .modelfile import summary
    from .targets import REPEATS, save_targets

    parser = argparse.ArgumentParser(prog="fastprotect")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="summarise a model file")
    p_info.add_argument("model")
    p_tg = sub.add_parser("targets", help="write the target images as PNG")
    p_tg.add_argument("--out", required=True, help="output folder")
    p_tg.add_argument("--size", type=int, default=512)
    p_tg.add_argument("specs", nargs="*", default=list(REPEATS), help="target specs")
    p_s = sub.add_parser("samples", help="write scikit-image's bundled sample photos to a folder")
    p_s.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    if args.command == "info":
        try:
            print(summary(args.model))
        except ModelFileError as e:
            print(f"fastprotect: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "samples":
        from .samples import write_samples

        paths = write_samples(args.out)
        print(f"{len(paths)} sample photos in {args.out}")
        return 0
    for p in save_targets(args.specs, args.size, args.out):
        print(p)
    return 0


def make_cli(args: Sequence[str] | None = None, run: bool = True, **kwargs) -> LightningCLI:
    """The project's LightningCLI (``run=False`` parses a config into model, data, trainer)."""
    # The frozen encoder stays in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    return LightningCLI(
        MoPModule,
        MoPDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        **kwargs,
    )


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastprotect`` console script (tests call it in-process)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in OWN_COMMANDS:
        return _own(argv)
    try:
        make_cli(args)
    except USER_ERRORS as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
