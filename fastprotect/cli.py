"""The ``fastprotect`` command: LightningCLI subcommands plus a few of our own.

``fit``/``validate`` come from LightningCLI (omegaconf parser mode, so
``${...}`` interpolation works in configs). ``info MODEL`` summarises a model file;
``targets`` writes the target images as PNG; ``samples`` writes sample photos;
``protect`` protects image files; ``export`` writes the inference graph (:mod:`.export`);
``demo`` protects sample photos (or your images) and writes an HTML report (:mod:`.demo`).
Without ``--model`` every command uses the model shipped in the package (:mod:`.release`).
``predict`` protects images on many GPUs, a second LightningCLI (:mod:`fastprotect.predict`).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import warnings
from collections.abc import Sequence

from . import __version__
from .errors import USER_ERRORS, ChecksumError, ModelFileError

# One line per command, in the order ``fastprotect --help`` lists them. Nothing heavy is
# imported before a command runs, so that ``--help`` answers at once.
COMMANDS = {
    "protect": "protect image files, folders (recursive) and globs",
    "demo": "protect sample photos (or your images) and write an HTML report",
    "serve": "a local web page to protect images in the browser, and an HTTP API",
    "info": "summarise a model file",
    "export": "write a model as one inference graph (.pt, .ptl or .pt2)",
    "evaluate": "measure protection methods on the same images, target and budget",
    "targets": "write the target textures as PNG",
    "samples": "write scikit-image's bundled sample photos to a folder",
    "fit": "train a model (Lightning; e.g. --config configs/taef2.yaml)",
    "validate": "validate a model on the validation split (Lightning)",
    "predict": "protect images as a Lightning predict job, on one or many GPUs",
}
LIGHTNING_COMMANDS = ("fit", "validate")
OWN_COMMANDS = ("info", "targets", "samples", "protect", "export", "evaluate", "demo", "serve")
STRENGTHS = ["auto", "lpips", "jnd", "off"]
STRENGTH_HELP = (
    "adaptive strength map: auto (LPIPS when its weights are on this machine, else JND), "
    "lpips, jnd, or off (full strength everywhere) (default: %(default)s)"
)
S_MIN_HELP = (
    "lowest strength of the adaptive map, 0 to --s-max, used where the perturbation would "
    "show most (default: the model's own, 0.5 for models that name none)"
)
S_MAX_HELP = (
    "highest strength, above 0 and at most 1: the perturbation never exceeds s_max times "
    "the model's budget eta (default: %(default)s)"
)


#: the --model help of every command that takes a model
MODEL_HELP = (
    "model file (.safetensors) from `fastprotect fit`, or a packaged release by name "
    "(fastprotect-taef2-v1); default: the shipped one (`fastprotect info` names it)"
)


def usage() -> str:
    """The top-level help: every command with one line."""
    width = max(map(len, [*COMMANDS, "-h, --help"]))
    lines = [
        f"fastprotect {__version__}: protect images against mimicry by personalised "
        "diffusion models",
        "",
        "usage: fastprotect COMMAND [options]   (fastprotect COMMAND --help for its options)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':<{width}}  show this message",
        f"  {'--version':<{width}}  print the version",
        "",
        "Start with: fastprotect demo   or   fastprotect protect my_drawings/ --out protected/",
    ]
    return "\n".join(lines)


def strength_range_error(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--s-min``/``--s-max``, or ``None``."""
    if not 0 < args.s_max <= 1:
        return f"--s-max must be above 0 and at most 1, got {args.s_max}"
    if args.s_min is not None and not 0 <= args.s_min <= args.s_max:
        return f"--s-min must be between 0 and --s-max ({args.s_max}), got {args.s_min}"
    return None


def _quality(text: str) -> int:
    try:
        q = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"JPEG quality must be a whole number, got {text!r}"
        ) from None
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"JPEG quality must be 1 to 100, got {q}")
    return q


