"""How the training-time stand-in for AdverseCleaner compares with the real filters.

    python tools/filter_surrogate.py ../shared/data/objects ../shared/data/faces \
        ../shared/data/cartoon --per-domain 2 --passes 8 16 32

AdverseCleaner runs 64 bilateral filters and 4 guided filters on the *published* image;
the attacker then resizes it to the view. ``FilterRobustLoss`` trains on the attacker's
view, so it filters there: ``n`` bilateral passes, then 4 guided filters of radius 2.
For the first ``--per-domain`` validation images of each folder, protected with
``--model`` and rounded to 8 bits as a published file is, this prints the decode
disruption (dB, TAEF2 at the view, against the clean image's view, as
``fastprotect evaluate`` defines it) of the protected image, of the real filters on the
published image, and of the stand-in with each ``--passes`` at the view; each beside the
same filter applied to the unprotected image, whose own blur the difference removes.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from fastprotect.data.files import read_rgb
from fastprotect.eval.metrics import disruption
from fastprotect.eval.purify import adverse_cleaner
from fastprotect.eval.run import evaluation_autoencoder, select_files
from fastprotect.losses import FilterRobustLoss
from fastprotect.protect import load_protector
from fastprotect.views import attacker_resize


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", help="image folders (one per domain)")
    ap.add_argument("--model", default=None, help="model file or release (default: shipped)")
    ap.add_argument("--per-domain", type=int, default=2)
    ap.add_argument("--passes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--view", type=int, default=512)
    args = ap.parse_args()

    protector, _ = load_protector(args.model, "jnd")
    encoder, decoder = evaluation_autoencoder("taef2")
    if decoder is None:
        raise SystemExit("the TAEF2 decoder's weights are needed for disruption")
    files = select_files([Path(d) for d in args.data], per_domain=args.per_domain)

    def q(x: torch.Tensor) -> torch.Tensor:  # published as 8 bits
        return (x * 255).round() / 255

    rows: dict[str, list[float]] = {}

    def add(name: str, value: torch.Tensor) -> None:
        rows.setdefault(name, []).append(float(value))

    with torch.no_grad():
        for f in files:
            x = read_rgb(f)[None].float() / 255
            x_hat = q(protector(x))
            xv, xhv = attacker_resize(x, args.view), attacker_resize(x_hat, args.view)

            def d(seen: torch.Tensor, clean: torch.Tensor = xv) -> torch.Tensor:
                if seen.shape != clean.shape:  # a published image: the attacker's resize
                    seen = attacker_resize(seen, args.view)
                return disruption(clean, seen, encoder.latent, decoder)[0]

            add("protected", d(xhv))
            add("AdverseCleaner on the published image: unprotected", d(adverse_cleaner(x)))
            add("AdverseCleaner on the published image: protected", d(adverse_cleaner(x_hat)))
            for n in args.passes:
                term = FilterRobustLoss(passes=(n, n))
                add(f"stand-in, {n} passes at the view: unprotected", d(term.purify(xv, n)))
                add(f"stand-in, {n} passes at the view: protected", d(term.purify(xhv, n)))
            print(f"{f.name}: {tuple(x.shape[-2:])}", flush=True)

    print(f"\n{len(files)} images, view {args.view}, model {args.model or 'shipped'}")
    width = max(len(k) for k in rows)
    for name, values in rows.items():
        print(f"{name:<{width}}  {statistics.mean(values):6.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
