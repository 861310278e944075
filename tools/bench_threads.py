"""Seconds per image of the shipped model's eager ``protect`` at one torch thread count.

    python tools/bench_threads.py N     # N torch threads; 512x512 and 2048x2048, median of 7

Run it once per thread count, each in its own process, to compare them on a machine whose
cores are busy with other work (docs/performance.md, "When the cores are busy").
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from fastprotect.protect import load_protector


def main() -> None:
    n = int(sys.argv[1])
    torch.set_num_threads(n)
    protector, _ = load_protector(strength="jnd")
    for side in (512, 2048):
        x = torch.rand(1, 3, side, side)
        with torch.no_grad():
            protector.protect(x)  # warm-up
            times = []
            for _ in range(7):
                t = time.perf_counter()
                protector.protect(x)
                times.append(time.perf_counter() - t)
        print(
            f"threads {n} size {side}: median {statistics.median(times):.4f} s "
            f"(min {min(times):.4f}, max {max(times):.4f})"
        )


if __name__ == "__main__":
    main()
