"""``fastprotect evaluate``: every method on the same images, same target, same budget.

Two ways to look. *Crop mode* (default): each image is resized so the shorter side is
``size`` and centre-cropped to ``size x size``; every method protects that square and is
scored on it. *View mode* (``views``, ``--view N``): each method protects the image as it
would be published, at its own resolution (per-image PGD at the attacker's view instead,
as it would be used), invisibility is measured on that published image, and protection
after the attacker's resize to each view (:func:`~fastprotect.views.attacker_resize`:
shorter side ``N``, antialiased bilinear, as diffusers' LoRA and DreamBooth training
scripts' ``Resize(N)``), each robustness transform applied to the published image first.

In crop mode, for each image:

1. each MoP model routes the clean image to one of its targets and its latent pull is
   measured toward that target; the *reference* model (the first ``mop:`` method) picks
   the target of every other method (the one PGD pulls toward and is measured against);
2. each method protects the image (timed); ``none`` (the unprotected image) is always
   included, so each transform's own effect is visible;
3. each robustness transform is applied to the protected image and every metric is
   computed against the clean image with the *evaluation* autoencoder (TAEF2 encoder and
   decoder by default; another encoder measures transfer).

Method specs: ``mop:PATH`` (a model file, or ``mop`` alone for the shipped model;
``NAME=mop:PATH`` to name it, UAP models too),
``pgd`` / ``pgd:STEPS`` (per-image PGD toward the target latent on the reference model's
encoder), ``pgdu`` / ``pgdu:STEPS`` (untargeted: away from the image's own latent),
``photoguard`` / ``photoguard:STEPS`` (toward a grey image's latent), ``uniform`` and
``sign`` (random noise at the budget).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import inspect
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from ..data.files import list_images, read_rgb, split_files
from ..encoders import Encoder, TinyAutoencoderEncoder, build_encoder
from ..encoders.taesd import TinyAutoencoderDecoder
from ..fileutil import atomic_output
from ..protect import load_protector
from ..protector import Protector
from ..strength import LPIPSMap, find_alexnet, importable
from ..views import attacker_resize
from .baselines import pgd, pgd_untargeted, photoguard, sign_noise, uniform_noise
from .cache import AttackCache
from .journal import RunJournal, journalled_names
from .metrics import latent_pull, lowfreq_psnr, psnr, reconstruction_psnr, ssim
from .purify import (
    AUTOENCODER_PURIFICATIONS,
    GEOMETRIC,
    IMPRESS,
    PURIFICATION_SET,
    PURIFICATIONS,
    impress,
    ssim_distance,
)
from .transforms import ROBUSTNESS, TRANSFORMS

__all__ = [
    "ROBUSTNESS",
    "EvaluationError",
    "evaluate",
    "margin_references",
    "parse_methods",
    "summarise",
    "table",
    "write_results",
]

#: every transform that is a plain function of the images, by name (IMPRESS is bound to the
#: evaluation autoencoder in :func:`_bind`)
NAMED_TRANSFORMS = {**TRANSFORMS, **PURIFICATIONS}
METRICS = ("psnr", "ssim", "lf_psnr", "lpips", "dists", "latent_pull", "disruption_db")
#: methods published at the attacker's view in view mode; ``resized`` is the unprotected
#: image published there, the reference of the others (a transform acts on a smaller image)
AT_VIEW = ("pgd", "pgdu", "photoguard", "resized")
#: per-image attacks: the slow methods, whose results ``evaluate``'s ``cache`` keeps
ATTACKS = ("pgd", "pgdu", "photoguard")


class EvaluationError(ValueError):
    """Bad evaluation settings; the message says which."""


@dataclass
class Method:
    """A named way of protecting a batch of images toward given targets."""

    name: str
    protect: Callable[[Tensor, Tensor], Tensor]  # (x, target image at x's size) -> x_hat
    router: Protector | None = None  # MoP models choose (and are measured on) their own target
    at_view: bool = False  # view mode: protects the attacker's view, not the published image
    # a per-image attack's parameters (kind, steps, eta, step_size) and the encoder it runs
    # on: what a cache of its results (evaluate's ``cache``) tells runs apart by, with the image
    attack: dict | None = None
    attacked: Encoder | None = None


#: what decoding an unreadable image file raises (Pillow: OSError for unknown or truncated
#: files, SyntaxError and ValueError from some plugins, its decompression-bomb guard)
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def centre_square(path: Path, size: int) -> Tensor:
    """The image resized (shorter side ``size``) and centre-cropped to ``1x3xSxS`` floats."""
    x = read_rgb(path).float()[None] / 255
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top : top + size, left : left + size].clamp(0, 1).contiguous()


def parse_methods(
    specs: Sequence[str],
    strength: str,
    eta: float | None,
    pgd_step_size: float,
    s_min: float | None = None,
    s_max: float = 1.0,
) -> tuple[list[Method], Protector]:
    """Build the methods; returns them (``none`` first) and the reference protector.

    ``strength``, ``s_min`` and ``s_max`` are the MoP models' adaptive strength settings,
    as for ``fastprotect protect``."""
    mops: list[tuple[str, Protector]] = []
    rest: list[tuple[str, str, int | None]] = []
    for spec in specs:
        name, _, body = spec.rpartition("=")
        kind, _, arg = body.partition(":")
        if kind == "mop":
            # mop with no PATH: the shipped model
            protector, _ = load_protector(arg or None, strength, s_min, s_max)
            mops.append((name or (Path(arg).stem if arg else "shipped"), protector))
        elif kind == "resized":
            if arg:
                raise EvaluationError(f"{spec!r}: 'resized' takes no argument")
            rest.append((name or "resized", kind, 0))
        elif kind in ("pgd", "pgdu", "photoguard", "uniform", "sign"):
            if kind in ("uniform", "sign") and arg:
                raise EvaluationError(f"{spec!r}: noise methods take no argument")
            if arg and not (arg.isdigit() and int(arg) > 0):
                raise EvaluationError(f"{spec!r}: the step count must be a positive integer")
            steps = int(arg) if arg else (50 if kind == "pgdu" else 100)
            rest.append((name or (kind if not arg else f"{kind}{steps}"), kind, steps))
        else:
            raise EvaluationError(
                f"unknown method {spec!r}; use mop[:PATH], pgd[:STEPS], pgdu[:STEPS], "
                "photoguard[:STEPS], uniform, sign or resized"
            )
    if not mops:
        raise EvaluationError("name at least one MoP model (mop[:PATH]): it routes the targets")
    ref = mops[0][1]
    budget = ref.mop.config.eta if eta is None else eta
    methods = [Method("none", lambda x, y: x)]
    methods += [Method(n, lambda x, y, p=p: p(x), router=p) for n, p in mops]
    for name, kind, steps in rest:
        run = _baseline(kind, steps, ref.encoder, budget, pgd_step_size)
        attack = None
        if kind in ATTACKS:
            attack = {"kind": kind, "steps": steps, "eta": budget, "step_size": pgd_step_size}
        methods.append(
            Method(
                name,
                run,
                at_view=kind in AT_VIEW,
                attack=attack,
                attacked=ref.encoder if attack else None,
            )
        )
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise EvaluationError(f"method names must differ, got {names}; use NAME=spec")
    return methods, ref


def _baseline(
    kind: str, steps: int, encoder: Encoder, eta: float, step_size: float
) -> Callable[[Tensor, Tensor], Tensor]:
    """``(x, target image) -> x_hat`` for a per-image baseline on ``encoder``."""

    def run(x: Tensor, y: Tensor) -> Tensor:
        if kind == "resized":
            return x
        if kind == "pgd":
            return pgd(x, encoder.latent, encoder.latent(y), eta, steps, step_size)
        if kind == "pgdu":
            return pgd_untargeted(x, encoder.latent, eta, steps, step_size)
        if kind == "photoguard":
            return photoguard(x, encoder.latent, eta, steps, step_size)
        if kind == "uniform":
            return uniform_noise(x, eta)
        return sign_noise(x, eta)

    return run


def evaluation_autoencoder(name: str) -> tuple[Encoder, Callable[[Tensor], Tensor] | None]:
    """The evaluation encoder and, for TAESD-family encoders, the matching decoder."""
    encoder = build_encoder(name).freeze()
    decoder = None
    if isinstance(encoder, TinyAutoencoderEncoder):
        try:
            decoder = TinyAutoencoderDecoder(encoder.variant)
        except Exception:  # noqa: BLE001 - no decoder weights: disruption is unavailable
            decoder = None
    return encoder, decoder


def _target(protector: Protector, x: Tensor) -> tuple[str, Tensor]:
    """The target ``protector`` routes ``x`` to: its name and its image at ``x``'s size."""
    t = protector.choose(x)[0]
    return protector.mop.config.targets[int(t)], protector.mop.target_image(t, x.shape[-2:])


