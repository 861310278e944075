"""Does a smaller assignment resolution keep the same target and group choices?

The model's centroids and target entropies were computed at its training assignment
resolution; this encodes every image at smaller resolutions too, routes and assigns it with
the same rule, and prints how often target and group agree with the trained resolution,
with the encoder time per image.

    python tools/assignment_resolution.py --model runs/final/mop.safetensors \
        --data ../shared/data --sizes 256 192 160 128 96 64
"""

from __future__ import annotations

import argparse
import time

import torch

from fastprotect.data.files import list_images, read_rgb
from fastprotect.encoders import encoder_from_identity
from fastprotect.latents import resize_square
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
    seconds = dict.fromkeys(sizes, 0.0)
    with torch.no_grad():
        for f in files:
            x = read_rgb(f)[None].float() / 255
            for s in sizes:
                t0 = time.perf_counter()
                z = encoder.latent(resize_square(x, s))
                seconds[s] += time.perf_counter() - t0
                t = mop.route(z)
                choices[s].append((int(t), int(mop.assign(z, t))))
    print(f"model {args.model}: trained assignment resolution {ref}, {len(files)} images")
    print("| resolution | same target | same target and group | encoder ms/image |")
    print("|---:|---:|---:|---:|")
    for s in sizes:
        same_t = sum(a[0] == b[0] for a, b in zip(choices[s], choices[ref], strict=True))
        same = sum(a == b for a, b in zip(choices[s], choices[ref], strict=True))
        n = len(files)
        print(
            f"| {s} | {same_t}/{n} ({100 * same_t / n:.0f}%) | {same}/{n} ({100 * same / n:.0f}%)"
            f" | {1000 * seconds[s] / n:.1f} |"
        )


if __name__ == "__main__":
    main()
