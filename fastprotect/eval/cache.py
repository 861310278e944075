"""A folder of per-image attack results that later evaluations reuse (``evaluate --attack-cache``).

Per-image PGD is most of an evaluation's time on a CPU (about 75 s per validation image at
view 512, 50 steps), and every run that measures another transform on the same images
computes the same attack again. The attack is deterministic (a fixed seed), so its result
is a function of what it is given; :class:`AttackCache` stores it under a digest of what
it is given and of the code that computes it, and hands it back instead of attacking again:

- the image as attacked, exactly (its bytes, shape and dtype: so the file, the view, the
  resize and ``--max-side`` are all in it), and for attacks toward a target the target as
  given;
- the attack: kind, steps, budget and step size;
- the encoder attacked: its class, its identity and the bytes of its weights;
- the code: the source of :mod:`fastprotect.eval.baselines`, of the encoders package
  (:mod:`fastprotect.encoders`, module by module) and of the functions in
  :mod:`fastprotect.eval.run` that bind an attack to its encoder and set a GPU's
  precision, read when this module is imported; the fastprotect, torch and diffusers
  versions; and the device *type* (a GPU's arithmetic differs from a CPU's in the last
  digits; two GPUs of different models are not told apart).

What it does not see: a change of the libraries below torch (a different BLAS or cuDNN
can change the last digits), of an editable install's code under the same version, of
byte code that no longer matches its source file, or of the number of threads. A reused
result equals the computing run's to the last digit, whatever the reusing run's machine
would have given.

A cached result is the float tensor the attack returned, so the rows of a run that reuses
it equal those of the run that computed it, to the last digit. Its ``seconds`` are the
attack's own time when it was computed, so the seconds per image stay the attack's cost.
Entries are written whole or not at all; one that cannot be read (or holds non-finite
values) is computed again and replaced, with a warning. A cache that cannot be written
(a full disk, a read-only folder) costs the reuse, not the run: a warning, once, and
each later result is offered to the folder again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .. import __version__, encoders
from ..fileutil import atomic_output
from . import baselines

#: what a cache entry's name depends on besides its inputs; changed when the format changes
_FORMAT = "fastprotect attack cache 2"


def _tensor_digest(h, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{tuple(t.shape)} {t.dtype}".encode())
    h.update(t.view(-1).view(torch.uint8).numpy().tobytes())


def _module_source(name: str) -> str:
    """A module's source as its loader gives it (an installed wheel, a zip, a checkout)."""
    spec = importlib.util.find_spec(name)
    source = spec.loader.get_source(name) if spec is not None and spec.loader else None
    if source is None:
        raise OSError(f"no source for {name}")
    return source


def _code_digest() -> str | None:
    """sha256 over the source of the attacks and of the encoder modules; ``None`` where a
    source cannot be read (a byte-code-only install)."""
    names = [baselines.__name__, encoders.__name__]
    names += sorted(
        f"{encoders.__name__}.{m.name}" for m in pkgutil.iter_modules(encoders.__path__)
    )
    h = hashlib.sha256()
    try:
        for name in names:
            h.update(name.encode())
            h.update(_module_source(name).encode())
    except Exception:  # noqa: BLE001 - whatever stops the reading refuses only the cache
        return None
    return h.hexdigest()


#: the source files as they are when this module is imported, so that files edited under a
#: long evaluation do not name its entries
_CODE = _code_digest()


def _library_versions() -> dict[str, str]:
    """torch's version and, where installed, diffusers' (its VAE code runs those encoders)."""
    versions = {"torch": torch.__version__}
    try:
        versions["diffusers"] = importlib.metadata.version("diffusers")
    except importlib.metadata.PackageNotFoundError:
        pass
    return versions