def _save_png(x: Tensor, path: Path) -> None:
    from PIL import Image

    from ..imageio import to_uint8

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Image.fromarray(to_uint8(x[0])).save(tmp, "PNG")


def select_files(
    roots: Sequence[Path],
    split: str = "val",
    val_fraction: float = 0.2,
    per_domain: int | None = None,
    limit: int | None = None,
    exclude: Path | None = None,
) -> list[Path]:
    """The images ``evaluate`` takes: the ``split`` (``val``, ``train`` or ``all``) of the
    images under ``roots`` (none under ``exclude``, the run's own folder), the first
    ``per_domain`` of each domain, the first ``limit`` (:func:`take_shard` cuts a shard of
    them)."""
    files = list_images(roots)
    if exclude is not None:
        own = Path(exclude).resolve()
        files = [f for f in files if own not in Path(f).resolve().parents]
    train, val = split_files(files, val_fraction)
    files = {"val": val, "train": train, "all": files}[split]
    if per_domain:
        taken: dict[str, list[Path]] = {}
        for f in files:
            taken.setdefault(_domain(f, roots), []).append(f)
        files = [f for group in taken.values() for f in group[:per_domain]]
    files = files[:limit] if limit else files
    if not files:
        raise EvaluationError(f"no images in the {split} split of {[str(r) for r in roots]}")
    return files


