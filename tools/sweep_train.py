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

from fastprotect.cli import make_cli


def one(config: str, steps: int, overrides: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cli = make_cli(
            [
                "--config", config,
                f"--trainer.max_steps={steps}",
                "--trainer.limit_val_batches=0",
                "--trainer.logger=false",
                "--trainer.callbacks=[]",
                "--trainer.enable_checkpointing=false",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp}",
                f"--model.model_file={tmp}/model.safetensors",
                *overrides,
            ],
            run=False,
        )
        t0 = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        fit_s = time.perf_counter() - t0
        cli.trainer.limit_val_batches = 1.0
        (metrics,) = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)
    return {**metrics, "fit_s": fit_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/taef2.yaml")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--run", action="append", required=True,
                   help="one run: its name, then CLI overrides, in one quoted string")
    args = p.parse_args()
    rows = []
    for spec in args.run:
        name, *overrides = shlex.split(spec)
        m = one(args.config, args.steps, overrides)
        rows.append((name, m))
        print(f"RUN {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(m.items())), flush=True)
    keys = ["val/latent_pull", "val/latent", "val/multilayer", "val/psnr", "fit_s"]
    print(f"\n{'run':<28}" + "".join(f"{k:>16}" for k in keys))
    for name, m in rows:
        print(f"{name:<28}" + "".join(f"{m.get(k, float('nan')):>16.4f}" for k in keys))


if __name__ == "__main__":
    main()
