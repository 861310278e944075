"""Protecting image files: the ``fastprotect protect`` command and its Python API."""

from __future__ import annotations

import glob
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .data.files import IMAGE_EXTENSIONS, is_hidden
from .encoders import encoder_from_identity
from .fileutil import drop_empty_leftover
from .imageio import FORMATS, ImageReadError, keep_format, load_image, save_image
from .modelfile import DEFAULT_S_MIN, load_model
from .protector import Protector
from .release import resolve_model
from .strength import StrengthMapFallback, build_strength_map
from .verdict import Verdict, checks, judge

#: what a folder scan takes as an image (GIF too: a still GIF is protected, an animated one
#: is refused with a clear message)
PROTECT_EXTENSIONS = (*IMAGE_EXTENSIONS, ".gif")

#: the JPEG quality from which writing JPEG measured no loss of protection (written without
#: chroma subsampling; docs/evaluation.md, "JPEG as protect writes it")
JPEG_SAFE_QUALITY = 95


def jpeg_warning(quality: int) -> str | None:
    """What to say when protected images are written as JPEG at ``quality``: nothing from
    :data:`JPEG_SAFE_QUALITY` up, a warning below."""
    if quality >= JPEG_SAFE_QUALITY:
        return None
    return (
        f"JPEG at quality {quality} may weaken the protection (at {JPEG_SAFE_QUALITY} and "
        f"above, written without chroma subsampling, it measured no loss); prefer PNG or "
        f"--quality {JPEG_SAFE_QUALITY}"
    )


