import hashlib
from pathlib import Path

import pytest

from fastprotect import weights as W
from fastprotect.weights import ChecksumError, WeightFile, WeightsNotFoundError, resolve_weights

from .conftest import needs_weights


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """A registry entry whose 'upstream' is a local file:// URL."""
    src = tmp_path / "upstream" / "fake.pth"
    src.parent.mkdir()
    src.write_bytes(b"weights-bytes" * 1000)
    spec = WeightFile(
        "fake.pth", "fakegroup", src.as_uri(), hashlib.sha256(src.read_bytes()).hexdigest()
    )
    monkeypatch.setitem(W.REGISTRY, spec.name, spec)
    monkeypatch.setenv("FASTPROTECT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTPROTECT_WEIGHTS_DIR", raising=False)
    return spec, src


def test_download_goes_to_user_cache_and_is_verified(fake_registry, tmp_path, monkeypatch):
    spec, src = fake_registry
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    path = resolve_weights("fake.pth")
    assert path == tmp_path / "cache" / "weights" / "fakegroup" / "fake.pth"
    assert path.read_bytes() == src.read_bytes()
    assert set(tmp_path.iterdir()) - before == {tmp_path / "cache"}  # nothing in the cwd
    src.unlink()  # second call must come from the cache
    assert resolve_weights("fake.pth") == path


def test_order_explicit_then_env_then_cache(fake_registry, tmp_path, monkeypatch):
    spec, src = fake_registry
    env = tmp_path / "envdir" / "fakegroup"
    env.mkdir(parents=True)
    (env / "fake.pth").write_bytes(src.read_bytes())
    monkeypatch.setenv("FASTPROTECT_WEIGHTS_DIR", str(tmp_path / "envdir"))
    assert resolve_weights("fake.pth") == env / "fake.pth"
    assert resolve_weights("fake.pth", path=src) == src


def test_checksum_mismatch_is_an_error(fake_registry, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not the weights")
    with pytest.raises(ChecksumError, match="does not match"):
        resolve_weights("fake.pth", path=bad)


def test_corrupt_download_leaves_nothing(fake_registry, tmp_path, monkeypatch):
    spec, src = fake_registry
    monkeypatch.setitem(
        W.REGISTRY, spec.name, WeightFile(spec.name, spec.group, spec.url, "0" * 64)
    )
    with pytest.raises(ChecksumError):
        resolve_weights("fake.pth")
    folder = tmp_path / "cache" / "weights" / "fakegroup"
    assert not folder.exists() or not any(folder.iterdir())


def test_offline_and_missing_names_file_variable_and_url(fake_registry, monkeypatch):
    spec, src = fake_registry
    monkeypatch.setitem(
        W.REGISTRY,
        spec.name,
        WeightFile(spec.name, spec.group, "http://127.0.0.1:9/fake.pth", spec.sha256),
    )
    with pytest.raises(WeightsNotFoundError) as e:
        resolve_weights("fake.pth")
    msg = str(e.value)
    assert (
        "fake.pth" in msg
        and "FASTPROTECT_WEIGHTS_DIR" in msg
        and "http://127.0.0.1:9/fake.pth" in msg
    )


@needs_weights
def test_taef2_is_pinned_and_found_in_shared():
    path = resolve_weights("taef2_encoder.pth", download=False)
    assert W.sha256_file(path) == W.REGISTRY["taef2_encoder.pth"].sha256
    assert Path(path).parent.name == "taef2"
