"""Pack a trained model into the compact form that ships in the package, and show that the
compact form changes no protected pixel by more than 1/255.

    python tools/pack_model.py --model runs/taef2_v2_iso_cap/model.safetensors \
        --out fastprotect/assets/fastprotect-taef2-v2.safetensors --version 2 \
        --data ../shared/data [--max-side 768] [--strength auto]

Writes ``--out`` with ``fastprotect.modelfile.compact_copy`` (float16 perturbations, the
same header plus ``release``, and ``--s-min`` as the model's own lowest strength, its
other inference settings kept; refuses to overwrite), then protects every image under
``--data`` (longer side shrunk to ``--max-side``) with the full-precision and the compact
model and prints, as markdown: the two file sizes, the max float difference in units of
1/255, the max 8-bit difference in levels and the share of pixels that differ; and the
compact file's sha256 (to pin in ``fastprotect/release.py``). Exits 1 when the difference
is above 1/255, or the check fails or is interrupted (the compact file is then removed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_parity import Parity, read_longer_side  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="full-precision model file")
    ap.add_argument("--out", required=True, help="compact model file to write")
    ap.add_argument("--name", default="fastprotect-taef2")
    ap.add_argument("--version", required=True)
    ap.add_argument("--data", nargs="+", required=True, help="image files or folders")
    ap.add_argument("--max-side", type=int, default=768)
    ap.add_argument("--strength", default="auto", choices=["auto", "lpips", "jnd", "off"])
    ap.add_argument(
        "--s-min", type=float, help="the released model's own lowest strength (default: kept)"
    )
    args = ap.parse_args()

    from fastprotect.data.files import list_images
    from fastprotect.encoders import encoder_from_identity
    from fastprotect.errors import USER_ERRORS
    from fastprotect.imageio import to_uint8
    from fastprotect.modelfile import compact_copy, load_model
    from fastprotect.protect import configure, load_protector
    from fastprotect.weights import sha256_file

    out = Path(args.out)
    if out.exists():
        sys.exit(f"{out} exists; remove it first (a released file is never replaced in place)")
    try:
        # the images first: a bad --data must not leave an unchecked release file behind
        files = list_images(args.data)
        if not files:
            sys.exit(f"no images under {' '.join(args.data)}: nothing to check the compact form on")
        mop, doc = load_model(args.model)
    except USER_ERRORS as e:
        sys.exit(f"pack_model: {e}")
    # --s-min changes the floor only; the model's luma floor and colour weight stay
    inference = (
        {**doc.get("inference", {}), "s_min": args.s_min} if args.s_min is not None else None
    )
    compact_copy(args.model, out, {"name": args.name, "version": str(args.version)}, inference)
    try:
        # the full-precision model at the packed file's settings: only the storage differs
        if inference is not None:
            doc["inference"] = inference
        full, strength = configure(encoder_from_identity(doc["encoder"]), mop, doc, args.strength)
        small, _ = load_protector(out, args.strength)
        stats = Parity()
        t = time.perf_counter()
        with torch.no_grad():
            for i, f in enumerate(files):
                x = read_longer_side(f, args.max_side)[None].float().div(255)
                ref, y = full(x), small(x)
                stats.add(255 * (y - ref).abs().max().item(), to_uint8(y[0]), to_uint8(ref[0]))
                print(f"[{i + 1}/{len(files)}] {f.name}", file=sys.stderr)
    except BaseException:  # interrupted or failed: no unchecked release file is left
        out.unlink(missing_ok=True)
        raise
    mib = 1024 * 1024
    print(
        f"images: {stats.images} under {' '.join(args.data)} (longer side <= "
        f"{args.max_side}), strength map {strength}, {time.perf_counter() - t:.0f} s"
    )
    print()
    print("| file | MiB | max float diff (1/255) | max 8-bit diff | pixels differing |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {args.model} (float32) | {Path(args.model).stat().st_size / mib:.2f} | 0 | 0 | 0 |")
    print(
        f"| {out} (float16) | {out.stat().st_size / mib:.2f} | {stats.max_float:.4f} | "
        f"{stats.max_levels} | {100 * stats.differing / max(stats.pixels, 1):.4f}% |"
    )
    print()
    print(f"sha256 {sha256_file(out)}")
    if not stats.within():
        out.unlink()
        sys.exit("the compact form differs by more than 1/255: not written")


if __name__ == "__main__":
    main()