def take_shard(files: Sequence[Path], shard: tuple[int, int]) -> list[Path]:
    """Shard ``(i, n)`` of ``files``: every n-th, from the i-th (1-based) on. The n shards
    are disjoint and together make ``files``; in path order each holds about 1/n of every
    domain, so a long run split into shards (one per machine or session) gives a fair
    sample of every domain of at least n images with each shard."""
    i, n = shard
    if not 1 <= i <= n:
        raise EvaluationError(f"shard {i}/{n}: I must be 1 to N")
    taken = list(files[i - 1 :: n])
    if not taken:
        raise EvaluationError(
            f"shard {i}/{n} is empty: the selection holds only {len(files)} images"
        )
    return taken


def selection_digest(files: Sequence[Path], roots: Sequence[Path]) -> str:
    """sha256 of which images were selected, named by their data folder's name and the
    path below it, so that the same selection from the same data has the same digest
    wherever the data lies (``../shared/data/faces`` or ``/work/shared/data/faces``)."""
    names = []
    for f in files:
        root = next((r for r in roots if r in f.parents or r == f), None)
        names.append(f"{root.name}/{f.relative_to(root).as_posix()}" if root else f.name)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _domain(path: Path, roots: Sequence[Path]) -> str:
    """The first folder below the data root (objects, faces, cartoon), else the root's name."""
    for root in roots:
        if root in path.parents:
            parts = path.relative_to(root).parts
            return parts[0] if len(parts) > 1 else root.name
    return path.parent.name


def expand_transforms(transforms: Sequence[str]) -> list[str]:
    """``purification`` stands for every purification (:data:`~.purify.PURIFICATION_SET`)."""
    out: list[str] = []
    for t in transforms:
        for name in PURIFICATION_SET if t == "purification" else (t,):
            if name not in out:
                out.append(name)
    return out


def _bind(transforms, enc: Encoder, dec, lpips_fn) -> dict[str, Callable[[Tensor], Tensor]]:
    """Each transform as a function of the images; IMPRESS bound to the evaluation
    autoencoder and LPIPS (``1 - SSIM`` where LPIPS's weights are absent)."""
    fns: dict[str, Callable[[Tensor], Tensor]] = {}
    for t in transforms:
        if t == "impress":
            if dec is None:
                raise EvaluationError("impress needs the evaluation autoencoder's decoder")
            distance = lpips_fn or ssim_distance
            fns[t] = lambda x, d=distance: impress(x, enc.latent, dec, d)
        else:
            if t == "adversecleaner":
                try:
                    import cv2

                    cv2.ximgproc.guidedFilter  # noqa: B018 - the contrib build has it
                except (ImportError, AttributeError) as e:
                    raise EvaluationError(
                        "the adversecleaner transform needs OpenCV's contrib build: "
                        "pip install 'fastprotect[eval]' (opencv-contrib-python-headless)"
                    ) from e
            fns[t] = NAMED_TRANSFORMS[t]
    return fns