def at_least(low: int):
    """An argparse type: a whole number of at least ``low``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {n}")
        return n

    return parse


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shard is I/N with whole numbers, such as 2/4, got {text!r}"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"shard {text}: N must be at least 1")
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"shard {text}: I must be 1 to N")
    return i, n


def _strength_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strength", choices=STRENGTHS, default="auto", help=STRENGTH_HELP)
    p.add_argument("--s-min", type=float, help=S_MIN_HELP)
    p.add_argument("--s-max", type=float, default=1.0, help=S_MAX_HELP)


def _own(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="fastprotect")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help=COMMANDS["info"], description=COMMANDS["info"])
    p_info.add_argument("model", nargs="?", help=MODEL_HELP)
    p_info.add_argument(
        "--model",
        dest="model_option",
        metavar="MODEL",
        help="the same, as the other commands take it",
    )
    p_tg = sub.add_parser("targets", help=COMMANDS["targets"], description=COMMANDS["targets"])
    p_tg.add_argument("--out", required=True, help="output folder")
    p_tg.add_argument(
        "--size", type=at_least(16), default=512, help="side in pixels (default: %(default)s)"
    )
    p_tg.add_argument(
        "specs", nargs="*", help="low, mid, high, repeat:N or noise[:SEED] (default: low mid high)"
    )
    p_s = sub.add_parser("samples", help=COMMANDS["samples"], description=COMMANDS["samples"])
    p_s.add_argument("--out", required=True, help="output folder")
    p_pr = sub.add_parser("protect", help=COMMANDS["protect"], description=COMMANDS["protect"])
    p_pr.add_argument("inputs", nargs="+", help="files, folders or glob patterns")
    p_pr.add_argument("--out", default="protected", help="output folder (default: ./protected)")
    p_pr.add_argument(
        "--model",
        help=MODEL_HELP,
    )
    p_pr.add_argument(
        "--format",
        choices=["png", "jpeg", "keep"],
        default="png",
        help="png (lossless, keeps the protection whole), jpeg (at --quality, without chroma "
        "subsampling; below quality 95 it may weaken the protection), or keep: each input's "
        "own format, lossless where that "
        "format allows, JPEG inputs as JPEG at --quality, GIF inputs as PNG "
        "(default: %(default)s)",
    )
    p_pr.add_argument(
        "--keep-format",
        dest="format",
        action="store_const",
        const="keep",
        help="the same as --format keep",
    )
    p_pr.add_argument(
        "--quality", type=_quality, default=95, help="JPEG quality, 1-100 (default: %(default)s)"
    )
    existing = p_pr.add_mutually_exclusive_group()
    existing.add_argument(
        "--skip-existing", action="store_true", help="keep outputs that exist (resume a batch)"
    )
    existing.add_argument(
        "--overwrite", action="store_true", help="replace outputs that exist (new settings)"
    )
    _strength_args(p_pr)
    p_pr.add_argument(
        "--verdict",
        action="store_true",
        help="judge each image where the attacker looks: its latent shift at a 512-px view "
        "against random noise of the same budget (three more encoder passes per image)",
    )
    p_pr.add_argument("--debug", action="store_true", help="show tracebacks")
    p_ex = sub.add_parser("export", help=COMMANDS["export"], description=COMMANDS["export"])
    p_ex.add_argument("model", nargs="?", help=MODEL_HELP)
    p_ex.add_argument(
        "--model",
        dest="model_option",
        metavar="MODEL",
        help="the same, as the other commands take it",
    )
    p_ex.add_argument("--out", required=True, help="graph file: .pt, .ptl or .pt2")
    p_ex.add_argument(
        "--format",
        choices=["torchscript", "lite", "pt2"],
        help="graph format (default: by the suffix of --out)",
    )
    _strength_args(p_ex)
    p_ex.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p_ex.add_argument("--debug", action="store_true", help="show tracebacks")
    p_ev = sub.add_parser("evaluate", help=COMMANDS["evaluate"], description=COMMANDS["evaluate"])
    p_ev.add_argument("data", nargs="+", help="image folders (recursive) or files")
    p_ev.add_argument(
        "--method",
        action="append",
        required=True,
        help="mop[:PATH] (the shipped model without PATH; the first mop routes targets), "
        "pgd[:STEPS] (toward the target), pgdu[:STEPS] (untargeted), photoguard[:STEPS], "
        "uniform, sign, resized (view mode: the unprotected image published at the view, "
        "the reference of PGD's rows, which is published there); NAME=SPEC to name one; "
        "repeat it",
    )
    p_ev.add_argument("--out", required=True, help="folder for results.json and results.csv")
    p_ev.add_argument(
        "--size",
        type=at_least(16),
        default=256,
        help="crop mode: evaluation images are SIZE^2 (at least 16)",
    )
    p_ev.add_argument(
        "--view",
        type=at_least(16),
        action="append",
        default=[],
        metavar="N",
        help="view mode: protect each image at its own resolution (PGD at the view), score "
        "it after the attacker's resize of the shorter side to N (antialiased bilinear; at "
        "least 16); repeat for several views",
    )
    p_ev.add_argument(
        "--max-side",
        type=at_least(16),
        help="view mode: shrink images whose shorter side is larger",
    )
    p_ev.add_argument("--split", choices=["val", "train", "all"], default="val")
    p_ev.add_argument("--val-fraction", type=float, default=0.2)
    p_ev.add_argument("--limit", type=at_least(1), help="first N images of the split")
    p_ev.add_argument(
        "--per-domain", type=at_least(1), metavar="N", help="first N images of each domain"
    )
    p_ev.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="every N-th of the images selected, from the I-th on (1 to N): N shards split a "
        "long run into parts that each sample every domain of at least N images; "
        "tools/merge_results.py joins their results",
    )
    p_ev.add_argument("--eval-encoder", default="taef2", help="autoencoder the metrics use")
    p_ev.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N: where the autoencoders, the models and per-image PGD run "
        "(default: %(default)s)",
    )
    p_ev.add_argument(
        "--transforms",
        nargs="+",
        help="what the attacker does to the published image before encoding it: clean, "
        "jpeg75, jpeg90, resize0.5, blur1, noise0.05 (the default set), jpeg95_444, and the "
        "purifications gnoise0.05, gnoise0.1, gnoise0.05_up4, gnoise0.1_up4, jpeg50, "
        "crop_resize, adversecleaner, social, impress ('purification': all of them); "
        "docs/evaluation.md gives each one's parameters",
    )
    _strength_args(p_ev)
    p_ev.add_argument("--eta", type=float, help="baselines' budget (default: the model's eta)")
    p_ev.add_argument("--pgd-step-size", type=float, default=1 / 255)
    p_ev.add_argument(
        "--examples", type=int, default=0, help="save the first N images of each domain as PNG"
    )
    p_ev.add_argument(
        "--attack-cache",
        metavar="DIR",
        help="keep the per-image attacks' results (pgd, pgdu, photoguard) in DIR and reuse "
        "them: a later run attacking the same image at the same view, budget and steps "
        "skips the attack, with rows equal to the last digit (about 4 MB per image and view)",
    )
    p_ev.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: each image's rows are kept in OUT/partial.jsonl as "
        "it finishes; rerun the same command with --resume to measure only the rest",
    )
    p_d = sub.add_parser("demo", help=COMMANDS["demo"], description=COMMANDS["demo"])
    p_d.add_argument(
        "inputs", nargs="*", help="files, folders or globs (default: scikit-image's sample photos)"
    )
    p_d.add_argument("--out", help="demo folder (default: outputs/demo, or the next free -N)")
    p_d.add_argument("--model", help=MODEL_HELP)
    _strength_args(p_d)
    p_d.add_argument(
        "--analysis-side",
        type=at_least(16),
        default=512,
        help="longer side of the attacker's view (at least 16)",
    )
    p_d.add_argument("--debug", action="store_true", help="show tracebacks")
    p_sv = sub.add_parser(
        "serve",
        help=COMMANDS["serve"],
        description=COMMANDS["serve"] + ". Uploads and results stay in memory, never on disk.",
    )
    p_sv.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; the default is reachable from this computer only, and "
        "anything else is reachable by others (no log-in) (default: %(default)s)",
    )
    p_sv.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p_sv.add_argument("--model", help=MODEL_HELP)
    p_sv.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="refuse larger images, before decoding them (default: %(default)s, 4096x4096)",
    )
    p_sv.add_argument(
        "--max-upload-mb",
        type=float,
        default=64,
        help="refuse larger uploads; a zip counts as one (default: %(default)s)",
    )
    p_sv.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if getattr(args, "model_option", None):  # export and info take the model either way
        if args.model and args.model != args.model_option:
            parser.error(f"two models named: {args.model} and --model {args.model_option}")
        args.model = args.model_option
    if args.command == "serve":
        return _serve(args)
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
            from .modelfile import summary
            from .release import resolve_model

            print(summary(resolve_model(args.model)))
        except (ModelFileError, ChecksumError, KeyError) as e:  # KeyError: a field missing
            print(f"fastprotect: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "samples":
        from .samples import write_samples

        try:
            paths = write_samples(args.out)
        except OSError as e:  # --out is a file, or cannot be written
            print(f"fastprotect: error: {args.out}: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"{len(paths)} sample photos in {args.out}")
        return 0
    from .targets import REPEATS, save_targets

    try:
        paths = save_targets(args.specs or list(REPEATS), args.size, args.out)
    except (OSError, ValueError) as e:  # also a target file Pillow cannot read
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def quiet_lightning() -> None:
    """Keep training output to what matters: no advertising tips, no deprecation notices
    from Lightning's internals (nothing a user can act on), and W&B's offline banner only
    when ``WANDB_SILENT`` asks for it (``WANDB_SILENT=false``)."""
    import logging
    import os

    class NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.getMessage()).startswith("\U0001f4a1 Tip:")

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(NoTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"The anonymous setting has no effect")
    os.environ.setdefault("WANDB_SILENT", "true")


def make_cli(args: Sequence[str] | None = None, run: bool = True, **kwargs):
    """The project's LightningCLI (``run=False`` parses a config into model, data, trainer)."""
    # Imported here: protecting images should not pay for Lightning.
    from .data import MoPDataModule
    from .fitcli import ProjectCLI, RunConfig
    from .module import MoPModule

    # The frozen encoder stays in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    quiet_lightning()
    return ProjectCLI(
        MoPModule,
        MoPDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        parser_kwargs={"parser_mode": "omegaconf"},
        **{"save_config_callback": RunConfig, **kwargs},
    )


