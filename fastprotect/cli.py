"""The ``fastprotect`` command: LightningCLI subcommands plus a few of our own.

``fit``/``validate``/``test`` come from LightningCLI (omegaconf parser mode, so
``${...}`` interpolation works in configs). ``info MODEL`` summarises a model file;
``targets`` writes the target images as PNG; ``samples`` writes sample photos;
``protect`` protects image files; ``export`` writes the inference graph (:mod:`.export`);
``demo`` protects sample photos (or your images) and writes an HTML report (:mod:`.demo`).
Without ``--model`` every command uses the model shipped in the package (:mod:`.release`).
``predict`` protects images on many GPUs, a second LightningCLI (:mod:`fastprotect.predict`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .data.files import NoImagesError
from .modelfile import ModelFileError
from .weights import ChecksumError, WeightsNotFoundError

S_MIN_HELP = (
    "lowest strength of the adaptive map, where the perturbation would show most "
    "(default: the model's own, 0.5 for models that name none)"
)
OWN_COMMANDS = ("info", "targets", "samples", "protect", "export", "evaluate", "demo")
# Errors that are the user's to fix: one line, no traceback.
USER_ERRORS = (NoImagesError, ModelFileError, WeightsNotFoundError, ChecksumError)


def _own(argv: Sequence[str]) -> int:
    from .modelfile import summary
    from .targets import REPEATS, save_targets

    parser = argparse.ArgumentParser(prog="fastprotect")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="summarise a model file")
    p_info.add_argument("model", nargs="?", help="model file (default: the shipped model)")
    p_tg = sub.add_parser("targets", help="write the target images as PNG")
    p_tg.add_argument("--out", required=True, help="output folder")
    p_tg.add_argument("--size", type=int, default=512)
    p_tg.add_argument("specs", nargs="*", default=list(REPEATS), help="target specs")
    p_s = sub.add_parser("samples", help="write scikit-image's bundled sample photos to a folder")
    p_s.add_argument("--out", required=True, help="output folder")
    p_pr = sub.add_parser("protect", help="protect image files, folders (recursive) and globs")
    p_pr.add_argument("inputs", nargs="+", help="files, folders or glob patterns")
    p_pr.add_argument("--out", default="protected", help="output folder (default: ./protected)")
    p_pr.add_argument(
        "--model",
        help="model file (.safetensors) from `fastprotect fit` (default: the shipped one)",
    )
    p_pr.add_argument("--format", choices=["png", "jpeg"], default="png")
    p_pr.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p_pr.add_argument("--skip-existing", action="store_true", help="resume: keep existing outputs")
    p_pr.add_argument(
        "--strength",
        choices=["auto", "lpips", "jnd", "off"],
        default="auto",
        help="adaptive strength map (off: full strength everywhere)",
    )
    p_pr.add_argument("--s-min", type=float, help=S_MIN_HELP)
    p_pr.add_argument("--s-max", type=float, default=1.0)
    p_pr.add_argument("--debug", action="store_true", help="show tracebacks")
    p_ex = sub.add_parser("export", help="export a model as one inference graph (.pt/.ptl/.pt2)")
    p_ex.add_argument(
        "model", nargs="?", help="model file (.safetensors; default: the shipped model)"
    )
    p_ex.add_argument("--out", required=True, help="graph file: .pt, .ptl or .pt2")
    p_ex.add_argument("--format", choices=["torchscript", "lite", "pt2"], help="default: by suffix")
    p_ex.add_argument("--strength", choices=["auto", "lpips", "jnd", "off"], default="auto")
    p_ex.add_argument("--s-min", type=float, help=S_MIN_HELP)
    p_ex.add_argument("--s-max", type=float, default=1.0)
    p_ex.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p_ex.add_argument("--debug", action="store_true", help="show tracebacks")
    p_ev = sub.add_parser("evaluate", help="measure methods on the same images, target and budget")
    p_ev.add_argument("data", nargs="+", help="image folders (recursive) or files")
    p_ev.add_argument(
        "--method",
        action="append",
        required=True,
        help="mop[:PATH] (the shipped model without PATH; the first mop routes targets), "
        "pgd[:STEPS] (toward the target), pgdu[:STEPS] (untargeted), photoguard[:STEPS], "
        "uniform, sign; NAME=SPEC to name one; repeat it",
    )
    p_ev.add_argument("--out", required=True, help="folder for results.json and results.csv")
    p_ev.add_argument(
        "--size", type=int, default=256, help="crop mode: evaluation images are SIZE^2"
    )
    p_ev.add_argument(
        "--view",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="view mode: protect each image at its own resolution (PGD at the view), score "
        "it after the attacker's resize of the shorter side to N (antialiased bilinear); "
        "repeat for several views",
    )
    p_ev.add_argument(
        "--max-side", type=int, help="view mode: shrink images whose shorter side is larger"
    )
    p_ev.add_argument("--split", choices=["val", "train", "all"], default="val")
    p_ev.add_argument("--val-fraction", type=float, default=0.2)
    p_ev.add_argument("--limit", type=int, help="first N images of the split")
    p_ev.add_argument("--per-domain", type=int, metavar="N", help="first N images of each domain")
    p_ev.add_argument("--eval-encoder", default="taef2", help="autoencoder the metrics use")
    p_ev.add_argument("--transforms", nargs="+", help="default: all robustness transforms")
    p_ev.add_argument("--strength", choices=["auto", "lpips", "jnd", "off"], default="auto")
    p_ev.add_argument("--s-min", type=float, help=S_MIN_HELP)
    p_ev.add_argument("--s-max", type=float, default=1.0)
    p_ev.add_argument("--eta", type=float, help="baselines' budget (default: the model's eta)")
    p_ev.add_argument("--pgd-step-size", type=float, default=1 / 255)
    p_ev.add_argument(
        "--examples", type=int, default=0, help="save the first N images of each domain as PNG"
    )
    p_d = sub.add_parser(
        "demo",
        help="protect sample photos (or your images) with the shipped model; write an HTML report",
    )
    p_d.add_argument(
        "inputs", nargs="*", help="files, folders or globs (default: scikit-image's sample photos)"
    )
    p_d.add_argument("--out", help="demo folder (default: outputs/demo, or the next free -N)")
    p_d.add_argument("--model", help="model file (default: the shipped model)")
    p_d.add_argument("--strength", choices=["auto", "lpips", "jnd", "off"], default="auto")
    p_d.add_argument("--s-min", type=float, help=S_MIN_HELP)
    p_d.add_argument("--s-max", type=float, default=1.0)
    p_d.add_argument(
        "--analysis-side", type=int, default=512, help="longer side of the attacker's view"
    )
    p_d.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "evaluate":
        return _evaluate(args, argv)
    if args.command == "protect":
        return _protect(args)
    if args.command == "export":
        return _export(args)
    if args.command == "info":
        try:
            from .release import resolve_model

            print(summary(resolve_model(args.model)))
        except (ModelFileError, ChecksumError) as e:
            print(f"fastprotect: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "samples":
        from .samples import write_samples

        paths = write_samples(args.out)
        print(f"{len(paths)} sample photos in {args.out}")
        return 0
    try:
        paths = save_targets(args.specs, args.size, args.out)
    except (FileExistsError, ValueError) as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def make_cli(args: Sequence[str] | None = None, run: bool = True, **kwargs):
    """The project's LightningCLI (``run=False`` parses a config into model, data, trainer)."""
    # Imported here: protecting images should not pay for Lightning.
    from lightning.pytorch.cli import LightningCLI

    from .data import MoPDataModule
    from .module import MoPModule

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


