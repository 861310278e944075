"""The mimicry test: DreamBooth-LoRA fine-tuning on clean and on protected images.

What the paper measures, and what a protection is for: fine-tune a text-to-image model
with LoRA on an artist's images (DreamBooth: one rare token, ``sks``, bound to the set),
sample with fixed prompts and seeds, and score the samples. Done twice from the same base
model, once on the clean images and once on their protected versions; protection works
when the second set of samples is further from the artist's images (higher FID) and of
lower quality (lower CLIP-IQA), while the protected images themselves stay close to the
originals (low DISTS).

- Fine-tuning (:func:`finetune_lora`): LoRA adapters (peft) on the UNet's attention
  projections, AdamW, the noise-prediction loss of the model's own scheduler (epsilon or
  v-prediction), latents from the pipeline's own VAE, the text encoder frozen. SD-1.5
  class pipelines (the paper's setting) and SDXL (two text encoders, pooled embeddings,
  size conditioning).
- Sampling (:func:`sample`): each prompt with each seed, the pipeline's own scheduler.
- Scores (:func:`build_metrics`, torchmetrics): FID of each run's samples against the
  clean training images (Inception-v3 features; higher = better protection, the paper's
  FID); CLIP-IQA of each run's samples (no reference; lower = better protection); DISTS
  of each protected training image against its clean original (the paper's DISTS: how
  visible the protection is; lower = less visible). All three download weights on first
  use.

:func:`run_mimicry` ties these together and writes ``results.json`` and the samples;
``tools/mimic_lora.py`` is its command line and ``tools/report.py`` renders the JSON.

Tested in this repository only on a tiny, randomly initialised pipeline built inside the
test (no downloads); it has not been run on real weights here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fileutil import is_within

#: what the DreamBooth token stands for in the default prompts
INSTANCE_PROMPT = "an artwork in sks style"
PROMPTS = (
    "an artwork in sks style",
    "a portrait of a woman in sks style",
    "a landscape with a river in sks style",
    "a cat on a sofa in sks style",
)
ADAPTER = "mimicry"


@dataclass
class MimicSettings:
    """The fine-tuning and sampling recipe (defaults: a common SD-1.5 DreamBooth-LoRA
    setting; the paper fine-tunes SD-1.5 with LoRA and reports FID and DISTS)."""

    instance_prompt: str = INSTANCE_PROMPT
    prompts: Sequence[str] = PROMPTS
    seeds: Sequence[int] = (0, 1, 2, 3)
    resolution: int = 512
    steps: int = 500
    lr: float = 1e-4
    rank: int = 8
    batch_size: int = 1
    inference_steps: int = 30
    guidance_scale: float = 7.5
    seed: int = 0

    def __post_init__(self) -> None:
        # checked here, before hours of fine-tuning: each of these fails late otherwise
        for name in ("steps", "rank", "batch_size", "inference_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(
                f"resolution must be a multiple of 8 (the VAE's factor), not {self.resolution}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be above 0, not {self.lr}")
        if not self.prompts or not self.seeds:
            raise ValueError("at least one prompt and one seed are needed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {list(self.seeds)} (each sample is one file)")

    @property
    def samples(self) -> int:
        return len(self.prompts) * len(self.seeds)


@dataclass
class RunResult:
    """One fine-tuning run: its images, loss curve, samples and scores."""

    images: int
    losses: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def load_pipeline(base: str, kind: str = "sd15", device: str = "cpu", dtype=torch.float32):
    """A diffusers pipeline from a hub id or a local folder (``save_pretrained``)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}[kind]
    kwargs = {"safety_checker": None, "requires_safety_checker": False} if kind == "sd15" else {}
    pipe = cls.from_pretrained(base, dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def find_images(folder: str | Path, exclude: Sequence[str | Path] = ()) -> list[Path]:
    """The images a run takes from ``folder``, sorted: what ``fastprotect protect`` takes
    from a folder (searched recursively by suffix; hidden files and ``__MACOSX`` skipped),
    without anything under the folders in ``exclude`` (the run's own outputs, which may lie
    inside)."""
    from ..data.files import is_hidden
    from ..protect import PROTECT_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    skip = [Path(e) for e in exclude]
    paths = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.suffix.lower() in PROTECT_EXTENSIONS
        and not is_hidden(p.relative_to(folder))
        and not any(is_within(p, e) for e in skip)
    ]
    if not paths:
        raise FileNotFoundError(
            f"{folder}: no images (searched by suffix: {', '.join(sorted(PROTECT_EXTENSIONS))})"
        )
    return paths