def _load_protector(args: argparse.Namespace):
    """The protector for ``protect``/``export``/``demo`` and its strength map's name, printing
    the JND fallback note; ``(None, "")`` and a one-line error when the model cannot be
    loaded."""
    from .protect import fallback_notes, load_protector

    problem = strength_range_error(args)
    if problem:
        print(f"fastprotect: error: {problem}", file=sys.stderr)
        return None, ""
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

    from .eval.journal import JournalError
    from .eval.run import (
        ROBUSTNESS,
        EvaluationError,
        check_device,
        evaluate,
        parse_methods,
        summarise,
        table,
        write_results,
    )
    from .protect import fallback_notes

    out = Path(args.out)
    problem = strength_range_error(args)
    if problem:
        print(f"fastprotect: error: {problem}", file=sys.stderr)
        return 2
    try:
        for name in ("results.json", "results.csv"):  # both are written at the end
            if (out / name).exists():
                raise EvaluationError(f"{out / name} exists; choose another --out")
        check_device(args.device)  # before any model is loaded
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
            views=list(dict.fromkeys(args.view)),  # a view named twice is measured once
            max_side=args.max_side,
            per_domain=args.per_domain,
            shard=args.shard,
            device=args.device,
            journal=out / "partial.jsonl",
            resume=args.resume,
            out=out,
            cache=args.attack_cache,
            # what decides the rows beyond evaluate's own settings and models
            journal_key={
                "method_specs": args.method,
                "eta": args.eta,
                "pgd_step_size": args.pgd_step_size,
            },
        )
        settings["command"] = "fastprotect " + shlex.join(argv)
        written = write_results(out, rows, settings)
        (out / "partial.jsonl").unlink(missing_ok=True)  # its rows are in results.json now
    except (EvaluationError, JournalError, *USER_ERRORS) as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    domains = ["all", *sorted({e["domain"] for e in summary} - {"all"})] if args.view else ["all"]
    print(table(summary, transforms=settings["transforms"], domains=domains))  # all asked for
    noun = "image" if settings["images"] == 1 else "images"
    print(
        f"fastprotect: {settings['images']} {noun}; results in {written[0]} and {written[1]}",
        file=sys.stderr,
    )
    return 0


