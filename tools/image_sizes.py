"""How large the images of a split are against an attacker's view: per domain, the
shorter side divided by the view (the *publish factor*: how many published pixels carry
one view pixel, and so how much a view model's pattern is enlarged in the published file).

    python tools/image_sizes.py ../shared/data/objects ../shared/data/faces \
        ../shared/data/cartoon ../shared/data/extras --split val --view 512

With ``--min-side N`` it prints instead the paths of the images whose shorter side is at
least N pixels, one per line (``--first K``: the first K of them, in file order), to
gather the large ones of a split.

The split is the one ``fit`` and ``evaluate`` use (``--val-fraction``, default 0.2);
the domain is the first folder below each data root, as ``evaluate`` reports it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image

from fastprotect.data.files import list_images, split_files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", type=Path, help="image folders, one per domain")
    ap.add_argument("--split", choices=["val", "train", "all"], default="val")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--view", type=int, default=512)
    ap.add_argument("--min-side", type=int, help="list the images at least this large")
    ap.add_argument("--first", type=int, help="with --min-side: list at most this many")
    args = ap.parse_args(argv)
    listed = 0
    factors: dict[str, list[float]] = defaultdict(list)
    for root in args.data:
        files = list_images([root])
        if args.split != "all":
            train, val = split_files(files, args.val_fraction)
            files = val if args.split == "val" else train
        for f in files:
            with Image.open(f) as im:
                side = min(im.size)
            if args.min_side is not None:
                if side >= args.min_side and (args.first is None or listed < args.first):
                    print(f)
                    listed += 1
                continue
            factors[root.name].append(side / args.view)
    if args.min_side is not None:
        return 0
    print(f"| domain | images | publish factor at view {args.view}: median | min | max |")
    print("|---|---:|---:|---:|---:|")
    for domain, fs in factors.items():
        print(
            f"| {domain} | {len(fs)} | {statistics.median(fs):.2f} | {min(fs):.2f} | "
            f"{max(fs):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
