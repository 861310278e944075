"""Training throughput (images/s) of the real fit loop, on the shared images.

Runs ``fastprotect fit`` in-process with the given config for a few steps and times the
optimizer steps after a warm-up (data loading, forward, backward, Adam, projection).

    python tools/bench_train.py --config configs/taef2.yaml --resolution 256 --batch-size 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch

from fastprotect.cli import make_cli


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._t)


def run(config: str, resolution: int, batch_size: int, steps: int, warmup: int) -> float:
    """Median seconds per optimizer step after ``warmup`` steps."""
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        cli = make_cli(
            [
                "--config",
                config,
                f"--model.resolution={resolution}",
                f"--data.batch_size={batch_size}",
                f"--trainer.max_steps={steps + warmup}",
                "--trainer.limit_val_batches=0",
                "--trainer.logger=false",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp}",
                f"--model.model_file={tmp}/model.safetensors",
            ],
            run=False,
        )
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
    return statistics.median(timer.times[warmup:])


def cli_main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/taef2.yaml")
    p.add_argument("--resolution", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, config {args.config}")
    print(f"{'R':>5} {'batch':>5} {'s/step':>8} {'images/s':>9}")
    for r in args.resolution:
        step = run(args.config, r, args.batch_size, args.steps, args.warmup)
        print(f"{r:>5} {args.batch_size:>5} {step:>8.2f} {args.batch_size / step:>9.2f}")


if __name__ == "__main__":
    cli_main()