def protected_names(clean_root: Path, clean: Sequence[Path], protected_root: Path) -> list[Path]:
    """Where ``fastprotect protect CLEAN_ROOT --out PROTECTED_ROOT`` writes each clean image
    as PNG: its path relative to the folder, with distinct names for ``x.jpg`` beside
    ``x.png`` (``x_jpg.png``)."""
    from ..protect import Job, _distinct

    jobs = [Job(c, protected_root / c.relative_to(clean_root).with_suffix(".png")) for c in clean]
    return [job.dest for job in _distinct(jobs)]


@dataclass
class Inputs:
    """The images of a mimicry test, and which protected image belongs to which clean one."""

    clean: list[Path]
    protected: list[Path]
    #: the protected version of each clean image, in ``clean``'s order; None when they do
    #: not pair up one to one (then ``unpaired`` says why, and DISTS is not scored)
    pairs: list[Path] | None
    unpaired: str | None = None


def gather_inputs(clean: str | Path, protected: str | Path | None, out: str | Path) -> Inputs:
    """Both sets of a run (:func:`find_images`, leaving ``out`` and, inside the clean
    folder, the protected folder aside), paired by name: a protected image belongs to the
    clean image of the same relative path (``protect --format keep``), else to the one that
    ``fastprotect protect`` would have written under that name, whatever its suffix
    (``a/b.jpg`` and ``a/b.png``, or ``a/b_jpg.png`` beside ``a/b.png``).
    ``protected=None``: the clean set only."""
    clean_root, out = Path(clean), Path(out)
    protected_root = Path(protected) if protected is not None else None
    skip = [out] + ([protected_root] if protected_root is not None else [])
    clean_paths = find_images(clean_root, exclude=skip)
    if protected_root is None:
        return Inputs(clean_paths, [], None, "no protected set")
    # OUT/protected_inputs (the harness's own) lies in OUT: only the samples are left out
    samples = [out / "clean", out / "protected"]
    protected_paths = find_images(
        protected_root, exclude=samples if is_within(protected_root, out) else [out]
    )

    def rel(path: Path, root: Path) -> str:
        return path.relative_to(root).as_posix()

    exact = {rel(p, protected_root): p for p in protected_paths}
    by_stem: dict[str, list[Path]] = {}
    for p in protected_paths:
        by_stem.setdefault(rel(p.with_suffix(""), protected_root), []).append(p)
    named = protected_names(clean_root, clean_paths, protected_root)
    pairs: list[Path | None] = []
    for c, dest in zip(clean_paths, named, strict=True):
        same = exact.get(rel(c, clean_root))
        candidates = by_stem.get(rel(dest.with_suffix(""), protected_root), [])
        pairs.append(same or (candidates[0] if len(candidates) == 1 else None))
    lost = [c for c, p in zip(clean_paths, pairs, strict=True) if p is None]
    used = {p for p in pairs if p is not None}
    extra = [p for p in protected_paths if p not in used]
    twice = len(used) < len(pairs) - len(lost)
    why = []
    if lost:
        why.append(f"{len(lost)} clean image(s) have no protected version by name (e.g. {lost[0]})")
    if twice:
        why.append("two clean images name the same protected image")
    if extra:
        why.append(f"{len(extra)} protected image(s) have no clean original (e.g. {extra[0]})")
    if why:
        return Inputs(clean_paths, protected_paths, None, "; ".join(why))
    return Inputs(clean_paths, pairs, pairs)


def check_run(settings: MimicSettings, metrics: Sequence[str], clean_images: int) -> None:
    """Refuse, before any fine-tuning, a run whose scores cannot be computed."""
    if "fid" in metrics and (clean_images < 2 or settings.samples < 2):
        raise ValueError(
            f"FID needs at least 2 clean images and 2 samples per run (prompts x seeds); "
            f"here {clean_images} and {settings.samples} (or leave fid out of the metrics)"
        )


def read_images(paths: Sequence[Path], resolution: int) -> Tensor:
    """The images at ``paths``, in that order, centre-cropped to a square and resized to
    ``resolution`` (antialiased bicubic): ``Nx3xRxR`` in [0, 1]."""
    from ..imageio import load_image

    out = []
    for p in paths:
        x = load_image(p).rgb
        s = min(x.shape[-2:])
        top, left = (x.shape[-2] - s) // 2, (x.shape[-1] - s) // 2
        x = x[:, top : top + s, left : left + s][None]
        x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", antialias=True)
        out.append(x.clamp(0, 1))
    return torch.cat(out)