@contextmanager
def fallback_notes() -> Iterator[list[str]]:
    """Collect the strength map's fallback warnings as distinct messages (filled on exit),
    for the commands to print as one ``note`` each; other warnings in the block are
    recorded and dropped, as before."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield notes
    for w in caught:
        if issubclass(w.category, StrengthMapFallback) and str(w.message) not in notes:
            notes.append(str(w.message))


def load_protector(
    model: str | Path | None = None,
    strength: str = "auto",
    s_min: float | None = None,
    s_max: float = 1.0,
) -> tuple[Protector, str]:
    """Build the inference module from a model file.

    Args:
        model: a ``.safetensors`` model file; ``None``: the shipped default model.
        strength: ``auto`` (LPIPS if its weights are local, else JND), ``lpips``, ``jnd`` or
            ``off`` (no adaptive strength).
        s_min, s_max: the strength range of ``S``; ``s_min`` ``None``: the model's own
            (``inference.s_min`` in its file), else 0.5, at most ``s_max``, and the model's
            own floor of its luma part, if it has one (``inference.luma_s_min``); an
            ``s_min`` given is the floor of the whole perturbation.

    Returns:
        The protector and the name of the strength map that runs (``off`` when none).
    """
    mop, doc = load_model(resolve_model(model))
    return configure(encoder_from_identity(doc["encoder"]), mop, doc, strength, s_min, s_max)


def configure(
    encoder,
    mop,
    doc: dict,
    strength: str = "auto",
    s_min: float | None = None,
    s_max: float = 1.0,
) -> tuple[Protector, str]:
    """A protector of a loaded model (its encoder, mixture and file header ``doc``) at one
    strength setting; :func:`load_protector`'s arguments. Protectors of one model may share
    its encoder and mixture (the web server builds one per intensity)."""
    own = doc.get("inference", {})
    luma_s_min = None
    if s_min is None:  # the model's own, never above the s_max asked for
        s_min = min(float(own.get("s_min", DEFAULT_S_MIN)), s_max)
        # a model may fade its luma part further than its colour part
        # (Protector.luma_s_min); an s_min asked for sets the floor of the whole
        # perturbation instead ("at least 90 % everywhere" means the luma part too)
        if own.get("luma_s_min") is not None:
            luma_s_min = min(float(own["luma_s_min"]), s_max)
    if strength == "off":
        return Protector(encoder, mop, None, s_min, s_max, luma_s_min), "off"
    # the JND map sees colour as much as the model says (inference.colour_weight; a
    # colour-only model's strength map must see colour to lower anything)
    module, name = build_strength_map(strength, float(own.get("colour_weight", 0.0)))
    return Protector(encoder, mop, module, s_min, s_max, luma_s_min), name


@dataclass
class Job:
    source: Path
    dest: Path
    fmt: str = "png"
    #: other inputs that would have had this job's output name (``x.jpg`` beside ``x.png``):
    #: an earlier run without this input may have written one of them there
    rivals: tuple[Path, ...] = ()


@dataclass
class Summary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    model_seconds: float = 0.0
    #: per written image: its checks, and with ``verdict=True`` its strength label
    verdicts: dict[Path, Verdict] = field(default_factory=dict)
    #: per written image (by source): the index of the target its perturbation was chosen for
    targets: dict[Path, int] = field(default_factory=dict)
    #: per written image (by source) with any: what reading or writing it changed besides
    #: the perturbation (16 bits scaled to 8, CMYK converted, EXIF left out of a JPEG)
    notes: dict[Path, list[str]] = field(default_factory=dict)

    def line(self) -> str:
        n = len(self.written)
        # "1 protected, 0 skipped, 2 failed in 0.4 s": the counts need no plural
        ms = 1000 * self.model_seconds / n if n else 0.0
        warned = sum(1 for v in self.verdicts.values() if v.warnings)
        return (
            f"{n} protected, {len(self.skipped)} skipped, {len(self.failed)} failed"
            + (f", {warned} with a warning" if warned else "")
            + f" in {self.seconds:.1f} s ({ms:.0f} ms per image in the model)"
        )


def output_format(source: Path, fmt: str) -> tuple[str, str]:
    """The format and suffix ``source`` is written in: ``png`` or ``jpeg`` for all, or with
    ``keep`` its own (:func:`~fastprotect.imageio.keep_format`)."""
    if fmt == "keep":
        return keep_format(source)
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; one of png, jpeg, keep")
    return fmt, FORMATS[fmt][1]


def _distinct(jobs: list[Job]) -> list[Job]:
    """Give inputs that would share an output name distinct names, predictably.

    ``x.jpg`` and ``x.png`` in one folder, written as PNG, would both be ``x.png``: the input
    whose own suffix is the output's keeps the name, the others get their suffix in the
    name (``x_jpg.png``); anything still shared gets ``-1``, ``-2``... in input order.
    """
    by_dest: dict[Path, list[Job]] = {}
    for job in jobs:
        by_dest.setdefault(job.dest, []).append(job)
    taken = {d for d, group in by_dest.items() if len(group) == 1}
    for dest, group in by_dest.items():
        if len(group) == 1:
            continue
        keeper = next((j for j in group if j.source.suffix.lower() == dest.suffix.lower()), None)
        for job in group:
            if job is keeper:
                name = dest
                job.rivals = tuple(j.source for j in group if j is not job)
            else:
                tag = job.source.suffix.lstrip(".").lower() or "noext"
                name = dest.with_name(f"{dest.stem}_{tag}{dest.suffix}")
            base, n = name, 1
            while name in taken:
                name = base.with_name(f"{base.stem}-{n}{base.suffix}")
                n += 1
            taken.add(name)
            job.dest = name
    return jobs


def plan(
    inputs: Sequence[str], out_dir: Path, fmt: str, inside_out: list[Path] | None = None
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Map inputs (files, folders searched recursively, globs) to output files.

    Files found in a folder keep their path relative to it; loose files go to ``out_dir``
    directly. A glob takes the image files it matches (by suffix, as a folder scan does)
    and the folders it matches, each kept under its own name (folders first, so a file
    under a matched folder keeps its place there). A folder scan skips hidden files and
    folders (``.name``, macOS's ``__MACOSX``). Files inside ``out_dir`` are never taken: a
    second run must not protect the first one's outputs, also where the shell expanded a
    glob; those named on their own are listed in ``inside_out`` when given. ``fmt`` is
    ``png``, ``jpeg`` or ``keep`` (each input's own format, :func:`output_format`). Inputs
    that would share an output name get distinct ones (:func:`_distinct`); the same file
    named twice is protected once.
    """
    out_abs = out_dir.resolve()
    jobs: list[Job] = []
    problems: list[tuple[Path, str]] = []
    seen_sources: set[Path] = set()

    def under_out(p: Path) -> bool:
        return p.resolve() == out_abs or out_abs in p.resolve().parents

    def add(src: Path, rel: Path, named: bool = False) -> None:
        if src.resolve() in seen_sources:
            return
        if under_out(src):
            if named and inside_out is not None:
                inside_out.append(src)
            return
        seen_sources.add(src.resolve())
        out_fmt, suffix = output_format(src, fmt)
        jobs.append(Job(src, out_dir / rel.with_suffix(suffix), out_fmt))

    def scan(folder: Path, into: Path) -> None:
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder)
            if f.is_file() and f.suffix.lower() in PROTECT_EXTENSIONS and not is_hidden(rel):
                add(f, into / rel)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            scan(p, Path())
        elif p.is_file():
            add(p, Path(p.name), named=True)
        else:
            # a glob takes what a folder scan would: image files, and folders (kept by name)
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in PROTECT_EXTENSIONS]
            folders = [m for m in matches if m.is_dir()]
            if not matches:
                problems.append((p, "no such file, folder or matching glob"))
            elif not files and not folders:
                problems.append((p, "the glob matches no image file (by its suffix)"))
            for folder in folders:  # 'art/**' matches art/ itself first: its tree is kept
                scan(folder, Path(folder.name))
            for f in files:
                add(f, Path(f.name))
    unique: list[Job] = []
    for job in _distinct(jobs):
        if job.dest.resolve() == job.source.resolve():
            problems.append((job.source, "output would overwrite the input; skipped"))
            continue
        unique.append(job)
    return unique, problems


