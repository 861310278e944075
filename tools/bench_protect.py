"""Protection speed and memory: eager ``protect``, the TorchScript graph, and per-image PGD.

    python tools/bench_protect.py [--model runs/final/mop.safetensors] [--device cpu]

(without ``--model``: the shipped model).

For each image size (a photo resized to ``S x S``): median seconds per image over
``--repeats`` runs after one warm-up, a per-stage breakdown of the eager module, the
TorchScript graph (on the CPU frozen and optimised for inference after loading, as
``load_exported(..., optimize=True)`` does), PGD on the same encoder (``--pgd-steps``
measured steps, the median step time times 100, stated as such), file decoding and PNG
encoding on their own line, and peak memory: each configuration runs in its own process,
so its peak RSS (CPU) or peak allocated GPU memory is its own. Speed-ups are ratios within
this one run. The last lines say which speed targets (2-core CPU, TAEF2) are met.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

STAGES = ("resize", "encoder", "choose", "perturbation", "strength", "add")
TARGETS = {"s512": 0.25, "s2048": 1.0, "rss2048_mb": 1024, "speedup": 1000}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def _image(path: str | None, size: int) -> np.ndarray:
    if not path:  # the file itself: importing skimage.data would inflate the RSS numbers
        spec = importlib.util.find_spec("skimage")
        path = Path(spec.origin).parent / "data" / "astronaut.png"
    im = Image.open(path).convert("RGB")
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC))


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    # VmHWM, not ru_maxrss: a child's ru_maxrss keeps the parent's RSS from before exec.
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> dict:
    """One configuration in this process; returns its numbers."""
    from fastprotect.export import load_exported
    from fastprotect.imageio import load_image, save_image
    from fastprotect.protect import load_protector

    torch.set_num_threads(args.threads)
    dev, n = args.device, args.repeats
    rgb = _image(args.image, args.size)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255).to(dev)
    res: dict = {"mode": args.worker, "size": args.size}
    if args.worker == "io":
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.png"
            Image.fromarray(rgb).save(src)
            dec, enc = [], []
            for i in range(n + 1):
                image, t_dec = _timed(lambda: load_image(src), "cpu")
                _, t_enc = _timed(
                    lambda i=i, im=image: save_image(im, im.rgb, Path(tmp) / f"o{i}.png"), "cpu"
                )
                dec.append(t_dec)
                enc.append(t_enc)
        res["decode"], res["encode"] = statistics.median(dec[1:]), statistics.median(enc[1:])
        return res
    protector, strength = load_protector(args.model, args.strength)
    protector = protector.to(dev)
    res["strength"] = strength
    res["rss_loaded_mb"] = _peak_mb(dev)
    with torch.no_grad():
        if args.worker == "eager":
            # Whole forward passes first, so the peak is that of protecting alone.
            totals = [_timed(lambda: protector(x), dev)[1] for _ in range(n + 1)]
            res["seconds"] = statistics.median(totals[1:])
            res["peak_mb"] = _peak_mb(dev)
            stages = {s: [] for s in STAGES}
            for _ in range(n + 1):
                if protector.needs_choice:
                    xa, t0 = _timed(lambda: protector.mop.assignment_input(x), dev)
                    z, t1 = _timed(lambda xa=xa: protector.encoder.latent(xa), dev)
                    (tg, gr), t2 = _timed(lambda z=z: protector.choose_from_latent(z), dev)
                else:  # a universal model: no encoder pass, nothing to choose
                    xa = z = None
                    t0 = t1 = 0.0
                    (tg, gr), t2 = _timed(lambda: protector.choose(x), dev)
                d, t3 = _timed(lambda tg=tg, gr=gr: protector.resized_perturbation(tg, gr, x), dev)
                d, t4 = _timed(lambda d=d: protector.scale(x, d), dev)
                _, t5 = _timed(lambda d=d: (x + d).clamp(0, 1), dev)
                for s, t in zip(STAGES, (t0, t1, t2, t3, t4, t5), strict=True):
                    stages[s].append(t)
                del xa, z, d
            res["stages"] = {s: statistics.median(v[1:]) for s, v in stages.items()}
        elif args.worker == "torchscript":
            if dev == "cpu":
                graph = load_exported(args.graph, optimize=True)
            else:
                graph = load_exported(args.graph).to(dev)
            times = [_timed(lambda: graph(x), dev)[1] for _ in range(n + 1)]
            res["seconds"] = statistics.median(times[1:])
    if args.worker == "pgd":
        res.update(_pgd(protector, x, args))
    res.setdefault("peak_mb", _peak_mb(dev))
    return res


def _pgd(protector, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """Per-image PGD on the same encoder (``fastprotect.eval.baselines.pgd``, the per-image
    baseline MoP replaces): pull the latent of ``x + delta`` to the routed target's latent.
    Each step is one forward and one backward pass through the encoder at full size; one
    step is timed per call."""
    from fastprotect.eval.baselines import pgd

    enc, mop = protector.encoder, protector.mop
    with torch.no_grad():
        z_y = enc.latent(mop.target_image(protector.choose(x)[0], x.shape[-2:]))
    times = [
        _timed(lambda: pgd(x, enc.latent, z_y, mop.config.eta, steps=1), args.device)[1]
        for _ in range(args.pgd_steps + 1)
    ]
    per_step = statistics.median(times[1:])
    return {"pgd_step": per_step, "seconds": 100 * per_step}


def run_worker(args: argparse.Namespace, mode: str, size: int, graph: Path | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--size",
        str(size),
        "--model",
        str(args.model),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        "--pgd-steps",
        str(args.pgd_steps),
        "--strength",
        args.strength,
    ]
    if args.image:
        cmd += ["--image", args.image]
    if graph:
        cmd += ["--graph", str(graph)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"worker {mode} {size} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", help="model file (.safetensors; default: the shipped model)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pgd-steps", type=int, default=3, help="measured PGD steps (x100 reported)")
    ap.add_argument("--strength", default="auto", choices=["auto", "lpips", "jnd", "off"])
    ap.add_argument("--image", help="photo to resize (default: scikit-image's astronaut)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--graph", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        from fastprotect.release import default_model

        args.model = str(default_model())
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from fastprotect.export import export_protector
    from fastprotect.protect import load_protector

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    graph = Path(tmp.name) / "graph.pt"
    protector, strength = load_protector(args.model, args.strength)
    export_protector(protector, graph)
    if args.device == "cpu":
        cpu = (os.cpu_count(), torch.get_num_threads())
        where = f"CPU ({cpu[0]} cores visible, {cpu[1]} torch threads)"
    else:
        where = torch.cuda.get_device_name(torch.device(args.device))
    print(
        f"device: {where}; torch {torch.__version__}; model {args.model}; "
        f"strength map: {strength}; median of {args.repeats} after 1 warm-up"
    )
    rows = {}
    for size in args.sizes:
        rows[size] = {
            m: run_worker(args, m, size, graph if m == "torchscript" else None)
            for m in ("io", "eager", "torchscript", "pgd")
        }
        print(f"  measured {size}x{size}", file=sys.stderr)
    mem = "peak GPU MiB" if args.device != "cpu" else "peak RSS MiB"
    print(
        f"\n| image | eager s | TorchScript s | PGD-100 s (step x 100) | PGD/eager | "
        f"PGD/TorchScript | eager {mem} | TorchScript {mem} | PGD {mem} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, r in rows.items():
        e, t, p = r["eager"], r["torchscript"], r["pgd"]
        print(
            f"| {size}x{size} | {e['seconds']:.3f} | {t['seconds']:.3f} | {p['seconds']:.1f} "
            f"({p['pgd_step']:.3f} x 100) | {p['seconds'] / e['seconds']:.0f}x | "
            f"{p['seconds'] / t['seconds']:.0f}x | {e['peak_mb']:.0f} | {t['peak_mb']:.0f} | "
            f"{p['peak_mb']:.0f} |"
        )
    print("\nEager stages (s): " + ", ".join(STAGES) + "; files (not in the model time):")
    print("\n| image | " + " | ".join(STAGES) + " | PNG decode | PNG encode |")
    print("|---|" + "---:|" * (len(STAGES) + 2))
    for size, r in rows.items():
        st = r["eager"]["stages"]
        print(
            f"| {size}x{size} | "
            + " | ".join(f"{st[s]:.3f}" for s in STAGES)
            + f" | {r['io']['decode']:.3f} | {r['io']['encode']:.3f} |"
        )
    print(
        f"\nmemory after loading the model, before protecting: "
        f"{rows[args.sizes[0]]['eager']['rss_loaded_mb']:.0f} MiB"
    )
    print("\nSpeed targets (2-core CPU, TAEF2):")
    checks = []
    if 512 in rows:
        checks.append(("512x512 eager <= 0.25 s", rows[512]["eager"]["seconds"], TARGETS["s512"]))
    if 2048 in rows:
        checks.append(
            ("2048x2048 eager <= 1.0 s", rows[2048]["eager"]["seconds"], TARGETS["s2048"])
        )
        checks.append(
            ("2048x2048 peak memory <= 1 GB", rows[2048]["eager"]["peak_mb"], TARGETS["rss2048_mb"])
        )
    for name, value, limit in checks:
        print(f"  {'met' if value <= limit else 'NOT met'}: {name} (measured {value:.3g})")
    worst = min(r["pgd"]["seconds"] / r["eager"]["seconds"] for r in rows.values())
    print(
        f"  {'met' if worst >= TARGETS['speedup'] else 'NOT met'}: >= 1000x faster than "
        f"PGD-100 at every size (smallest ratio {worst:.0f}x)"
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
