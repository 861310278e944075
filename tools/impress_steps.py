"""How far IMPRESS moves one image, step by step: its inconsistency ``||D(E(x')) - x'||^2``
(what it minimises, the mean over the pixels), its distance from the protected image, and
how far it has moved from where it started.

    python tools/impress_steps.py                                        # as evaluate runs it
    python tools/impress_steps.py --mean-loss --adam-eps 1e-5 --lr 0.01  # before 2026-12-01

It runs :func:`fastprotect.eval.purify.impress` itself (its trace), on the first validation
image of ../shared/data/faces (or IMAGE) protected with the shipped model (JND strength
map); the autoencoder is TAEF2 and the distance ``1 - SSIM``, as ``evaluate`` has them here.
Prints every fourth step and the 8-bit result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from fastprotect.eval.purify import IMPRESS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", type=Path, help="default: the first validation face")
    ap.add_argument("--lr", type=float, default=IMPRESS["lr"])
    ap.add_argument("--adam-eps", type=float, default=IMPRESS["adam_eps"])
    ap.add_argument("--mean-loss", action="store_true", help="average the loss over the pixels")
    args = ap.parse_args(argv)

    from fastprotect.data.files import list_images, read_rgb, split_files
    from fastprotect.eval.purify import impress, ssim_distance
    from fastprotect.eval.run import evaluation_autoencoder
    from fastprotect.protect import load_protector

    image = args.image
    if image is None:
        faces = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
        image = split_files(list_images([faces]), 0.2)[1][0]
    if not image.is_file():
        print(f"impress_steps: {image}: no such file", file=sys.stderr)
        return 2
    enc, dec = evaluation_autoencoder("taef2")
    protector, _ = load_protector(None, "jnd")
    with torch.no_grad():
        y = protector(read_rgb(image)[None].float() / 255)
    loss = "mean" if args.mean_loss else "pixel sum"
    print(f"{image.name}: lr {args.lr:g}, Adam eps {args.adam_eps:g}, loss {loss}")
    started: list[torch.Tensor] = []

    def show(step: int, inconsistency: float, distance: float, x: torch.Tensor) -> None:
        if not started:
            started.append(x.clone())
        if step % 4 and step < IMPRESS["steps"] - 1:
            return
        moved = 255 * (x - started[0]).abs().mean().item()
        what = "8-bit result" if step == IMPRESS["steps"] else f"step {step:2d}"
        print(
            f"{what}: inconsistency {inconsistency:.5f}, 1 - SSIM {distance:.4f}, "
            f"moved {moved:.2f}/255 on average"
        )

    impress(
        y,
        enc.latent,
        dec,
        ssim_distance,
        lr=args.lr,
        adam_eps=args.adam_eps,
        pixel_sum=not args.mean_loss,
        trace=show,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