@torch.no_grad()
def protect_files(
    protector: Protector,
    jobs: Iterable[Job],
    fmt: str | None = None,
    quality: int = 95,
    skip_existing: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    verdict: bool = False,
) -> Summary:
    """Protect each job's source into its destination; one failure does not stop the batch.

    Args:
        fmt: output format for every job (``png`` or ``jpeg``); ``None``: each job's own.
        skip_existing: keep outputs that exist (counted as skipped).
        overwrite: replace outputs that exist; without it (and without ``skip_existing``)
            an existing output is a failure that names both options.
        verdict: also judge each image's strength at the attacker's view
            (:func:`fastprotect.verdict.judge`); the cheap checks (tiny or flat images) run
            on every image either way.
    """
    if skip_existing and overwrite:
        raise ValueError("skip_existing and overwrite exclude each other")
    jobs = list(jobs)
    summary = Summary()
    t0 = time.perf_counter()
    for job in tqdm(jobs, desc="protecting", unit="image", disable=not progress or not jobs):
        drop_empty_leftover(job.dest)
        if job.dest.exists() and not overwrite:
            taken = skip_existing and taken_by_rival(job)
            if taken:
                why = f"{taken}; delete it and rerun, or rerun with --overwrite"
                summary.failed.append((job.source, why))
            elif skip_existing:
                summary.skipped.append(job.source)
            else:
                why = f"{job.dest} exists (--overwrite replaces it, --skip-existing keeps it)"
                summary.failed.append((job.source, why))
            continue
        try:
            image = load_image(job.source)
            t = time.perf_counter()
            out, target = protector.protect(image.rgb[None])
            out = out[0]
            summary.model_seconds += time.perf_counter() - t
            summary.targets[job.source] = int(target[0])
            save_image(image, out, job.dest, fmt or job.fmt, quality, overwrite=overwrite)
            summary.written.append(job.dest)
            if image.notes:
                summary.notes[job.source] = list(image.notes)
            summary.verdicts[job.source] = _verdict(protector, image.rgb[None], out[None], verdict)
        except (ImageReadError, OSError) as e:
            why, prefix = str(e), f"{job.source}: "  # the caller prints the path once
            summary.failed.append((job.source, why.removeprefix(prefix)))
        except Exception as e:  # noqa: BLE001 - one image's failure is not the batch's end
            # (out of memory on one huge image, a metadata the writer refuses, ...)
            summary.failed.append((job.source, f"{type(e).__name__}: {e}"))
    summary.seconds = time.perf_counter() - t0
    return summary


def taken_by_rival(job: Job) -> str | None:
    """Why ``job``'s existing output must not be skipped as done: it was made from one of
    its rivals by an earlier run (``x.jpg`` protected alone to ``x.png``, before ``x.png``
    joined). The maker is the input of the output's size nearest to it: a protected image
    differs from its own input by at most the budget plus the format's loss. ``None``
    when it is the job's own (or cannot be told)."""
    if not job.rivals or not job.dest.exists():
        return None
    try:
        out = load_image(job.dest).rgb
    except (ImageReadError, OSError):
        return None
    best, best_diff = job.source, float("inf")
    for source in (job.source, *job.rivals):
        try:  # an unreadable input cannot be the maker; the others still decide
            x = load_image(source).rgb
        except (ImageReadError, OSError):
            continue
        if x.shape == out.shape and (diff := (x - out).abs().mean().item()) < best_diff:
            best, best_diff = source, diff
    if best == job.source:
        return None
    return (
        f"{job.dest} exists but is the protected {best} from an earlier run "
        f"(before {job.source} shared its name)"
    )


def _verdict(protector: Protector, x, x_hat, strength: bool) -> Verdict:
    """The image's verdict; a failure to judge is a warning, never the batch's end (the
    protected file is already written)."""
    try:
        if strength:
            return judge(protector, x, x_hat)
        return Verdict(warnings=checks(x, colour_only=protector.mop.config.isoluminant))
    except (RuntimeError, ValueError) as e:
        return Verdict(warnings=[f"could not judge this image ({type(e).__name__}: {e})"])
