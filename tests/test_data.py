import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect.data import NoImagesError, fit_assignment, list_images, read_rgb, split_files
from fastprotect.data.files import read_all, split_key, subject
from fastprotect.mop import MixtureOfPerturbations, MoPConfig

from .conftest import DATA, needs_data


def _png(path: Path, size=(40, 30), color=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_list_images_is_recursive_and_case_insensitive(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub" / "deeper" / "b.PNG")
    Image.new("RGB", (8, 8)).save(tmp_path / "sub" / "c.jpeg")
    (tmp_path / "notes.txt").write_text("x")
    names = [p.name for p in list_images([tmp_path])]
    assert names == ["a.png", "c.jpeg", "b.PNG"] or sorted(names) == ["a.png", "b.PNG", "c.jpeg"]
    assert len(names) == 3


def test_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(NoImagesError, match="no such directory"):
        list_images([tmp_path / "nope"])


def test_split_is_deterministic_and_independent_of_location(tmp_path):
    files = [tmp_path / "d" / f"img{i:03d}.png" for i in range(200)]
    train, val = split_files(files, 0.2)
    assert len(train) + len(val) == 200 and 20 < len(val) < 60
    moved = [Path("/elsewhere/d") / f.name for f in files]
    assert [f.name for f in split_files(moved, 0.2)[1]] == [f.name for f in val]
    # adding files does not move existing ones between splits
    more_val = split_files(files + [tmp_path / "d" / "extra.png"], 0.2)[1]
    assert set(val) <= set(more_val)
    assert 0 <= split_key(files[0]) < 1


def test_one_subjects_images_share_a_side_of_the_split(tmp_path):
    d = tmp_path / "faces"
    pairs = [(d / f"london_{i:03d}_03.jpg", d / f"london_{i:03d}_08.jpg") for i in range(100)]
    for a, b in pairs:
        assert subject(a) == subject(b) == f"faces/london_{a.stem.split('_')[1]}"
        assert split_key(a) == split_key(b)
    train, val = split_files([f for p in pairs for f in p], 0.2)
    assert 20 < len(val) < 70 and len(val) % 2 == 0
    # two-token names are subjects of their own
    assert subject(d / "canada_003f.jpg") == "faces/canada_003f"
    assert subject(d / "canada_003f.jpg") != subject(d / "canada_008f.jpg")


@needs_data
def test_the_shared_portraits_keep_each_person_on_one_side():
    files = list_images([DATA / "faces", DATA / "cartoon"])
    train, val = split_files(files, 0.2)
    assert {subject(f) for f in train}.isdisjoint({subject(f) for f in val})
    london_val = [f for f in val if f.name.startswith("london_")]
    assert london_val and len(london_val) % 2 == 0  # neutral and smiling together


def test_unreadable_files_are_skipped_with_one_warning(tmp_path):
    good = _png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    worse = tmp_path / "worse.jpg"
    worse.write_bytes(b"")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ok, images = read_all([bad, good, worse])
    assert ok == [good] and images[0].shape == (3, 30, 40)
    assert len(w) == 1 and "bad.png" in str(w[0].message) and "worse.jpg" in str(w[0].message)


def test_read_rgb_shrinks_but_never_enlarges(tmp_path):
    p = _png(tmp_path / "x.png", size=(400, 200))
    assert read_rgb(p, max_side=100).shape == (3, 100, 200)
    assert read_rgb(p, max_side=1000).shape == (3, 200, 400)
    assert read_rgb(p).dtype == torch.uint8


def _mop(k=2):
    return MixtureOfPerturbations(
        MoPConfig(
            targets=["low", "mid", "high"],
            groups=k,
            resolution=16,
            latent_channels=2,
            latent_grid=2,
        )
    )


def test_assignment_is_deterministic_for_a_seed():
    torch.manual_seed(0)
    latents = torch.randn(30, 2, 4, 4) + torch.arange(30).float().reshape(30, 1, 1, 1) % 3
    mop = _mop()
    mop.target_entropy.copy_(torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    a = fit_assignment(mop, latents, seed=0)
    b = fit_assignment(mop, latents, seed=0)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.groups, b.groups)
    assert a.groups.shape == (30, 3) and a.centroids.shape == (3, 2, 8)
    # every image is labelled by its nearest centroid under each target
    feats = mop.reduce(latents)
    for t in range(3):
        d = torch.cdist(feats, a.centroids[t])
        assert torch.equal(d.argmin(1), a.groups[:, t])


def test_too_few_images_is_a_clear_error():
    with pytest.raises(NoImagesError, match="at least 2 training images"):
        fit_assignment(_mop(2), torch.randn(1, 2, 4, 4))


def test_sparse_target_falls_back_to_all_images():
    latents = torch.randn(10, 2, 4, 4)
    mop = _mop()
    mop.target_entropy.copy_(torch.tensor([[0.0, 0.0], [99.0, 99.0], [98.0, 98.0]]))
    with pytest.warns(UserWarning, match="fewer than K=2"):
        a = fit_assignment(mop, latents)
    assert torch.bincount(a.groups[:, 1], minlength=2).min() >= 1


def test_random_grouping_ignores_content_and_centroids_are_group_means():
    """The "MoP without assignment" ablation: clustered latents, random groups."""
    torch.manual_seed(0)
    clusters = torch.arange(40) % 2  # two clear content clusters
    latents = torch.randn(40, 2, 4, 4) * 0.1 + 5 * clusters.float().reshape(40, 1, 1, 1)
    mop = _mop()
    mop.target_entropy.copy_(torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    km = fit_assignment(mop, latents, routing="all", seed=0)
    rnd = fit_assignment(mop, latents, routing="all", seed=0, grouping="random")
    # k-means recovers the content clusters; random groups cut across them
    assert (
        abs(torch.corrcoef(torch.stack([km.groups[:, 0].float(), clusters.float()]))[0, 1]) > 0.99
    )
    mixed = torch.corrcoef(torch.stack([rnd.groups[:, 0].float(), clusters.float()]))[0, 1]
    assert abs(mixed) < 0.5
    assert torch.equal(rnd.groups, fit_assignment(mop, latents, "all", 0, "random").groups)
    feats = mop.reduce(latents)
    for t in range(3):
        for g in range(2):
            members = rnd.groups[:, t] == g
            assert torch.allclose(rnd.centroids[t, g], feats[members].mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="grouping must be"):
        fit_assignment(mop, latents, grouping="hash")


def test_read_rgb_reads_as_protect_does_and_scans_skip_hidden_files(tmp_path):
    """16-bit grey is scaled to 8 bits (a bare convert('RGB') clips it to white), and a
    folder scan leaves out what protect's leaves out."""
    deep = np.full((6, 5), 32768, np.uint16)  # mid grey in 16 bits
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = read_rgb(tmp_path / "deep.png")
    assert rgb.shape == (3, 6, 5) and int(rgb.min()) == int(rgb.max()) == 128
    for name in (".ipynb_checkpoints/deep-checkpoint.png", "__MACOSX/._deep.png", ".x.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(deep).save(tmp_path / name)
    assert [p.name for p in list_images([tmp_path])] == ["deep.png"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"crop_scale": (0.5, 2.0)}, "crop_scale must be"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale must be"),
    ],
)
def test_datamodule_refuses_settings_that_would_fail_later(change, message):
    from fastprotect.data import MoPDataModule

    with pytest.raises(ValueError, match=message):
        MoPDataModule(data_dirs=["x"], **change)
