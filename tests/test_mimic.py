"""The LoRA mimicry harness, end to end on tiny random pipelines built here (no downloads)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import REPO, needs_weights

pytest.importorskip("peft", reason="the mimicry harness needs the full install (peft)")
pytest.importorskip("transformers", reason="the mimicry harness needs the full install")

from fastprotect.eval.mimic import (  # noqa: E402
    ADAPTER,
    MimicSettings,
    build_metrics,
    check_run,
    finetune_lora,
    gather_inputs,
    remove_adapter,
    run_mimicry,
)


def _tokenizer(tmp: Path):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=32)


def _text_config(vocab: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=32,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def tiny_pipeline(tmp: Path, kind: str = "sd15"):
    """A randomly initialised SD-1.5- or SDXL-shaped pipeline, a few MB."""
    from diffusers import (
        DDPMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = _tokenizer(tmp)
    unet_kw = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=4,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, steps_offset=1, clip_sample=False)
    if kind == "sd15":
        unet = UNet2DConditionModel(cross_attention_dim=32, **unet_kw)
        return StableDiffusionPipeline(
            vae=_vae(),
            text_encoder=CLIPTextModel(_text_config(len(tok))),
            tokenizer=tok,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    unet = UNet2DConditionModel(
        cross_attention_dim=64,  # both text encoders' hidden states, concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # size ids + pooled text
        **unet_kw,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(len(tok))),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(len(tok))),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=scheduler,
    )


def _images(folder: Path, n: int = 3, seed: int = 0, noise: float = 0.0, h=40, w=48) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        base = np.linspace(0, 255, h * w * 3).reshape(h, w, 3) * (k + 1) / n
        arr = base + noise * rng.choice([-1, 1], base.shape)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"{k}.png")
    return folder


SMALL = dict(
    resolution=32,
    steps=4,
    inference_steps=2,
    prompts=("an artwork in sks style", "a cat"),
    seeds=(0, 1),
)


class Features(torch.nn.Module):
    """A small fixed random feature network for FID (the real one is Inception-v3)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 6)
        )

    def forward(self, x):
        return self.net(x.float())


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_lora_learns_and_is_removed(tmp_path, kind):
    pipe = tiny_pipeline(tmp_path, kind)
    pipe.set_progress_bar_config(disable=True)
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    images = torch.rand(2, 3, 32, 32)
    losses = finetune_lora(pipe, images, MimicSettings(**SMALL, lr=1e-2))
    assert len(losses) == 4 and all(np.isfinite(losses))
    # lora_B starts at zero: non-zero means the adapter learned
    lora_b = {k: v for k, v in pipe.unet.state_dict().items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())
    assert ADAPTER in pipe.unet.peft_config
    remove_adapter(pipe)
    assert not hasattr(pipe.unet, "peft_config")
    after = pipe.unet.state_dict()
    assert set(after) == set(base)  # the adapter is gone and the base weights untouched
    assert all(torch.equal(after[k], base[k]) for k in base)