def _protect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .protect import jpeg_warning, plan, protect_files

    protector, strength = _load_protector(args)
    if protector is None:
        return 2
    out = Path(args.out)
    inside_out: list[Path] = []
    jobs, problems = plan(args.inputs, out, args.format, inside_out)
    if inside_out:
        shown = ", ".join(str(p) for p in inside_out[:3])
        more = f" and {len(inside_out) - 3} more" if len(inside_out) > 3 else ""
        print(
            f"fastprotect: note: {len(inside_out)} input(s) inside the output folder {out} "
            f"were not taken ({shown}{more}): an output folder is never read as input; "
            "name another --out to protect them",
            file=sys.stderr,
        )
        if not jobs and not problems:
            return 1
    if any(job.fmt == "jpeg" for job in jobs) and (warning := jpeg_warning(args.quality)):
        print(f"fastprotect: warning: {warning}", file=sys.stderr)
    summary = protect_files(
        protector,
        jobs,
        quality=args.quality,
        skip_existing=args.skip_existing,
        overwrite=args.overwrite,
        verdict=args.verdict,
    )
    summary.failed = problems + summary.failed
    for src, why in summary.failed:
        print(f"fastprotect: failed: {src}: {why}", file=sys.stderr)
    for src, notes in summary.notes.items():
        for note in notes:
            print(f"fastprotect: {src}: note: {note}", file=sys.stderr)
    for src, v in summary.verdicts.items():
        if args.verdict or v.warnings:
            print(f"fastprotect: {src}: {v.line()}", file=sys.stderr)
    print(f"fastprotect: {summary.line()}; output in {out}", file=sys.stderr)
    if args.verdict and summary.verdicts:
        print(
            f"fastprotect: {_verdict_counts([v.label for v in summary.verdicts.values()])}",
            file=sys.stderr,
        )
    return 1 if summary.failed else 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from .serve import serve
    except ModuleNotFoundError as e:
        print(
            f"fastprotect: error: 'serve' needs FastAPI and uvicorn ({e}): "
            "bash tools/setup.sh protect, or pip install fastprotect",
            file=sys.stderr,
        )
        return 2
    from PIL import Image

    bomb = Image.MAX_IMAGE_PIXELS  # Pillow refuses larger images as possible bombs first
    if not 1 <= args.max_pixels <= bomb:
        print(f"fastprotect: error: --max-pixels must be 1 to {bomb:,}", file=sys.stderr)
        return 2
    if not args.max_upload_mb > 0:
        print("fastprotect: error: --max-upload-mb must be above 0", file=sys.stderr)
        return 2
    try:
        return serve(args.host, args.port, args.model, args.max_pixels, args.max_upload_mb)
    except Exception as e:  # noqa: BLE001 - one line for the user, traceback with --debug
        if args.debug:
            raise
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2


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

    quiet_lightning()
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
    if out.exists() and not out.is_dir():
        print(f"fastprotect: error: --out {out} is a file; name a folder", file=sys.stderr)
        return 2
    if not inputs:
        samples = write_samples(out / "samples")
        print(f"fastprotect: {len(samples)} sample photos in {out / 'samples'}", file=sys.stderr)
        inputs = [str(out / "samples")]
    path = resolve_model(args.model)
    about = describe_model(read_header(path), path, strength, protector.s_min, args.s_max)
    try:
        report, rows, failed = run_demo(inputs, out, protector, about, args.analysis_side)
    except (FileExistsError, *USER_ERRORS) as e:
        if args.debug:
            raise
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    for src, why in failed:
        print(f"fastprotect: failed: {src}: {why}", file=sys.stderr)
    noun = "image" if len(rows) == 1 else "images"
    print(f"{len(rows)} {noun} protected into {out / 'protected'}; report: {report}")
    if rows:
        import math

        def mean(key: str) -> float:
            vals = [r.metrics[key] for r in rows if math.isfinite(r.metrics.get(key, math.nan))]
            return sum(vals) / len(vals) if vals else math.nan

        print(
            f"mean PSNR {mean('psnr_db'):.2f} dB, mean disruption {mean('disruption_db'):.2f} dB "
            "(TAEF2 reconstruction)"
        )
        print(_verdict_counts([r.metrics.get("verdict") for r in rows]))
        for r in rows:
            for w in r.metrics.get("warnings", []):
                print(f"fastprotect: warning: {r.name}: {w}", file=sys.stderr)
    return 1 if failed else 0