def match_size(x: Tensor, like: Tensor) -> Tensor:
    """``x`` resized (bicubic, clamped) to ``like``'s size where a transform changed it:
    the social chain shrinks large images, and an attacker's resize of them can differ from
    the clean image's by a pixel of rounding."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    size = tuple(like.shape[-2:])
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(
        0, 1
    )


def _lpips_metric(device: torch.device | str = "cpu"):
    path = find_alexnet()
    if path is None or not all(map(importable, ("lpips", "torchvision"))):
        return None  # the protect-only install has neither package
    net = LPIPSMap(path).net.to(device)
    return lambda x, y: net(x * 2 - 1, y * 2 - 1).flatten(1).mean(1)


def check_device(name: str) -> torch.device:
    """``name`` as a device this machine has, or an :class:`EvaluationError` saying why not."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise EvaluationError(f"--device {name!r}: not a device; use cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EvaluationError(f"--device {name!r}: this machine has no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EvaluationError(
                f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA devices"
            )
    elif dev.type != "cpu":
        raise EvaluationError(f"--device {name!r}: use cpu or cuda[:N]")
    return dev


def _journal_key(settings: dict, files: Sequence[Path], extra: dict | None) -> dict:
    """What decides an evaluation's rows, for :class:`~.journal.RunJournal`: the settings
    (but where the data was named from, the thread count, the GPU's name), the images and
    the folders by absolute path (the settings hold a digest of each MoP model's weights,
    so a model retrained to the same path is another model, and the versions of
    fastprotect and torch), and ``extra`` (the caller's: the method specs, the
    baselines' budget and step)."""
    key = {k: v for k, v in settings.items() if k not in ("torch_threads", "device_name")}
    key["data"] = [str(Path(d).resolve()) for d in settings["data"]]
    key["files"] = [str(Path(f).resolve()) for f in files]
    return {**key, **(extra or {})}


def _versions() -> dict[str, str]:
    from .. import __version__

    return {"fastprotect": __version__, "torch": torch.__version__}


def _encoder_id(encoder: Encoder) -> str:
    """What names an encoder in the attack cache: its class, its own identity and the sha256
    of its weights."""
    return json.dumps(
        {
            "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "identity": encoder.identity(),
            "state": _state_digest(encoder),
        },
        sort_keys=True,
    )


def _state_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's parameters and buffers, names and bytes."""
    digest = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _full_precision(dev: torch.device) -> Iterator[None]:
    """float32 arithmetic on a CUDA device for the duration: TF32 off for convolutions and
    matrix products (PyTorch allows it for cuDNN's convolutions by default), as before after."""
    if dev.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _source(*functions: Callable) -> str:
    """The functions' source, or a marker where it cannot be read (a byte-code install,
    where the attack cache refuses to start anyway)."""
    try:
        return "".join(inspect.getsource(f) for f in functions)
    except (OSError, TypeError):
        return "no source"


#: the code in this module that an attack's result depends on (binding it to its encoder,
#: a GPU's precision), read at import, so that an edit during a long run does not name its
#: cache entries
_ATTACK_SOURCE = _source(_baseline, _full_precision)


def _clock(x: Tensor) -> float:
    """A time stamp after the work queued on ``x``'s device is done (GPUs run ahead)."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


def _timed(method: Method, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
    """``method``'s protected ``x`` and the seconds it took (behind the attack cache, the
    attack's own seconds, those it took when it was computed for a result from the cache)."""
    t0 = _clock(x)
    x_hat = method.protect(x, y)
    seconds = _clock(x) - t0
    own = getattr(method.protect, "seconds", None)
    return x_hat, seconds if own is None else own


