"""How far IMPRESS moves one image, step by step: its inconsistency ``||D(E(x')) - x'||^2``
(what it minimises), its distance from the protected image, and how far it has moved.

    python tools/impress_steps.py                                  # the settings evaluate uses
    python tools/impress_steps.py --adam-eps 1e-5 --lr 0.01        # the earlier setting

The image is the first validation image of ../shared/data/faces (or IMAGE), protected with
the shipped model (JND strength map) and shrunk to a shorter side of 512 as ``impress``
does; the autoencoder is TAEF2, the distance ``1 - SSIM``, the schedule and the starting
noise those of :func:`fastprotect.eval.purify.impress`. Prints every fourth step and the
last.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from fastprotect.eval.purify import IMPRESS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", type=Path, help="default: the first validation face")
    ap.add_argument("--lr", type=float, default=IMPRESS["lr"])
    ap.add_argument("--adam-eps", type=float, default=IMPRESS["adam_eps"])
    ap.add_argument("--steps", type=int, default=IMPRESS["steps"])
    args = ap.parse_args(argv)

    from fastprotect.data.files import list_images, read_rgb, split_files
    from fastprotect.eval.purify import ssim_distance
    from fastprotect.eval.run import evaluation_autoencoder
    from fastprotect.protect import load_protector
    from fastprotect.views import attacker_resize

    image = args.image
    if image is None:
        faces = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "faces"
        image = split_files(list_images([faces]), 0.2)[1][0]
    enc, dec = evaluation_autoencoder("taef2")
    protector, _ = load_protector(None, "jnd")
    with torch.no_grad():
        y = protector(read_rgb(image)[None].float() / 255)
    if min(y.shape[-2:]) > IMPRESS["max_side"]:
        y = attacker_resize(y, IMPRESS["max_side"])
    y = (y.clamp(0, 1) * 255).round() / 255
    print(
        f"{image.name} at {y.shape[-1]}x{y.shape[-2]}: lr {args.lr:g}, Adam eps {args.adam_eps:g}"
    )
    g = torch.Generator().manual_seed(0)
    start = (y + IMPRESS["noise"] * torch.randn(y.shape, generator=g)).clamp(0, 1)
    xp = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([xp], lr=args.lr, eps=args.adam_eps)
    h, w = y.shape[-2:]
    for i in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = 1e-5 + (args.lr - 1e-5) * 0.5 * (1 + math.cos(math.pi * i / args.steps))
        recon = dec(enc.latent(xp))[..., :h, :w]
        inconsistency = ((recon - xp) ** 2).mean()
        d = ssim_distance(xp, y).mean()
        loss = inconsistency + IMPRESS["alpha"] * (d - IMPRESS["eps"]).clamp_min(0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            xp.clamp_(0, 1)
        if i % 4 == 0 or i == args.steps - 1:
            moved = 255 * (xp - start).abs().mean().item()
            print(
                f"step {i:2d}: inconsistency {inconsistency.item():.5f}, 1 - SSIM {d.item():.4f}, "
                f"moved {moved:.2f}/255 on average"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