def test_run_mimicry_scores_both_runs_and_report_renders(tmp_path):
    pipe = tiny_pipeline(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    # at the working size already, so that pixels pair up exactly
    clean = _images(tmp_path / "clean", h=32, w=32)
    protected = _images(tmp_path / "protected", noise=8, h=32, w=32)
    metrics = build_metrics(["fid"], fid_features=Features())
    # DISTS needs VGG weights from the network: a stand-in checks the pairing
    metrics["dists"] = lambda a, b: float((a - b).abs().amax())
    lines = []
    doc = run_mimicry(
        pipe,
        clean,
        protected,
        tmp_path / "out",
        MimicSettings(**SMALL),
        metrics,
        "tiny",
        lines.append,
    )
    assert set(doc["runs"]) == {"clean", "protected"}
    for run in doc["runs"].values():
        assert run["images"] == 3 and len(run["losses"]) == 4
        assert len(run["samples"]) == 4  # 2 prompts x 2 seeds
        assert all((tmp_path / "out" / s).is_file() for s in run["samples"])
        assert np.isfinite(run["metrics"]["fid"]) and run["metrics"]["fid"] >= 0
    # the inputs' score pairs each protected image with its clean original: +-8 levels
    assert doc["inputs"]["dists"] == pytest.approx(8 / 255, abs=1e-6)
    assert "dists" not in doc["runs"]["clean"]["metrics"]
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == doc
    assert any("clean step 4/4" in line for line in lines)
    assert Image.open(tmp_path / "out" / "clean" / "p0_s0.png").size == (32, 32)
    run = subprocess.run(
        [sys.executable, str(REPO / "tools" / "report.py"), str(tmp_path / "out" / "results.json")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    page = (tmp_path / "out" / "results.md").read_text()
    assert "| clean | 3 |" in page and "| protected | 3 |" in page
    assert "fid (higher = better protection)" in page and "Protected minus clean: fid" in page
    assert "DISTS of the protected training images against the clean ones: 0.0314, both" in page
    assert (tmp_path / "out" / "results_samples.png").is_file()


@needs_weights  # the shipped model protects the clean set
def test_command_line_protects_the_clean_set_itself(tmp_path):
    """tools/mimic_lora.py on a saved tiny pipeline: protects --clean with the shipped
    model when no --protected is given, fine-tunes twice, writes the results."""
    pipe = tiny_pipeline(tmp_path)
    pipe.save_pretrained(tmp_path / "pipe")
    clean = _images(tmp_path / "clean", n=2)
    spec = importlib.util.spec_from_file_location("mimic_lora", REPO / "tools" / "mimic_lora.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = ["--clean", str(clean), "--out", str(tmp_path / "out"), "--base", str(tmp_path / "pipe")]
    args += ["--steps", "2", "--resolution", "32", "--inference-steps", "2", "--seeds", "0"]
    args += ["--prompts", "a", "--metrics", "none", "--device", "cpu"]
    assert tool.main(args) == 0
    protected = sorted((tmp_path / "out" / "protected_inputs").glob("*.png"))
    assert [p.name for p in protected] == ["0.png", "1.png"]
    orig = np.asarray(Image.open(clean / "0.png")).astype(int)
    diff = np.abs(np.asarray(Image.open(protected[0])).astype(int) - orig)
    assert 0 < diff.max() <= 8
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["runs"]["protected"]["images"] == 2 and doc["metrics"] == []
    assert doc["protected_by"].startswith("fastprotect protect --model (shipped)")
    assert tool.main(args) == 2  # results exist: not overwritten without --overwrite
    # another artist's set in the same folder: nothing of the first set may stay in it
    (clean / "1.png").unlink()
    assert tool.main([*args, "--overwrite", "--seed", "3"]) == 0
    assert [p.name for p in (tmp_path / "out" / "protected_inputs").iterdir()] == ["0.png"]
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["runs"]["clean"]["images"] == doc["runs"]["protected"]["images"] == 1
    assert doc["settings"]["seed"] == 3


def _tool():
    spec = importlib.util.spec_from_file_location("mimic_lora", REPO / "tools" / "mimic_lora.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _touch_png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, format="PNG")


def test_inputs_are_found_as_protect_finds_them_and_paired_by_name(tmp_path):
    clean, prot, out = tmp_path / "clean", tmp_path / "prot", tmp_path / "clean" / "mimic"
    for name in ["a.jpg", "a.png", "sub/b.png", ".hidden.png", "__MACOSX/._c.png", "notes.txt"]:
        _touch_png(clean / name)
    _touch_png(out / "clean" / "p0_s0.png")  # the run's own output, inside the clean folder
    # what `fastprotect protect clean --out prot` writes, and in another format for sub/b
    for name in ["a.png", "a_jpg.png", "sub/b.webp"]:
        _touch_png(prot / name)
    found = gather_inputs(clean, prot, out)
    assert [p.relative_to(clean).as_posix() for p in found.clean] == ["a.jpg", "a.png", "sub/b.png"]
    assert [p.relative_to(prot).as_posix() for p in found.pairs] == [
        "a_jpg.png",
        "a.png",
        "sub/b.webp",
    ]
    assert found.protected == found.pairs and found.unpaired is None
    # names that do not match: trained on as they are, not paired (DISTS is not scored)
    (prot / "sub" / "b.webp").rename(prot / "sub" / "z.webp")
    found = gather_inputs(clean, prot, out)
    assert found.pairs is None and len(found.protected) == 3
    assert "1 clean image(s) have no protected version" in found.unpaired
    assert "1 protected image(s) have no clean original (e.g. " in found.unpaired
    assert "z.webp)" in found.unpaired
    # `protect --format keep` output (x.jpg stays x.jpg beside x.png), inside the clean
    # folder as `protect .` writes it by default: never taken as clean images
    art = tmp_path / "art"
    for name in ["x.jpg", "x.png", "protected/x.jpg", "protected/x.png"]:
        _touch_png(art / name)
    found = gather_inputs(art, art / "protected", tmp_path / "mimic")
    assert [p.name for p in found.clean] == ["x.jpg", "x.png"]
    assert [p.relative_to(art).as_posix() for p in found.pairs] == [
        "protected/x.jpg",
        "protected/x.png",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no images"):
        gather_inputs(clean, tmp_path / "empty", out)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        gather_inputs(clean, tmp_path / "nope", out)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"steps": 0}, "steps must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"rank": -1}, "rank must be at least 1"),
        ({"resolution": 36}, "multiple of 8"),
        ({"seeds": (0, 0)}, "seeds repeat"),
        ({"prompts": ()}, "at least one prompt"),
    ],
)
def test_settings_that_would_fail_late_are_refused_at_once(change, message):
    with pytest.raises(ValueError, match=message):
        MimicSettings(**change)


def test_fid_needs_two_images_and_two_samples():
    check_run(MimicSettings(prompts=("a",), seeds=(0, 1)), ["fid"], 2)
    check_run(MimicSettings(prompts=("a",), seeds=(0,)), ["clip_iqa"], 1)
    with pytest.raises(ValueError, match="FID needs at least 2 clean images"):
        check_run(MimicSettings(), ["fid"], 1)
    with pytest.raises(ValueError, match="here 3 and 1"):
        check_run(MimicSettings(prompts=("a",), seeds=(0,)), ["fid", "dists"], 3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "0"], "steps must be at least 1"),
        (["--resolution", "36"], "multiple of 8"),
        (["--protected", "nope"], "nope: not a folder"),
        (["--protected", "EMPTY"], "no images"),
        (["--protected", "CLEAN", "--model", "fastprotect-taef2-v1"], "not both"),
        (["--metrics", "fid"], "FID needs at least 2 clean images"),
    ],
)
def test_command_line_refuses_before_loading_anything(tmp_path, capsys, extra, message):
    clean = tmp_path / "clean"
    _touch_png(clean / "a.png")
    (tmp_path / "empty").mkdir()
    extra = [{"EMPTY": str(tmp_path / "empty"), "CLEAN": str(clean)}.get(a, a) for a in extra]
    # the base does not exist: reaching the pipeline would fail differently
    args = ["--clean", str(clean), "--out", str(tmp_path / "out"), "--base", str(tmp_path / "no")]
    args += ["--metrics", "none", "--device", "cpu", *extra]
    assert _tool().main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