@torch.no_grad()
def evaluate(
    data: Sequence[str | Path],
    methods: Sequence[Method],
    reference: Protector,
    eval_encoder: str = "taef2",
    size: int = 256,
    split: str = "val",
    val_fraction: float = 0.2,
    limit: int | None = None,
    transforms: Sequence[str] = tuple(ROBUSTNESS),
    progress: bool = True,
    examples: int = 0,
    examples_dir: Path | None = None,
    views: Sequence[int] = (),
    max_side: int | None = None,
    per_domain: int | None = None,
    journal: Path | None = None,
    resume: bool = False,
    journal_key: dict | None = None,
    device: str = "cpu",
    shard: tuple[int, int] | None = None,
    out: Path | None = None,
    cache: str | Path | None = None,
) -> tuple[list[dict], dict]:
    """Run every method on every image; returns the per-image rows and the settings.

    An image that cannot be read is skipped with a warning and listed in the settings'
    ``skipped_files`` (the run goes on; ``images`` counts the images measured). Files
    under ``out`` (the run's own folder, where it lies inside a data folder) are not
    taken as images.

    With ``journal`` (a file path) each image's rows are written there as soon as they are
    measured (:class:`~.journal.RunJournal`); with ``resume`` a journal already there is
    continued, its images not measured again, if it was started with the same settings
    (these, the image list, and ``journal_key``: whatever else the caller wants matched,
    such as the method specs). The caller removes the journal once the results are saved.

    ``device`` (``cpu``, ``cuda``, ``cuda:1``) runs the autoencoders, the models and the
    per-image baselines there; the transforms that are Pillow, OpenCV or scikit-image code
    run on the CPU and hand their result back. Numbers on a GPU differ from the CPU's in
    the last digits (float arithmetic in another order).

    With ``views`` (view mode, see the module docstring) ``size`` is not used; images are
    taken at their own resolution, shrunk first (bicubic) only where ``max_side`` caps
    their shorter side.

    With ``examples > 0``, the first ``examples`` images of each domain are also written
    to ``examples_dir/<domain>/<image>/`` as PNG: ``original``, ``original_recon``
    (``D(E(x))``), and per method ``<method>`` and ``<method>_recon`` (no transform).

    With ``cache`` (a folder) the per-image attacks' results are kept there and reused by
    any later run that attacks the same image the same way (:mod:`~.cache`), with rows
    equal to the last digit; the settings' ``attack_cache`` says how many were reused.
    """
    if any(v < 16 for v in views):
        raise EvaluationError(f"views are shorter sides in pixels (at least 16), got {list(views)}")
    transforms = expand_transforms(transforms)
    known = [*NAMED_TRANSFORMS, *AUTOENCODER_PURIFICATIONS]
    unknown = [t for t in transforms if t not in known]
    if unknown:
        raise EvaluationError(
            f"unknown transforms {unknown}; choose from {known} (or 'purification': all of "
            f"{list(PURIFICATION_SET)})"
        )
    roots = [Path(d) for d in data]
    # the run's own examples are no images to evaluate
    selected = select_files(roots, split, val_fraction, per_domain, limit, exclude=out)
    files = take_shard(selected, shard) if shard else selected
    if examples and examples_dir is None:
        raise EvaluationError("examples need a folder to go to")
    dev = check_device(device)
    attack_cache = None
    if cache is not None:  # made now: not after the first attack's minutes
        try:
            Path(cache).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EvaluationError(f"the attack cache {cache} cannot be a folder: {e}") from None
        try:
            attack_cache = AttackCache(cache)
        except OSError as e:
            raise EvaluationError(f"the attack cache {cache}: {e}") from None
        for m in methods:
            if m.attack and m.attacked is None:
                raise EvaluationError(
                    f"method {m.name!r}: an attack kept in the attack cache needs the "
                    "encoder it runs on (Method.attacked)"
                )

    with _full_precision(dev):  # a GPU's TF32 would round the autoencoders' convolutions
        enc, dec = evaluation_autoencoder(eval_encoder)
        enc.to(dev)
        if dec is not None:
            dec.to(dev)
        modules = [reference, *(m.router for m in methods if m.router is not None)]
        modules += [m.attacked for m in methods if m.attacked is not None]
        for module in modules:
            module.to(dev)  # the per-image baselines attack the reference's encoder
        lpips_fn = _lpips_metric(dev)
        if attack_cache is not None and any(m.attack for m in methods):
            ids = {id(m.attacked): _encoder_id(m.attacked) for m in methods if m.attack}
            methods = [
                replace(
                    m,
                    protect=attack_cache.wrap(
                        m.protect,
                        m.attack,
                        ids[id(m.attacked)],
                        uses_target=m.attack["kind"] == "pgd",
                        code=_ATTACK_SOURCE,
                    ),
                )
                if m.attack
                else m
                for m in methods
            ]
        fns = _bind(transforms, enc, dec, lpips_fn)
        settings = {
            "data": [str(r) for r in roots],
            "split": split,
            "val_fraction": val_fraction,
            "images": len(files),
            "size": None if views else size,
            "views": list(views),
            "view_resize": "shorter side to the view, antialiased bilinear" if views else None,
            "max_side": max_side,
            "per_domain": per_domain,
            "limit": limit,
            # a shard's rows are every n-th image of this selection (tools/merge_results.py
            # joins shards only of one selection)
            **(
                {
                    "shard": list(shard),
                    "selection": {
                        "images": len(selected),
                        "sha256": selection_digest(selected, roots),
                    },
                }
                if shard
                else {}
            ),
            "eval_encoder": eval_encoder,
            "decoder": dec is not None,
            "lpips": lpips_fn is not None,
            "dists": False,
            "methods": [m.name for m in methods],
            "transforms": list(transforms),
            **(
                {"impress": {**IMPRESS, "distance": "lpips" if lpips_fn else "1 - ssim"}}
                if "impress" in transforms
                else {}
            ),
            "reference_eta": reference.mop.config.eta,
            "strength_map": (
                type(reference.strength_map).__name__ if reference.strength_map else "off"
            ),
            "s_min": reference.s_min,
            "luma_s_min": reference.luma_s_min,
            "s_max": reference.s_max,
            # seconds per image depend on the machine and on this (CPU) thread count
            "torch_threads": torch.get_num_threads(),
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            # which models and code made the rows: a model retrained to the same path, or
            # another release, makes other rows
            "models": {m.name: _state_digest(m.router) for m in methods if m.router is not None},
            "versions": _versions(),
        }
        run_journal = None
        absolute = [str(Path(f).resolve()) for f in files]  # each image's key, once
        measured: dict[str, list[dict]] = {}  # rows of the images an earlier run measured
        if journal is not None:
            run_journal = RunJournal.open(
                journal, _journal_key(settings, files, journal_key), resume
            )
            # by absolute path: a run resumed from another folder names its images otherwise
            names = journalled_names(absolute, run_journal.done)
            measured = {f: run_journal.done[d] for f, d in names.items()}
            done = len(measured)
            settings["resumed_images"] = done
            if progress:
                said = f"resuming {journal}: {done} of {len(files)} images already measured"
                if not done:
                    said = f"each image's rows go to {journal} as it finishes"
                print(f"fastprotect: {said}", file=sys.stderr)
        rows: list[dict] = []
        saved: dict[str, int] = {}
        example_names: set[tuple[str, str]] = set()
        skipped: list[dict] = []
        for path, key in tqdm(
            zip(files, absolute, strict=True),
            desc="evaluating",
            unit="image",
            total=len(files),
            disable=not progress,
        ):
            domain = _domain(path, roots)
            done_rows = measured.get(key)
            if done_rows is None:
                try:  # decoding only: an error on the device is no unreadable file
                    image = read_rgb(path, max_side) if views else centre_square(path, size)
                except UNREADABLE as e:
                    why = f"not a readable image ({type(e).__name__}: {e})"
                    skipped.append({"image": str(path), "reason": why})
                    tqdm.write(f"fastprotect: warning: {path}: {why}; skipped", file=sys.stderr)
                    continue
            saved[domain] = saved.get(domain, 0) + 1
            keep = None
            if saved[domain] <= examples:  # a.png and a.jpg, or two folders' a.png: apart
                name = path.stem
                if (domain, name) in example_names:
                    name = f"{path.stem}_{path.suffix.lstrip('.')}"
                n = 1
                while (domain, name) in example_names:
                    n += 1
                    name = f"{path.stem}_{path.suffix.lstrip('.')}-{n}"
                example_names.add((domain, name))
                keep = examples_dir / domain / name
            if done_rows is not None:
                rows += [{**r, "image": str(path)} for r in done_rows]
                continue
            args = (str(path), domain, methods, reference, enc, dec, lpips_fn)
            if views:
                x = image.float()[None].to(dev) / 255
                image_rows = _view_rows(x, *args, views, fns, keep)
            else:
                image_rows = _crop_rows(image.to(dev), *args, fns, keep)
            if run_journal is not None:
                run_journal.record(str(path), image_rows)
            rows += image_rows
        if attack_cache is not None:  # after the journal's key: a run may resume with or without
            settings["attack_cache"] = attack_cache.summary()
        if skipped:
            settings["images"] -= len(skipped)
            settings["skipped_files"] = skipped
        if not rows:
            raise EvaluationError(
                "no image could be measured: "
                + "; ".join(f"{f['image']}: {f['reason']}" for f in skipped[:3])
            )
        return rows, settings


