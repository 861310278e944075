"""Does a smaller assignment resolution keep the same target and group choices?

The model's centroids and target entropies were computed at its training assignment
resolution; this encodes every image at smaller resolutions too, routes and assigns it with
the same rule, and prints how often target and group agree with the trained resolution,
with the encoder time per image. Two variants per resolution: the model as stored, and
with the target entropies recomputed at that resolution (what a model trained with that
assignment resolution would store; the histogram entropy of a smaller latent is biased
low, for the images and the targets alike).

    python tools/assignment_resolution.py --model runs/final/mop.safetensors \
        --data ../shared/data --sizes 256 192 160 128 96 64
"""

from __future__ import annotations

import argparse
import time

import torch

from fastprotect.data.files import list_images, read_rgb
from fastprotect.encoders import encoder_from_identity
from fastprotect.latents import resize_square, route
from fastprotect.modelfile import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", nargs="+", required=True, help="image folders (recursive)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 192, 160, 128, 96, 64])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mop, doc = load_model(args.model)
    encoder = encoder_from_identity(doc["encoder"])
    ref = mop.config.assignment_resolution
    sizes = sorted(set([ref, *args.sizes]), reverse=True)
    files = list_images(args.data)
    choices: dict[int, list[tuple[int, int]]] = {s: [] for s in sizes}
    refit: dict[int, list[tuple[int, int]]] = {s: [] for s in sizes}
    seconds = dict.fromkeys(sizes, 0.0)
    with torch.no_grad():
        y = mop.targets.float() / 255
        target_entropy = {s: mop.entropy(encoder.latent(resize_square(y, s))) for s in sizes}
        for f in files:
            x = read_rgb(f)[None].float() / 255
            for s in sizes:
                t0 = time.perf_counter()
                z = encoder.latent(resize_square(x, s))
                seconds[s] += time.perf_counter() - t0
                t = mop.route(z)
                choices[s].append((int(t), int(mop.assign(z, t))))
                t = route(mop.entropy(z), target_entropy[s])
                refit[s].append((int(t), int(mop.assign(z, t))))
    print(f"model {args.model}: trained assignment resolution {ref}, {len(files)} images")
    n = len(files)

    def agree(got: list[tuple[int, int]], key) -> str:
        same = sum(key(a) == key(b) for a, b in zip(got, choices[ref], strict=True))
        return f"{same}/{n} ({100 * same / n:.0f}%)"

    print(
        "| resolution | same target | same target and group | same target, entropies at "
        "this resolution | same target and group, entropies at this resolution | "
        "encoder ms/image |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for s in sizes:
        print(
            f"| {s} | {agree(choices[s], lambda c: c[0])} | {agree(choices[s], tuple)} | "
            f"{agree(refit[s], lambda c: c[0])} | {agree(refit[s], tuple)} | "
            f"{1000 * seconds[s] / n:.1f} |"
        )


if __name__ == "__main__":
    main()
