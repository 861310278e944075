"""The pieces of the demo report's time, each against its alternative, in one process.

    FASTPROTECT_WEIGHTS_DIR=../shared/weights python tools/bench_report_passes.py

Prints, as markdown, median seconds of ``--repeats`` runs after a warm-up:

- one TAEF2 encoder and one decoder pass at 512x512 with the autoencoder's ReLUs in place
  (as shipped) and not in place, the two settings alternated twice;
- kornia SSIM (``fastprotect.eval.metrics.ssim``) of a 512x512 image given as the permuted,
  channels-last view ``load_image`` decodes to, and as a contiguous copy (``ssim`` makes
  its inputs contiguous, so the permuted case calls kornia directly);
- three 512x384 encoder passes one by one and as one batch of three.

Timings are for this machine as it is: run it with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import kornia
import torch

from fastprotect.encoders.taesd import TinyAutoencoderDecoder, TinyAutoencoderEncoder
from fastprotect.eval.metrics import ssim


def _median(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: oneDNN builds its kernels for this shape
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _relus(modules: list[torch.nn.Module], inplace: bool) -> None:
    for m in modules:
        for r in m.modules():
            if isinstance(r, torch.nn.ReLU):
                r.inplace = inplace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n = args.repeats
    g = torch.Generator().manual_seed(0)
    enc, dec = TinyAutoencoderEncoder("taef2"), TinyAutoencoderDecoder("taef2")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {n}\n")
    with torch.no_grad():
        x = torch.rand(1, 3, 512, 512, generator=g)
        z = enc.latent(x)
        print("| 512x512 pass | ReLUs not in place | in place (shipped) |")
        print("|---|---:|---:|")
        rows: dict[str, list[list[float]]] = {"encoder": [[], []], "decoder": [[], []]}
        for _ in range(2):
            for col, inplace in enumerate((False, True)):
                _relus([enc, dec], inplace)
                rows["encoder"][col].append(_median(lambda: enc.latent(x), n))
                rows["decoder"][col].append(_median(lambda: dec(z), n))
        _relus([enc, dec], True)
        for name, (plain, inplace) in rows.items():
            cells = " | ".join(" / ".join(f"{v:.3f} s" for v in c) for c in (plain, inplace))
            print(f"| {name} | {cells} |")

        hwc = torch.rand(1, 512, 512, 3, generator=g)
        a = hwc.permute(0, 3, 1, 2)  # how load_image's tensors are laid out
        b = (a + 0.02 * torch.randn(a.shape, generator=g)).clamp(0, 1)
        permuted = _median(lambda: kornia.metrics.ssim(a, b, 11, max_val=1.0), n)
        contiguous = _median(lambda: ssim(a, b), n)
        print("\n| SSIM, 512x512 | permuted view | contiguous (shipped) |")
        print(f"|---|---:|---:|\n| kornia | {permuted:.3f} s | {contiguous:.3f} s |")

        three = torch.rand(3, 3, 384, 512, generator=g)
        single = _median(lambda: [enc.latent(three[i : i + 1]) for i in range(3)], n)
        batched = _median(lambda: enc.latent(three), n)
        print("\n| three 512x384 encoder passes | one by one (shipped) | one batch |")
        print(f"|---|---:|---:|\n| TAEF2 | {single:.3f} s | {batched:.3f} s |")


if __name__ == "__main__":
    main()