def _crop_rows(
    x: Tensor,
    image: str,
    domain: str,
    methods: Sequence[Method],
    reference: Protector,
    enc: Encoder,
    dec: Callable[[Tensor], Tensor] | None,
    lpips_fn,
    fns: dict[str, Callable[[Tensor], Tensor]],
    keep: Path | None,
) -> list[dict]:
    """Crop mode for one square image ``1xCxSxS``: one row per method and transform (the
    keys of ``fns``, in order)."""
    rows = []
    z = enc.latent(x)
    rec_clean = reconstruction_psnr(x, z, dec) if dec else None
    refs = {}  # transforms that move the content: the same transform of the clean image
    for tname in fns:
        if tname in GEOMETRIC:
            xr = fns[tname](x)
            zr = enc.latent(xr)
            refs[tname] = (xr, zr, reconstruction_psnr(xr, zr, dec) if dec else None)
    ref_name, ref_y = _target(reference, x)
    ref_z_y = enc.latent(ref_y)  # shared by the reference and every method without a router
    if keep and dec:
        _save_png(x, keep / "original.png")
        _save_png(dec(z), keep / "original_recon.png")
    for method in methods:
        if method.router is None or method.router is reference:
            name, y, z_y = ref_name, ref_y, ref_z_y
        else:
            name, y = _target(method.router, x)
            z_y = enc.latent(y)
        x_hat, seconds = _timed(method, x, y)
        if keep and dec:
            _save_png(x_hat, keep / f"{method.name}.png")
            _save_png(dec(enc.latent(x_hat)), keep / f"{method.name}_recon.png")
        for tname in fns:
            xr, zr, rec_r = refs.get(tname, (x, z, rec_clean))
            x_t = match_size(fns[tname](x_hat), xr)
            z_t = enc.latent(x_t)
            rows.append(
                {
                    "image": image,
                    "domain": domain,
                    "method": method.name,
                    "transform": tname,
                    "target": name,
                    "view": None,
                    "psnr": float(psnr(xr, x_t)),
                    "ssim": float(ssim(xr, x_t)),
                    "lf_psnr": float(lowfreq_psnr(xr, x_t)),
                    "lpips": float(lpips_fn(xr, x_t)) if lpips_fn else None,
                    "dists": None,
                    "latent_pull": float(latent_pull(z_t, zr, z_y)),
                    "disruption_db": float(rec_r - reconstruction_psnr(xr, z_t, dec))
                    if dec
                    else None,
                    "seconds": seconds,
                }
            )
    return rows


