"""The mimicry test on a GPU: DreamBooth-LoRA on clean images and on their protected versions.

    python tools/mimic_lora.py --clean my_art/ --out outputs/mimic
    python tools/mimic_lora.py --clean my_art/ --protected my_art_protected/ --out outputs/mimic
    python tools/mimic_lora.py --clean my_art/ --kind sdxl \\
        --base stabilityai/stable-diffusion-xl-base-1.0 --out outputs/mimic_sdxl
    python tools/report.py outputs/mimic/results.json     # outputs/mimic/results.md

Without ``--protected`` the clean images are first protected with the shipped model (or
``--model``) into ``OUT/protected_inputs/``, as ``fastprotect protect`` writes them. Then
LoRA is fine-tuned on each set from the same base model, each fine-tune samples the same
prompts with the same seeds, and the samples are scored against the clean images (FID,
DISTS, CLIP-IQA; ``fastprotect.eval.mimic`` explains each). Needs the full install
(``bash tools/setup.sh``), the model hub (or ``--base`` a local ``save_pretrained`` folder)
and, at the default 500 steps and 512 px, a GPU: a CPU takes hours.

Not run on real weights in this repository (no GPU or hub access where it was written);
its test runs it end to end on a tiny random pipeline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_BASE = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}


def main(argv: list[str] | None = None) -> int:
    from fastprotect.eval.mimic import METRICS, PROMPTS, MimicSettings

    d = MimicSettings()
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--clean", required=True, type=Path, help="folder of the artist's images")
    ap.add_argument(
        "--protected", type=Path, help="their protected versions (default: protect --clean)"
    )
    ap.add_argument("--model", help="fastprotect model that protects --clean (default: shipped)")
    ap.add_argument("--out", required=True, type=Path, help="results folder")
    ap.add_argument("--kind", choices=["sd15", "sdxl"], default="sd15")
    ap.add_argument(
        "--base",
        help="hub id or a local save_pretrained folder (default: "
        + "; ".join(f"{k}: {v}" for k, v in DEFAULT_BASE.items())
        + ")",
    )
    ap.add_argument("--steps", type=int, default=d.steps, help="LoRA steps (default: %(default)s)")
    ap.add_argument("--rank", type=int, default=d.rank, help="LoRA rank (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=d.lr, help="(default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--resolution", type=int, help="default: 512 for sd15, 1024 for sdxl")
    ap.add_argument("--instance-prompt", default=d.instance_prompt)
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds))
    ap.add_argument("--inference-steps", type=int, default=d.inference_steps)
    ap.add_argument("--guidance", type=float, default=d.guidance_scale)
    ap.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of the fine-tuning's image choice, noise and timesteps (default: %(default)s)",
    )
    ap.add_argument(
        "--metrics",
        nargs="+",
        default=list(METRICS),
        help=f"any of {', '.join(METRICS)}, or none (default: all; each downloads weights once)",
    )
    ap.add_argument("--device", help="default: cuda when available, else cpu")
    ap.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="pipeline precision; bfloat16 on GPUs that have it (float16 is not offered: "
        "LoRA training in float16 needs a gradient scaler, which this harness does not use)",
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT/results.json (and the samples and protected inputs "
        "beside it)",
    )
    args = ap.parse_args(argv)

    import shutil

    import torch

    from fastprotect.eval.mimic import (
        build_metrics,
        check_run,
        gather_inputs,
        load_pipeline,
        protected_names,
        run_mimicry,
    )

    def refuse(message: str) -> int:
        print(f"mimic: {message}", file=sys.stderr)
        return 2

    if (args.out / "results.json").exists() and not args.overwrite:
        return refuse(f"{args.out / 'results.json'} exists (--overwrite replaces it)")
    if args.protected is not None and args.model is not None:
        return refuse("--model protects --clean when no --protected is given; not both")
    metrics = [] if args.metrics == ["none"] else args.metrics
    try:
        settings = MimicSettings(
            instance_prompt=args.instance_prompt,
            prompts=args.prompts,
            seeds=args.seeds,
            resolution=args.resolution or (1024 if args.kind == "sdxl" else 512),
            steps=args.steps,
            lr=args.lr,
            rank=args.rank,
            batch_size=args.batch_size,
            inference_steps=args.inference_steps,
            guidance_scale=args.guidance,
            seed=args.seed,
        )
        # both folders are read before anything is downloaded, protected or fine-tuned
        found = gather_inputs(args.clean, args.protected, args.out)
        check_run(settings, metrics, len(found.clean))
        scorers = build_metrics(metrics)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
        return refuse(str(e))
    # an earlier run's results go first: its samples and inputs are replaced below, and a
    # run that fails must not leave results that name them
    (args.out / "results.json").unlink(missing_ok=True)
    protected, protected_by = args.protected, None
    if protected is None:
        from fastprotect.protect import Job, load_protector, protect_files

        # the harness's own folder: emptied, so that only this run's clean set is in it
        protected = args.out / "protected_inputs"
        if protected.exists():
            shutil.rmtree(protected)
        protector, strength = load_protector(args.model)
        protected_by = f"fastprotect protect --model {args.model or '(shipped)'} ({strength})"
        dests = protected_names(args.clean, found.clean, protected)
        jobs = [Job(c, d) for c, d in zip(found.clean, dests, strict=True)]
        summary = protect_files(protector, jobs, overwrite=True)
        print(
            f"mimic: protected inputs ({strength} strength map): {summary.line()}", file=sys.stderr
        )
        if summary.failed:
            print(f"mimic: could not protect: {summary.failed}", file=sys.stderr)
            return 1
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = args.base or DEFAULT_BASE[args.kind]
    pipe = load_pipeline(base, args.kind, device, getattr(torch, args.dtype))
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    doc = run_mimicry(
        pipe, args.clean, protected, args.out, settings, scorers, base, log, protected_by
    )
    for name, run in doc["runs"].items():
        scores = ", ".join(
            f"{k} {'not a number' if v is None else f'{v:.4f}'}" for k, v in run["metrics"].items()
        )
        print(
            f"mimic: {name}: final loss {run['losses'][-1]:.4f}; {scores or 'not scored'}",
            file=sys.stderr,
        )
    print(f"mimic: results in {args.out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