class AttackCache:
    """Attack results kept in ``folder``, ``<2 hex>/<digest>.pt`` each (about 4 MB per
    attack on an image of 512x683 pixels)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"the cache {self.folder} is a file, not a folder")
        self.hits = 0
        self.computed = 0
        self.unwritable = False  # warned once already
        if _CODE is None:
            raise OSError(
                "its entries are named by the attacks' source code, and this installation "
                "of fastprotect has none"
            )
        self._code = _CODE

    def wrap(
        self,
        attack: Callable[[Tensor, Tensor], Tensor],
        spec: dict,
        encoder: str,
        uses_target: bool,
        code: str = "",
    ) -> CachedAttack:
        """``attack`` (``(x, target image) -> x_hat``) answered from the cache where it can
        be. ``spec`` names the attack and its parameters (kind, steps, budget, step size);
        ``encoder`` tells the encoder attacked apart (its class and a digest of its
        weights); ``uses_target``: whether the result depends on the target image;
        ``code``: the source of whatever binds the attack to its encoder, beyond the
        modules every entry's name covers."""
        head = {
            "format": _FORMAT,
            "spec": spec,
            "encoder": encoder,
            "code": self._code,
            "bind": hashlib.sha256(code.encode()).hexdigest(),
            "fastprotect": __version__,
            "libraries": _library_versions(),
        }
        return CachedAttack(self, attack, json.dumps(head, sort_keys=True), uses_target)

    def summary(self) -> dict:
        """What the run's settings record: the folder and how many results it gave."""
        return {
            "folder": str(self.folder.resolve()),
            "reused": self.hits,
            "computed": self.computed,
        }


class CachedAttack:
    """A per-image attack behind an :class:`AttackCache`. ``seconds`` is, after each call,
    the attack's own time (for a result from the cache, its time when it was computed),
    without the cache's reading, hashing and writing."""

    def __init__(self, cache: AttackCache, attack, head: str, uses_target: bool):
        self.cache, self.attack, self.head, self.uses_target = cache, attack, head, uses_target
        self.seconds: float | None = None

    def path(self, x: Tensor, y: Tensor) -> Path:
        h = hashlib.sha256(self.head.encode())
        h.update(x.device.type.encode())
        _tensor_digest(h, x)
        if self.uses_target:
            _tensor_digest(h, y)
        d = h.hexdigest()
        return self.cache.folder / d[:2] / f"{d}.pt"

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        path = self.path(x, y)
        self.seconds = None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            x_hat, seconds = entry["x_hat"], float(entry["seconds"])
            if x_hat.shape != x.shape or x_hat.dtype != x.dtype:
                raise ValueError(f"a {tuple(x_hat.shape)} result for {tuple(x.shape)}")
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(f"{seconds} seconds")
            if not torch.isfinite(x_hat).all():
                raise ValueError("non-finite values")
        except FileNotFoundError:
            pass  # not computed yet
        except Exception as e:  # any unreadable entry (or folder): attack again, replace it
            print(
                f"fastprotect: warning: cache entry {path} unreadable "
                f"({type(e).__name__}: {e}); attacking again",
                file=sys.stderr,
            )
        else:
            self.cache.hits += 1
            self.seconds = seconds
            return x_hat.to(x.device)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        x_hat = self.attack(x, y)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        self.seconds = time.perf_counter() - t0
        self.cache.computed += 1
        entry = {"x_hat": x_hat.detach().cpu(), "seconds": self.seconds}
        if not torch.isfinite(entry["x_hat"]).all():
            return x_hat  # not kept: a later run would refuse it anyway
        try:
            with atomic_output(path) as tmp:
                torch.save(entry, tmp)
        except (OSError, RuntimeError) as e:  # torch's writer: RuntimeError on a full disk
            # the result is good; only its reuse is lost
            if not self.cache.unwritable:
                self.cache.unwritable = True
                print(
                    f"fastprotect: warning: cannot write to the attack cache "
                    f"{self.cache.folder} ({type(e).__name__}: {e}); going on without "
                    "keeping the attacks' results",
                    file=sys.stderr,
                )
        return x_hat