def _view_rows(
    x: Tensor,
    image: str,
    domain: str,
    methods: Sequence[Method],
    reference: Protector,
    enc: Encoder,
    dec: Callable[[Tensor], Tensor] | None,
    lpips_fn,
    views: Sequence[int],
    fns: dict[str, Callable[[Tensor], Tensor]],
    keep: Path | None,
) -> list[dict]:
    """View mode for one image ``1x3xHxW`` at its own resolution: one row per method,
    transform and view."""
    rows = []
    clean = {}  # view -> (x at the view, its latent, PSNR of its reconstruction)
    for v in views:
        xv = attacker_resize(x, v)
        zv = enc.latent(xv)
        clean[v] = (xv, zv, reconstruction_psnr(xv, zv, dec) if dec else None)
    for tname in fns:  # transforms that move the content: the same transform of the clean
        if tname in GEOMETRIC:
            xg = fns[tname](x)
            for v in views:
                xv = match_size(attacker_resize(xg, v), clean[v][0])
                zv = enc.latent(xv)
                clean[(tname, v)] = (xv, zv, reconstruction_psnr(xv, zv, dec) if dec else None)
    if keep:
        _save_png(x, keep / "original.png")
    ref_name, ref_y = _target(reference, x)
    ref_z = {v: enc.latent(attacker_resize(ref_y, v)) for v in views}
    for method in methods:
        if method.router is None or method.router is reference:
            name, y, z_y = ref_name, ref_y, ref_z
        else:
            name, y = _target(method.router, x)
            z_y = {v: enc.latent(attacker_resize(y, v)) for v in views}
        # what is published: the image at its own resolution, or (per-image PGD, as it
        # would be used) the attacker's view of it, one per view
        if method.at_view:
            published = {}
            for v in views:
                x_hat, seconds = _timed(method, clean[v][0], attacker_resize(y, v))
                published[v] = (x_hat, clean[v][0], seconds)
        else:
            x_hat, seconds = _timed(method, x, y)
            published = {v: (x_hat, x, seconds) for v in views}
        if keep:
            first = published[views[0]][0]
            _save_png(first, keep / f"{method.name}.png")
            if dec:
                seen = enc.latent(attacker_resize(first, views[0]))
                _save_png(dec(seen), keep / f"{method.name}_recon_view{views[0]}.png")
        for tname, fn in fns.items():
            done = {}  # the published image's invisibility, per published image
            for v in views:
                x_hat, base, seconds = published[v]
                if id(x_hat) not in done:
                    x_t = fn(x_hat)
                    ref = fn(base) if tname in GEOMETRIC else base
                    shown = match_size(x_t, ref)
                    done[id(x_hat)] = (
                        x_t,
                        {
                            "psnr": float(psnr(ref, shown)),
                            "ssim": float(ssim(ref, shown)),
                            "lf_psnr": float(lowfreq_psnr(ref, shown)),
                            "lpips": float(lpips_fn(ref, shown)) if lpips_fn else None,
                        },
                    )
                x_t, seen = done[id(x_hat)]
                xv, zv, rec_clean = clean.get((tname, v), clean[v])
                z_t = enc.latent(match_size(attacker_resize(x_t, v), xv))
                rows.append(
                    {
                        "image": image,
                        "domain": domain,
                        "method": method.name,
                        "transform": tname,
                        "target": name,
                        "view": v,
                        **seen,
                        "dists": None,
                        "latent_pull": float(latent_pull(z_t, zv, z_y[v])),
                        "disruption_db": float(rec_clean - reconstruction_psnr(xv, z_t, dec))
                        if dec
                        else None,
                        "seconds": seconds,
                        "published": "view" if method.at_view else "native",
                    }
                )
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean and standard deviation of every metric per method, transform, view (``None`` in
    crop mode) and domain (and over all domains as ``all``); unavailable metrics stay
    ``None``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        for domain in (r["domain"], "all"):
            key = (r["method"], r["transform"], r.get("view"), domain)
            groups.setdefault(key, []).append(r)
    out = []
    for (method, transform, view, domain), rs in groups.items():
        entry = {"method": method, "transform": transform, "view": view, "domain": domain}
        entry["n"] = len(rs)
        for key in (*METRICS, "seconds"):
            values = [r[key] for r in rs if r[key] is not None and math.isfinite(r[key])]
            entry[key] = statistics.fmean(values) if values else None
            entry[f"{key}_std"] = statistics.pstdev(values) if len(values) > 1 else None
        out.append(entry)
    return out