def _load_protector(args: argparse.Namespace):
    """The protector for ``protect``/``export``/``demo`` and its strength map's name, printing
    the JND fallback note; ``(None, "")`` and a one-line error when the model cannot be
    loaded."""
    from .protect import fallback_notes, load_protector

    try:
        with fallback_notes() as notes:
            protector, strength = load_protector(args.model, args.strength, args.s_min, args.s_max)
        for note in notes:
            print(f"fastprotect: note: {note}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - one line for the user, traceback with --debug
        if args.debug:
            raise
        name = args.model or "default model"
        print(
            f"fastprotect: error: {e}" if name in str(e) else f"fastprotect: error: {name}: {e}",
            file=sys.stderr,
        )
        return None, ""
    print(f"fastprotect: strength map: {strength}", file=sys.stderr)
    return protector, strength


def _export(args: argparse.Namespace) -> int:
    from .export import ExportError, export_protector, format_for

    try:
        fmt = format_for(args.out, args.format)
    except ExportError as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    protector, strength = _load_protector(args)
    if protector is None:
        return 2
    try:
        report = export_protector(protector, args.out, fmt, overwrite=args.overwrite)
    except ExportError as e:
        if args.debug:
            raise
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 1
    print(f"fastprotect: {report.line()}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import shlex
    from pathlib import Path

    from .eval.run import (
        ROBUSTNESS,
        EvaluationError,
        evaluate,
        parse_methods,
        summarise,
        table,
        write_results,
    )
    from .protect import fallback_notes

    out = Path(args.out)
    try:
        if (out / "results.json").exists():
            raise EvaluationError(f"{out / 'results.json'} exists; choose another --out")
        with fallback_notes() as notes:
            methods, reference = parse_methods(
                args.method, args.strength, args.eta, args.pgd_step_size, args.s_min, args.s_max
            )
        for note in notes:
            print(f"fastprotect: note: {note}", file=sys.stderr)
        rows, settings = evaluate(
            args.data,
            methods,
            reference,
            args.eval_encoder,
            args.size,
            args.split,
            args.val_fraction,
            args.limit,
            args.transforms or tuple(ROBUSTNESS),
            examples=args.examples,
            examples_dir=out / "examples",
            views=args.view,
            max_side=args.max_side,
            per_domain=args.per_domain,
        )
        settings["command"] = "fastprotect " + shlex.join(argv)
        written = write_results(out, rows, settings)
    except (EvaluationError, *USER_ERRORS) as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    domains = ["all", *sorted({e["domain"] for e in summary} - {"all"})] if args.view else ["all"]
    print(table(summary, domains=domains))
    print(
        f"fastprotect: {settings['images']} images; results in {written[0]} and {written[1]}",
        file=sys.stderr,
    )
    return 0


def _protect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .protect import plan, protect_files

    if args.format == "jpeg":
        from .protect import JPEG_WARNING

        print(f"fastprotect: warning: {JPEG_WARNING}", file=sys.stderr)
    protector, strength = _load_protector(args)
    if protector is None:
        return 2
    out = Path(args.out)
    jobs, problems = plan(args.inputs, out, args.format)
    summary = protect_files(protector, jobs, args.format, args.quality, args.skip_existing)
    summary.failed = problems + summary.failed
    for src, why in summary.failed:
        print(f"fastprotect: failed: {src}: {why}", file=sys.stderr)
    print(f"fastprotect: {summary.line()}; output in {out}", file=sys.stderr)
    return 1 if summary.failed else 0


def _predict(args: Sequence[str]) -> int:
    """``fastprotect predict``: protection as a Lightning predict job (``--trainer.devices=N``)."""
    from lightning.pytorch.cli import LightningCLI

    from .predict import (
        FAILED_KEY,
        ProtectDataModule,
        ProtectedImageWriter,
        ProtectModule,
        ProtectorLoadError,
    )

    # ``args`` is argv without "predict"; Lightning warns when it differs from sys.argv.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        cli = LightningCLI(
            ProtectModule,
            ProtectDataModule,
            args=list(args),
            run=False,
            seed_everything_default=False,
            save_config_callback=None,
            trainer_defaults={"logger": False},
            parser_kwargs={"parser_mode": "omegaconf"},
        )
    except (*USER_ERRORS, ProtectorLoadError) as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    if not any(isinstance(c, ProtectedImageWriter) for c in cli.trainer.callbacks):
        cli.trainer.callbacks.append(ProtectedImageWriter())
    cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)
    return 1 if int(cli.trainer.callback_metrics.get(FAILED_KEY, 0)) else 0


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import describe_model, run_demo
    from .fileutil import next_free
    from .modelfile import read_header
    from .release import resolve_model
    from .samples import write_samples

    out = Path(args.out) if args.out else next_free(Path("outputs") / "demo")
    protector, strength = _load_protector(args)
    if protector is None:
        return 2
    inputs = list(args.inputs)
    if not inputs:
        samples = write_samples(out / "samples")
        print(f"fastprotect: {len(samples)} sample photos in {out / 'samples'}", file=sys.stderr)
        inputs = [str(out / "samples")]
    path = resolve_model(args.model)
    about = describe_model(read_header(path), path, strength, protector.s_min, args.s_max)
    try:
        report, rows, failed = run_demo(inputs, out, protector, about, args.analysis_side)
    except FileExistsError as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    for src, why in failed:
        print(f"fastprotect: failed: {src}: {why}", file=sys.stderr)
    print(f"{len(rows)} images protected into {out / 'protected'}; report: {report}")
    if rows:
        mean = sum(r.metrics.get("disruption_db", 0.0) for r in rows) / len(rows)
        psnr = sum(r.metrics["psnr_db"] for r in rows) / len(rows)
        print(f"mean PSNR {psnr:.2f} dB, mean disruption {mean:.2f} dB (TAEF2 reconstruction)")
    return 1 if failed else 0


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastprotect`` console script (tests call it in-process)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in OWN_COMMANDS:
        return _own(argv)
    if argv and argv[0] == "predict":
        return _predict(argv[1:])
    try:
        make_cli(args)
    except USER_ERRORS as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
