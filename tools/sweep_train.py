"""Short training runs over a grid of overrides; prints val metrics per run.

Each run is the real ``fit`` (same data, split, seed and steps) followed by one
validation pass on the held-out split. Used to choose the learning rate, lambda and the
layers of the multi-layer loss (docs/method.md records the numbers).

    python tools/sweep_train.py --config configs/taef2.yaml --steps 120 \
        --run "lr1e-3 --model.lr=0.001" --run "lr3e-3 --model.lr=0.003"
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
import time
from pathlib import Path

import torch

from fastprotect.cli import make_cli
from fastprotect.encoders import TinyAutoencoderDecoder


def one(
    config: str, steps: int, overrides: list[str], keep: Path | None = None
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        model_file = keep if keep is not None else Path(tmp) / "model.safetensors"
        cli = make_cli(
            [
                "--config",
                config,
                f"--trainer.max_steps={steps}",
                "--trainer.limit_val_batches=0",
                "--trainer.logger=false",
                "--trainer.callbacks=[]",
                "--trainer.enable_checkpointing=false",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp}",
                f"--model.model_file={model_file}",
                *overrides,
            ],
            run=False,
        )
        t0 = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        fit_s = time.perf_counter() - t0
        cli.trainer.limit_val_batches = 1.0
        (metrics,) = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)
        metrics["val/disruption_db"] = disruption(cli.model, cli.datamodule)
    return {**metrics, "fit_s": fit_s}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * torch.log10(1 / (a - b).pow(2).mean()).item()


@torch.no_grad()
def disruption(model, datamodule) -> float:
    """Mean ``PSNR(D(E(x)), x) - PSNR(D(E(x_hat)), x)`` in dB over the val crops (TAEF2 decoder)."""
    if model.encoder.identity()["name"] != "taef2" or datamodule.val_set is None:
        return float("nan")
    dec = TinyAutoencoderDecoder("taef2")
    drops = []
    for item in datamodule.val_set:
        x, t = item["image"][None], item["target"][None]
        k = item["groups"][None].gather(1, t[:, None])[:, 0]
        x_hat = model.mop.apply(x, t, k)
        clean, protected = (dec(model.encoder.latent(y)) for y in (x, x_hat))
        drops.append(psnr(clean, x) - psnr(protected, x))
    return sum(drops) / len(drops)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/taef2.yaml")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--keep", type=Path, help="write each run's model file into this folder")
    p.add_argument(
        "--run",
        action="append",
        required=True,
        help="one run: its name, then CLI overrides, in one quoted string",
    )
    args = p.parse_args()
    rows = []
    for spec in args.run:
        name, *overrides = shlex.split(spec)
        keep = args.keep / f"{name}.safetensors" if args.keep else None
        m = one(args.config, args.steps, overrides, keep)
        rows.append((name, m))
        print(f"RUN {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(m.items())), flush=True)
    keys = [
        "val/latent_pull",
        "val/disruption_db",
        "val/latent",
        "val/multilayer",
        "val/psnr",
        "fit_s",
    ]
    print(f"\n{'run':<16}" + "".join(f"{k:>18}" for k in keys))
    for name, m in rows:
        print(f"{name:<16}" + "".join(f"{m.get(k, float('nan')):>18.4f}" for k in keys))


if __name__ == "__main__":
    main()