def margin_references(methods: Sequence[str], rows: Sequence[dict]) -> dict[str, str]:
    """The method each of ``methods`` is measured against when its margin (what it adds to
    a transform's own damage) is taken: ``resized``, the unprotected image published at the
    attacker's view, for a method published there (``published == "view"`` in ``rows``) when
    the run has ``resized``, else ``none``, the unprotected image. ``resized`` itself is
    measured against ``none``: what the smaller published image alone costs."""
    at_view = {r["method"] for r in rows if r.get("published") == "view"}
    has_resized = "resized" in methods
    return {
        m: "resized" if has_resized and m in at_view and m != "resized" else "none"
        for m in methods
        if m != "none"
    }


def write_results(out_dir: Path, rows: list[dict], settings: dict) -> tuple[Path, Path]:
    """``results.json`` (settings, per-image rows, summary) and ``results.csv`` (rows);
    refuses to overwrite."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js, cs = out_dir / "results.json", out_dir / "results.csv"
    for p in (js, cs):
        if p.exists():
            raise EvaluationError(f"{p} exists; choose another --out")
    doc = {"settings": settings, "summary": summarise(rows), "rows": rows}
    with atomic_output(js, overwrite=False) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    with atomic_output(cs, overwrite=False) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return js, cs


def table(
    summary: Sequence[dict],
    transforms: Sequence[str] = ("clean", "jpeg75"),
    domains: Sequence[str] = ("all",),
) -> str:
    """A markdown table of the given transforms and domains (``all``: over every domain)."""

    def fmt(v, spec=".3f"):
        return "n/a" if v is None else format(v, spec)

    lines = [
        "| method | transform | view | domain | n | PSNR | SSIM | low-freq PSNR | LPIPS "
        "| latent pull | disruption dB | s/image |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for domain in domains:
        for e in summary:
            if e["domain"] == domain and e["transform"] in transforms:
                lines.append(
                    f"| {e['method']} | {e['transform']} | {e.get('view') or '-'} | "
                    f"{domain} | {e['n']} | {fmt(e['psnr'], '.2f')} | {fmt(e['ssim'])} | "
                    f"{fmt(e['lf_psnr'], '.2f')} | {fmt(e['lpips'])} | "
                    f"{fmt(e['latent_pull'])} | {fmt(e['disruption_db'], '.2f')} | "
                    f"{fmt(e['seconds'], '.2f')} |"
                )
    return "\n".join(lines)
