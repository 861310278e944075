"""How the entropy rule routes real images to the targets (and which repetitions spread them).

For each image under ``--data`` (recursive), encodes it at the assignment resolution,
computes ``H(z)`` and reports, per folder, how many images each target wins. With
``--search`` it also ranks triplets of repetition counts by the smallest share any target
gets, which is how the default ``low``/``mid``/``high`` repetitions were chosen.

    python tools/target_routing.py --data ../shared/data --resolution 256 --search
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

import torch

from fastprotect.data.files import list_images, read_rgb
from fastprotect.encoders import build_encoder
from fastprotect.latents import latent_entropy, resize_square
from fastprotect.targets import REPEATS, procedural_target


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--encoder", default="taef2")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--bins", type=int, default=64)
    p.add_argument("--range", type=float, nargs=2, default=(-4.0, 4.0))
    p.add_argument("--search", action="store_true")
    args = p.parse_args()
    enc = build_encoder(args.encoder)
    a, (lo, hi) = args.resolution, args.range
    files = list_images([args.data])
    z = torch.cat(
        [enc.latent(resize_square(read_rgb(f, 2 * a)[None].float() / 255, a)) for f in files]
    )
    h = latent_entropy(z, args.bins, lo, hi)
    print(
        f"{len(files)} images, encoder {args.encoder}, assignment {a}px, "
        f"{args.bins} bins on [{lo}, {hi}]"
    )
    print(
        f"image H(z) per channel, mean over channels: min {h.mean(1).min():.2f} "
        f"median {h.mean(1).median():.2f} max {h.mean(1).max():.2f} bits"
    )

    def target_h(reps: int) -> torch.Tensor:
        return latent_entropy(enc.latent(procedural_target(reps, a)[None]), args.bins, lo, hi)[0]

    names = list(REPEATS)
    ht = torch.stack([target_h(REPEATS[n]) for n in names])
    won = (h[:, None] - ht[None]).abs().sum(-1).argmin(1)
    print(
        "\ndefault targets: "
        + ", ".join(
            f"{n}={REPEATS[n]}x{REPEATS[n]} (H {ht[i].mean():.2f})" for i, n in enumerate(names)
        )
    )
    by_folder: dict[str, Counter] = {}
    for f, t in zip(files, won.tolist(), strict=True):
        by_folder.setdefault(f.parent.name, Counter())[names[t]] += 1
    for folder, c in sorted(by_folder.items()):
        print(f"  {folder:<10} " + "  ".join(f"{n}:{c[n]:>3}" for n in names))
    total = Counter(names[t] for t in won.tolist())
    print(f"  {'all':<10} " + "  ".join(f"{n}:{total[n]:>3}" for n in names))

    if args.search:
        reps = [1, 2, 3, 4, 6, 8, 12, 16]
        hs = {r: target_h(r) for r in reps}
        rows = []
        for tri in itertools.combinations(reps, 3):
            d = torch.stack([(h - hs[r]).abs().sum(1) for r in tri], 1)
            counts = torch.bincount(d.argmin(1), minlength=3).tolist()
            rows.append((min(counts), tri, counts))
        rows.sort(key=lambda r: (-r[0], r[1]))
        print("\nrepetition triplets ranked by the fewest images any target wins:")
        for m, tri, counts in rows[:6]:
            print(f"  {tri}: {counts} (min {m})")


if __name__ == "__main__":
    main()
