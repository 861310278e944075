"""Quick A/B of view-model training settings on TAEF2, in minutes on a CPU.

Trains one target's global canvas (K = 0) for ``--steps`` Adam steps on 40 random training
images (crops as the DataModule makes them, batch 4) with the settings given as JSON,
then scores it on 8 validation images (their top-left square at 256 px, standing for a
256-px crop of a 512-px view), with the canvas published at 2x (bicubic, as protect maps
it) and brought back by a bilinear resize, at attacker scales 1 and 2, at full strength
and through the JND map at ``s_min`` 0.5: latent pull, decode disruption, PSNR and
low-frequency PSNR, beside ±8/255 sign noise at the view. A screening tool for choosing a
recipe, not the evaluation (``fastprotect evaluate --view``).

    python tools/view_ab.py '{"vis": 1.0, "smin": 0.5}' --name A --steps 60

JSON keys: ``vis`` (VisibilityLoss weight; absent: no term), ``chroma`` and ``lf`` (its
colour and low-frequency weights), ``smin`` (train through the JND map), ``views`` (false:
a legacy canvas), ``va`` (AttackerViews arguments), ``targets``, ``lr``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fastprotect.data.datamodule import square_crop
from fastprotect.data.files import list_images, read_all, split_files
from fastprotect.encoders import build_encoder
from fastprotect.encoders.taesd import TinyAutoencoderDecoder
from fastprotect.eval.baselines import sign_noise
from fastprotect.eval.metrics import lowfreq_psnr, psnr
from fastprotect.losses import LatentLoss, MultiLayerLoss, VisibilityLoss
from fastprotect.module import MoPModule
from fastprotect.strength import JNDMap
from fastprotect.views import AttackerViews

DATA = ["../shared/data/objects", "../shared/data/faces", "../shared/data/cartoon"]


def _crops(images, n: int, g: torch.Generator) -> torch.Tensor:
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (), generator=g))]
        h, w = img.shape[-2:]
        side = int(min(h, w) * (0.35 + 0.65 * torch.rand((), generator=g).item()))
        top = int(torch.randint(h - side + 1, (), generator=g))
        left = int(torch.randint(w - side + 1, (), generator=g))
        out.append(square_crop(img, top, left, side, 256))
    return torch.stack(out)


def _model(cfg: dict) -> MoPModule:
    losses = [LatentLoss(), MultiLayerLoss()]
    if cfg.get("vis"):
        losses.append(
            VisibilityLoss(
                cfg["vis"], chroma=cfg.get("chroma", 1.0), low_frequency=cfg.get("lf", 1.0)
            )
        )
    views = cfg.get("views", True)
    return MoPModule(
        build_encoder("taef2"),
        targets=cfg.get("targets", ["high"]),
        groups=0,
        resolution=256,
        view=512 if views else 0,
        views=AttackerViews(**cfg.get("va", {})) if views else None,
        strength_s_min=cfg.get("smin"),
        losses=losses,
        lr=cfg.get("lr", 0.003),
    )


@torch.no_grad()
def score(m: MoPModule, x: torch.Tensor) -> dict:
    enc, dec = m.encoder, TinyAutoencoderDecoder("taef2")
    publish = AttackerViews(scales=(1, 1), publish=(2, 2), filters=["bilinear"])
    jnd = JNDMap()
    z = enc.latent(x)
    rec = psnr(x, dec(z).clamp(0, 1))
    res = {}
    for s in (1.0, 2.0):
        d = publish.view_of(m.mop.global_delta[0], 256, s, 2.0, "bilinear")[None]
        y = publish.view_of(m.mop.targets[0].float() / 255, 256, s, 1.0, "bilinear", filtered=False)
        zy = enc.latent(y[None])
        for mode in ("full", "jnd"):
            dd = d if mode == "full" else d * (1 - 0.5 * jnd(x, (x + d).clamp(0, 1)))
            xh = (x + dd).clamp(0, 1)
            zh = enc.latent(xh)
            pull = (zh - zy).pow(2).flatten(1).sum(1) / (z - zy).pow(2).flatten(1).sum(1)
            res[f"s{s:g}_{mode}"] = {
                "pull": round(pull.mean().item(), 3),
                "disruption": round((rec - psnr(x, dec(zh).clamp(0, 1))).mean().item(), 2),
                "psnr": round(psnr(x, xh).mean().item(), 2),
                "lf_psnr": round(lowfreq_psnr(x, xh).mean().item(), 2),
            }
    xs = sign_noise(x, 8 / 255)
    res["sign"] = {
        "disruption": round((rec - psnr(x, dec(enc.latent(xs)).clamp(0, 1))).mean().item(), 2),
        "psnr": round(psnr(x, xs).mean().item(), 2),
        "lf_psnr": round(lowfreq_psnr(x, xs).mean().item(), 2),
    }
    return res


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("settings", help="JSON, see above")
    p.add_argument("--name", default="run")
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    cfg = json.loads(args.settings)
    m = _model(cfg)
    m.prepare_targets()
    train, val = split_files(list_images(DATA), 0.2)
    g = torch.Generator().manual_seed(0)
    train = [train[i] for i in torch.randperm(len(train), generator=g)[:40]]
    val = [val[i] for i in torch.randperm(len(val), generator=g)[:8]]
    _, train_images = read_all(train, 512)
    _, val_images = read_all(val, 512)
    opt = torch.optim.Adam(m.mop.parameters(), lr=m.lr)
    zeros = torch.zeros(4, dtype=torch.long)
    t0 = time.perf_counter()
    for step in range(args.steps):
        x = _crops(train_images, 4, g)
        x_hat, y = m.protect_views(x, zeros, zeros)
        out = m._terms(m._loss_inputs(x, x_hat, zeros, y))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.mop.project_()
        if step % 20 == 0:
            print(args.name, step, {k: round(v.item(), 4) for k, v in out.items()}, flush=True)
    seconds = time.perf_counter() - t0
    x = torch.stack([square_crop(v, 0, 0, min(v.shape[-2:]), 256) for v in val_images])
    print("RESULT", args.name, round(seconds), json.dumps(score(m, x)), flush=True)


if __name__ == "__main__":
    main()
