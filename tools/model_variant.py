"""Model files made from other model files or checkpoints, for experiments.

    python tools/model_variant.py from-checkpoint RUN/checkpoints/epoch=3-step=800.ckpt \
        RUN/model_step800.safetensors [--encoder taef2]
    python tools/model_variant.py split MODEL.safetensors --part colour OUT.safetensors
    python tools/model_variant.py luma-eta MODEL.safetensors 2 OUT.safetensors
    python tools/model_variant.py inference MODEL.safetensors OUT.safetensors --luma-s-min 0
    python tools/model_variant.py view MODEL.safetensors 820 OUT.safetensors
    python tools/model_variant.py publish-cap MODEL.safetensors 1.25 OUT.safetensors

``from-checkpoint`` writes the mixture of a ``fit`` checkpoint (its tensors, its
hyperparameters, the encoder named by ``--encoder``, which checkpoints do not hold) as a
model file, with the run's ``s_min`` (and luma ``s_min``) as the model's own: how an
interrupted run is evaluated at any saved step. ``split`` keeps one part of each
perturbation: ``luma``, the luma change ``Y(d) = 0.299 d_R + 0.587 d_G + 0.114 d_B`` on
all three channels, or ``colour``, ``d - Y(d)`` (not clipped here; ``protect`` clips to
the budget). Used to find which part of a pattern the eye sees (docs/evaluation.md,
"Colour or luma"). ``luma-eta`` cuts a colour-first model's luma part to a smaller bound
(in 1/255 steps; 0: colour only), the same model otherwise: its luma part was trained
clipped to its own bound, so a lower one is the trained part clipped harder, never an
untrained one. ``inference`` sets the model's own inference defaults: ``--s-min``, and
``--luma-s-min``, the strength floor of the luma part alone (``Protector.luma_s_min``;
``none`` removes it), and ``--colour-weight``, how much the JND strength map counts a
colour change (``JNDMap.colour_weight``; 0 removes it). ``view`` keeps a view model's
canvases but defines them at another view size: on an image whose shorter side is S the
canvas is enlarged S / view times in the published file, and an attacker at the trained
view sees it scaled by trained view / new view (how a finer published pattern would fare,
without retraining). ``publish-cap`` sets a view model's ``publish_cap`` (``MoPConfig``:
the canvas enlarged at most that many times in the file; 0 removes it). None overwrites
an existing file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from fastprotect.encoders import build_encoder
from fastprotect.filters import luma
from fastprotect.modelfile import load_model, save_model
from fastprotect.module import MoPModule


def from_checkpoint(ckpt: Path, out: Path, encoder: str) -> Path:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    # the run's module rebuilt from its hyperparameters (LightningCLI adds private keys such
    # as ``_instantiator``), so the mixture's config is made exactly as in training
    hp = {k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")}
    enc = build_encoder(encoder)
    mop = MoPModule(enc, **hp).mop
    prefix = "mop."
    mop.load_state_dict(
        {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    )
    own = {
        "s_min": hp.get("strength_s_min"),
        "luma_s_min": hp.get("strength_luma_s_min"),
        "colour_weight": hp.get("strength_colour_weight") or None,  # 0: the map's default
    }
    own = {k: v for k, v in own.items() if v is not None}
    return save_model(
        mop,
        out,
        enc.identity(),
        {"steps": int(state["global_step"]), "from_checkpoint": str(ckpt)},
        inference=own or None,
    )


def _write(mop, doc: dict, out: Path, step: str, what: dict, inference=...) -> Path:
    """``mop`` as a model file with ``doc``'s encoder and inference settings (or those
    given), its recipe noting this ``step``."""
    recipe = {**doc.get("recipe", {}), step: what}
    own = doc.get("inference") if inference is ... else inference
    return save_model(mop, out, doc["encoder"], recipe, inference=own)


def split(model: Path, part: str, out: Path) -> Path:
    mop, doc = load_model(model)
    with torch.no_grad():
        for p in (mop.global_delta, mop.group_delta):
            flat = p.view(-1, 3, *p.shape[-2:])
            y = luma(flat)
            flat.copy_(y.expand_as(flat) if part == "luma" else flat - y)
    return _write(mop, doc, out, "split", {"from": str(model), "part": part})


def cut_luma(model: Path, luma_eta_255: float, out: Path) -> Path:
    mop, doc = load_model(model)
    c = mop.config
    if not c.luma_eta:
        raise ValueError(f"{model}: not a colour-first model (it has no luma bound to cut)")
    if not 0 <= luma_eta_255 / 255 <= c.luma_eta:
        raise ValueError(
            f"{model}: luma bound {luma_eta_255}/255 must be between 0 and the model's own "
            f"{c.luma_eta * 255:.2f}/255"
        )
    # a new config, checked again; no luma left means no luma high-pass either
    new = luma_eta_255 / 255
    mop.config = dataclasses.replace(c, luma_eta=new, luma_highpass=c.luma_highpass if new else 0.0)
    return _write(mop, doc, out, "luma_eta_cut", {"from": str(model), "to": luma_eta_255})


def _floor(text: str) -> str:
    """``--luma-s-min``: a number, or ``none``."""
    if text != "none":
        float(text)  # raises ValueError, which argparse reports as an invalid value
    return text


def set_inference(
    model: Path,
    out: Path,
    s_min: float | None,
    luma_s_min: str | None,
    colour_weight: float | None = None,
) -> Path:
    mop, doc = load_model(model)
    own = dict(doc.get("inference") or {})
    if s_min is not None:
        own["s_min"] = s_min
    if luma_s_min == "none":
        own.pop("luma_s_min", None)
    elif luma_s_min is not None:
        own["luma_s_min"] = float(luma_s_min)
    if colour_weight == 0:
        own.pop("colour_weight", None)  # the JND map's own default: luma only
    elif colour_weight is not None:
        own["colour_weight"] = colour_weight
    for key, value in own.items():
        if not 0 <= value <= 1:
            raise ValueError(f"{key} must be between 0 and 1, got {value}")
    return _write(mop, doc, out, "inference_set", {"from": str(model), **own}, own or None)


def change_view(model: Path, view: int, out: Path) -> Path:
    mop, doc = load_model(model)
    if not mop.config.view:
        raise ValueError(f"{model}: not a view model (its perturbations are stretched)")
    if view < 8:
        raise ValueError(f"the view is a shorter side in pixels (at least 8), got {view}")
    old = mop.config.view
    mop.config = dataclasses.replace(mop.config, view=view)
    return _write(mop, doc, out, "view_changed", {"from": str(model), "view": old})


def set_publish_cap(model: Path, cap: float, out: Path) -> Path:
    mop, doc = load_model(model)
    # a new config, checked again (a cap needs a view model and is 0 or at least 1)
    mop.config = dataclasses.replace(mop.config, publish_cap=cap)
    return _write(mop, doc, out, "publish_cap_set", {"from": str(model), "cap": cap})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("from-checkpoint", help="a fit checkpoint's mixture as a model file")
    c.add_argument("checkpoint", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--encoder", default="taef2", help="the run's encoder (default: taef2)")
    s = sub.add_parser("split", help="keep the luma or the colour part of a model")
    s.add_argument("model", type=Path)
    s.add_argument("--part", choices=["luma", "colour"], required=True)
    s.add_argument("out", type=Path)
    e = sub.add_parser("luma-eta", help="cut a colour-first model's luma part to a lower bound")
    e.add_argument("model", type=Path)
    e.add_argument("luma_eta", type=float, help="the new bound, in 1/255 steps (0: colour only)")
    e.add_argument("out", type=Path)
    i = sub.add_parser("inference", help="set a model's own inference defaults")
    i.add_argument("model", type=Path)
    i.add_argument("out", type=Path)
    i.add_argument("--s-min", type=float, help="strength floor of the whole perturbation")
    i.add_argument(
        "--luma-s-min",
        type=_floor,
        help="strength floor of the luma part alone (a number, or none)",
    )
    i.add_argument(
        "--colour-weight",
        type=float,
        help="how much the JND strength map counts a colour change beside a luma change, "
        "0 to 1 (0: luma only, the map's default; 0.05 was looked at for the colour-only "
        "v2); the LPIPS map sees colour of its own and ignores it",
    )
    v = sub.add_parser("view", help="define a view model's canvases at another view size")
    v.add_argument("model", type=Path)
    v.add_argument("view", type=int, help="the new view size (shorter side, px)")
    v.add_argument("out", type=Path)
    c2 = sub.add_parser("publish-cap", help="cap how much a view model's canvas is enlarged")
    c2.add_argument("model", type=Path)
    c2.add_argument("cap", type=float, help="at least 1 (0: no cap)")
    c2.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"model_variant: {args.out} exists; choose another name", file=sys.stderr)
        return 2
    source = args.checkpoint if args.command == "from-checkpoint" else args.model
    if not source.is_file():
        print(f"model_variant: {source}: no such file", file=sys.stderr)
        return 2
    try:
        if args.command == "from-checkpoint":
            try:
                path = from_checkpoint(args.checkpoint, args.out, args.encoder)
            except RuntimeError as err:  # the state does not fit the encoder's mixture
                raise ValueError(
                    f"{args.checkpoint} does not fit a mixture for --encoder {args.encoder} "
                    f"(trained with another encoder?): {str(err).splitlines()[0]}"
                ) from err
        elif args.command == "split":
            path = split(args.model, args.part, args.out)
        elif args.command == "luma-eta":
            path = cut_luma(args.model, args.luma_eta, args.out)
        elif args.command == "view":
            path = change_view(args.model, args.view, args.out)
        elif args.command == "publish-cap":
            path = set_publish_cap(args.model, args.cap, args.out)
        else:
            path = set_inference(
                args.model, args.out, args.s_min, args.luma_s_min, args.colour_weight
            )
    except (ValueError, KeyError) as err:
        print(f"model_variant: {err}", file=sys.stderr)
        return 2
    print(f"model_variant: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