def _text_conditioning(pipe, prompt: str, batch: int, resolution: int) -> dict[str, Tensor]:
    """The UNet's text (and, for SDXL, size) conditioning of ``prompt``, repeated ``batch``
    times; the text encoders are frozen, so this is computed once."""
    device = pipe.unet.device
    with torch.no_grad():
        if hasattr(pipe, "text_encoder_2"):  # SDXL
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            size = (resolution, resolution)
            time_ids = torch.tensor([[*size, 0, 0, *size]], device=device, dtype=embeds.dtype)
            return {
                "encoder_hidden_states": embeds.repeat(batch, 1, 1),
                "added_cond_kwargs": {
                    "text_embeds": pooled.repeat(batch, 1),
                    "time_ids": time_ids.repeat(batch, 1),
                },
            }
        embeds, _ = pipe.encode_prompt(
            prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds.repeat(batch, 1, 1)}


def finetune_lora(
    pipe,
    images: Tensor,
    settings: MimicSettings,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Add a LoRA adapter to ``pipe.unet`` and fine-tune it on ``images`` (``Nx3xRxR`` in
    [0, 1]) with the DreamBooth prompt; returns the loss of every step."""
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    unet, vae = pipe.unet, pipe.vae
    device, dtype = unet.device, unet.dtype
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    unet.requires_grad_(False)
    vae.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=settings.rank,
            lora_alpha=settings.rank,
            init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        ),
        adapter_name=ADAPTER,
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    # the adapter trains in float32 even when the pipeline runs in half precision
    for p in params:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-2)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = scheduler.config.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"the base model predicts {prediction!r}; epsilon and v_prediction are supported"
        )
    # SDXL's VAE overflows in float16 (its config says force_upcast): encode in float32
    vae_dtype = torch.float32 if getattr(vae.config, "force_upcast", False) else vae.dtype
    vae_was = vae.dtype
    vae.to(dtype=vae_dtype)
    with torch.no_grad():
        dist = [vae.encode((x[None] * 2 - 1).to(device, vae_dtype)).latent_dist for x in images]
    vae.to(dtype=vae_was)
    scale = vae.config.scaling_factor
    cond = _text_conditioning(
        pipe, settings.instance_prompt, settings.batch_size, settings.resolution
    )
    losses = []
    unet.train()
    for step in range(settings.steps):
        idx = torch.randint(len(images), (settings.batch_size,), generator=generator)
        latents = (
            torch.cat(
                [
                    dist[i].mean
                    + dist[i].std
                    * torch.randn(dist[i].mean.shape, generator=generator).to(device, vae_dtype)
                    for i in idx
                ]
            )
            * scale
        ).to(dtype)
        noise = torch.randn(latents.shape, generator=generator).to(device, dtype)
        t = torch.randint(
            scheduler.config.num_train_timesteps, (settings.batch_size,), generator=generator
        ).to(device)
        noisy = scheduler.add_noise(latents, noise, t)
        if prediction == "v_prediction":
            target = scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        pred = unet(noisy, t, **cond).sample
        loss = F.mse_loss(pred.float(), target.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the LoRA loss is {losses[-1]} at step {step}")
        if progress:
            progress(step, losses[-1])
    unet.eval()
    return losses


@torch.no_grad()
def sample(pipe, settings: MimicSettings) -> list:
    """One PIL image per (prompt, seed), prompts outer, at ``settings.resolution``."""
    images = []
    for prompt in settings.prompts:
        for seed in settings.seeds:
            generator = torch.Generator(device="cpu").manual_seed(seed)
            out = pipe(
                prompt,
                num_inference_steps=settings.inference_steps,
                guidance_scale=settings.guidance_scale,
                height=settings.resolution,
                width=settings.resolution,
                generator=generator,
                output_type="pil",
            )
            images.append(out.images[0])
    return images


def remove_adapter(pipe) -> None:
    """Take the fine-tuned adapter out, so the next run starts from the base model."""
    pipe.unet.unload_lora()


# --- scores ----------------------------------------------------------------------------------

#: ``(images, references) -> score``; FID and CLIP-IQA score a run's samples (references:
#: the clean training images), DISTS scores the protected inputs against the clean ones
Metric = Callable[[Tensor, Tensor], float]
METRICS = ("fid", "dists", "clip_iqa")
#: the scores of the inputs rather than of a run's samples
INPUT_METRICS = ("dists",)


def _fid(features: torch.nn.Module | int = 2048) -> Metric:
    from torchmetrics.image.fid import FrechetInceptionDistance

    def score(samples: Tensor, references: Tensor) -> float:
        fid = FrechetInceptionDistance(feature=features, normalize=True)
        fid.update(references, real=True)
        fid.update(samples, real=False)
        return float(fid.compute())

    return score


def _dists() -> Metric:
    from torchmetrics.image.dists import DeepImageStructureAndTextureSimilarity

    metric = DeepImageStructureAndTextureSimilarity()

    @torch.no_grad()
    def score(protected: Tensor, clean: Tensor) -> float:
        return float(metric(protected, clean))  # pairs, averaged

    return score


def _clip_iqa() -> Metric:
    from torchmetrics.multimodal import CLIPImageQualityAssessment

    metric = CLIPImageQualityAssessment(data_range=1.0)

    @torch.no_grad()
    def score(samples: Tensor, references: Tensor) -> float:
        return float(metric(samples).mean())

    return score


def build_metrics(
    names: Sequence[str], fid_features: torch.nn.Module | None = None
) -> dict[str, Metric]:
    """The named scores; ``fid_features`` replaces FID's Inception-v3 (tests use a small
    random network so that nothing is downloaded)."""
    unknown = set(names) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; known: {', '.join(METRICS)}")
    makers = {
        "fid": lambda: _fid(fid_features if fid_features is not None else 2048),
        "dists": _dists,
        "clip_iqa": _clip_iqa,
    }
    return {n: makers[n]() for n in names}


# --- the whole test --------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    """A score, or None where it is not a finite number (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _show(value: float | None) -> str:
    return "not a number" if value is None else f"{value:.4f}"


def _to_tensor(images: list) -> Tensor:
    import numpy as np

    return torch.stack(
        [
            torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
            for im in images
        ]
    )


def run_mimicry(
    pipe,
    clean: str | Path,
    protected: str | Path,
    out: str | Path,
    settings: MimicSettings,
    metrics: dict[str, Metric],
    base: str = "",
    log: Callable[[str], None] = print,
    protected_by: str | None = None,
) -> dict[str, Any]:
    """Fine-tune on ``clean`` and, from the same base, on ``protected``; sample and score
    both against the clean images; write ``out/results.json`` and ``out/{clean,protected}/``
    samples. ``protected_by`` records what protected the images. Returns the results
    document."""
    out = Path(out)
    inputs_found = gather_inputs(clean, protected, out)
    check_run(settings, list(metrics), len(inputs_found.clean))
    if inputs_found.unpaired and set(metrics) & set(INPUT_METRICS):
        log(f"mimic: the protected inputs will not be scored: {inputs_found.unpaired}")
    # both sets are read before any training: a bad image fails at once
    sets = {"clean": read_images(inputs_found.clean, settings.resolution)}
    sets["protected"] = read_images(inputs_found.protected, settings.resolution)
    reference = sets["clean"]
    for name in sets:  # an earlier run's samples must not pass for this one's
        for stale in (out / name).glob("p*_s*.png"):
            stale.unlink()
    runs: dict[str, RunResult] = {}
    for name, images in sets.items():
        log(f"mimic: fine-tuning on {len(images)} {name} images, {settings.steps} steps")
        t0 = time.perf_counter()
        every = max(1, settings.steps // 10)

        def progress(step: int, loss: float, name=name, every=every) -> None:
            if (step + 1) % every == 0 or step + 1 == settings.steps:
                log(f"mimic: {name} step {step + 1}/{settings.steps} loss {loss:.4f}")

        result = RunResult(images=len(images))
        result.losses = finetune_lora(pipe, images, settings, progress)
        log(f"mimic: sampling {len(settings.prompts)} prompts x {len(settings.seeds)} seeds")
        samples = sample(pipe, settings)
        remove_adapter(pipe)
        folder_out = out / name
        folder_out.mkdir(parents=True, exist_ok=True)
        for k, im in enumerate(samples):
            path = (
                folder_out
                / f"p{k // len(settings.seeds)}_s{settings.seeds[k % len(settings.seeds)]}.png"
            )
            im.save(path)
            result.samples.append(str(path.relative_to(out)))
        x = _to_tensor(samples)
        for metric, fn in metrics.items():
            if metric not in INPUT_METRICS:
                result.metrics[metric] = _finite(fn(x, reference))
                log(f"mimic: {name} {metric} {_show(result.metrics[metric])}")
        result.seconds = time.perf_counter() - t0
        runs[name] = result
    inputs: dict[str, Any] = {}
    for metric in sorted(set(metrics) & set(INPUT_METRICS)):
        if inputs_found.pairs is None:
            inputs[metric] = None
            continue
        inputs[metric] = _finite(metrics[metric](sets["protected"], reference))
        log(
            f"mimic: {metric} of the protected inputs against the clean ones "
            f"{_show(inputs[metric])}"
        )
    doc = {
        "kind": "mimicry",
        "base": base,
        "pipeline": type(pipe).__name__,
        "clean": str(clean),
        "protected": str(protected),
        "protected_by": protected_by,
        "settings": {
            **asdict(settings),
            "prompts": list(settings.prompts),
            "seeds": list(settings.seeds),
        },
        "metrics": list(metrics),
        "runs": {k: asdict(v) for k, v in runs.items()},
        "inputs": inputs,
        "unpaired": inputs_found.unpaired,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1, allow_nan=False))
    return doc