def _verdict_counts(labels: list[str | None]) -> str:
    counts = {k: labels.count(k) for k in ("strong", "moderate", "weak") if labels.count(k)}
    return (
        "verdicts: "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
        + (
            " (latent shift at the attacker's view against random noise of the same budget; "
            "docs/evaluation.md)"
        )
    )


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastprotect`` console script (tests call it in-process)."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    command = argv[0]
    if command in ("-h", "--help", "help"):
        print(usage())
        return 0
    if command in ("-V", "--version", "version"):
        print(f"fastprotect {__version__}")
        return 0
    if command in OWN_COMMANDS:
        return _own(argv)
    if command in ("predict", *LIGHTNING_COMMANDS):
        try:
            import lightning  # noqa: F401
        except ModuleNotFoundError as e:
            print(
                f"fastprotect: error: '{command}' needs the training install ({e}): "
                "bash tools/setup.sh (the .venv it makes has everything), or "
                "pip install 'fastprotect[train]'",
                file=sys.stderr,
            )
            return 2
    if command == "predict":
        return _predict(argv[1:])
    if command not in LIGHTNING_COMMANDS:
        option = command.startswith("-")
        known = ["--help", "--version"] if option else list(COMMANDS)
        near = difflib.get_close_matches(command, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        what = "option" if option else "command"
        print(
            f"fastprotect: error: unknown {what} '{command}'{hint}\n"
            f"commands: {', '.join(COMMANDS)} (fastprotect --help says what each does)",
            file=sys.stderr,
        )
        return 2
    try:
        make_cli(args)  # None: LightningCLI reads sys.argv itself (no warning)
    except USER_ERRORS as e:
        print(f"fastprotect: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
