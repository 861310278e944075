import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect.encoders import (
    TINY_CONFIG,
    DiffusersVAEEncoder,
    TinyAutoencoderDecoder,
    TinyAutoencoderEncoder,
    build_encoder,
)

from .conftest import DATA, needs_data, needs_weights


@pytest.fixture(scope="module")
def tiny_vae():
    return DiffusersVAEEncoder(config=TINY_CONFIG, seed=0)


def test_tiny_vae_shapes_and_features(tiny_vae):
    x = torch.rand(2, 3, 32, 32)
    z, feats = tiny_vae.features(x, ["down0", "mid"])
    assert z.shape == (2, 4, 16, 16)
    assert [f.shape[1] for f in feats] == [8, 16]
    assert torch.equal(tiny_vae.latent(x), z)
    assert tiny_vae.feature_names == ("down0", "down1", "mid")


def test_encoder_is_frozen_but_passes_gradients(tiny_vae):
    tiny_vae.train()
    assert not tiny_vae.training
    assert not any(p.requires_grad for p in tiny_vae.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    tiny_vae.latent(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_layer_is_a_clear_error(tiny_vae):
    with pytest.raises(ValueError, match="no feature maps.*choose from"):
        tiny_vae.features(torch.rand(1, 3, 32, 32), ["nope"])


def test_tiny_vae_is_seeded():
    a = DiffusersVAEEncoder(config=TINY_CONFIG, seed=0)
    b = DiffusersVAEEncoder(config=TINY_CONFIG, seed=0)
    assert a.identity() == b.identity()
    assert (
        a.identity()["weights_sha256"]
        != DiffusersVAEEncoder(config=TINY_CONFIG, seed=1).identity()["weights_sha256"]
    )


def test_diffusers_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        DiffusersVAEEncoder()


def test_random_tiny_autoencoder_layers_and_shapes():
    enc = TinyAutoencoderEncoder(pretrained=False)
    z, feats = enc.features(torch.rand(1, 3, 64, 64), list(enc.feature_names))
    assert z.shape == (1, 32, 8, 8)
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8]


def test_in_place_relus_change_neither_features_nor_gradients():
    import copy

    enc = TinyAutoencoderEncoder(pretrained=False)
    torch.manual_seed(0)
    for p in enc.parameters():  # random weights with pool branches that matter
        p.data.normal_(0, 0.1)
    plain = copy.deepcopy(enc)
    relus = [m for m in plain.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
    for m in relus:
        m.inplace = False
    layers = list(enc.feature_names)
    outs = []
    for e in (enc, plain):
        x = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        z, feats = e.features(x, layers)
        loss = z.pow(2).sum() + sum(f.pow(2).mean() for f in feats)
        loss.backward()
        outs.append((z.detach(), [f.detach() for f in feats], x.grad))
    (z1, f1, g1), (z2, f2, g2) = outs
    assert torch.equal(z1, z2) and all(torch.equal(a, b) for a, b in zip(f1, f2, strict=True))
    assert g1.abs().sum() > 0 and torch.allclose(g1, g2, rtol=1e-5, atol=1e-8)


@needs_weights
@needs_data
def test_taef2_loads_strictly_and_reconstructs_a_real_photo():
    enc = build_encoder("taef2")
    dec = TinyAutoencoderDecoder("taef2")
    assert enc.identity()["weights_sha256"].startswith("10a4e102")
    with Image.open(DATA / "objects" / "kodim04.png") as im:
        x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    x = x[None, :, :256, :256]
    with torch.no_grad():
        y = dec(enc.latent(x))
    psnr = 10 * torch.log10(1 / torch.mean((y - x) ** 2))
    assert psnr >= 24.0, f"TAEF2 round trip only {psnr:.2f} dB: architecture mismatch?"


@needs_weights
def test_taef2_strict_load_rejects_wrong_architecture(tmp_path):
    from fastprotect.encoders.taesd import tiny_encoder

    with pytest.raises(RuntimeError, match="Missing key|Unexpected key"):
        tiny_encoder(32, pool_blocks=0).load_state_dict(
            torch.load(
                __import__("fastprotect.weights", fromlist=["x"]).resolve_weights(
                    "taef2_encoder.pth"
                ),
                weights_only=True,
            ),
            strict=True,
        )
