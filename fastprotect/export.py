"""Exporting the inference module: TorchScript (``.pt``), lite interpreter (``.ptl``) and
``torch.export`` (``.pt2``).

The exported graph *is* :class:`~fastprotect.protector.Protector`, traced or exported: it
takes ``Bx3xHxW`` float images in ``[0, 1]`` of any size and returns the protected images,
with the encoder, target routing, group assignment, strength map and addition inside.

Every export is checked before it appears at its name: the file is written to a temporary
path, reloaded, run on images of several sizes and compared with the eager module; a
maximum absolute difference above ``1/255`` fails the export and leaves no file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .fileutil import atomic_output
from .protector import Protector

#: format name -> file suffix
FORMATS = {"torchscript": ".pt", "lite": ".ptl", "pt2": ".pt2"}
#: the largest side the ``.pt2`` graph accepts (its dynamic shapes need a bound)
MAX_SIDE = 16384
#: the largest batch a torch.export (.pt2) graph takes
MAX_BATCH = 1024
#: the trace input; any size works, this one is small and not square
EXAMPLE_SIZE = (192, 256)
#: sizes the reloaded graph is compared on: the trace size, odd, thin, tiny
CHECK_SIZES: tuple[tuple[int, int], ...] = ((192, 256), (131, 97), (7, 300), (1, 1))
TOLERANCE = 1 / 255


class ExportError(RuntimeError):
    """An export could not be written or did not match the eager module."""


@dataclass
class ExportReport:
    """What was written and how closely the reloaded graph matches the eager module."""

    path: Path
    format: str
    max_abs_diff: dict[tuple[int, int], float] = field(default_factory=dict)

    def line(self) -> str:
        worst = max(self.max_abs_diff.values(), default=0.0)
        sizes = ", ".join(f"{h}x{w}" for h, w in self.max_abs_diff)
        return (
            f"wrote {self.path} ({self.format}); reloaded and compared with the eager module "
            f"on {sizes}: max |diff| = {worst:.2e} (limit {TOLERANCE:.2e})"
        )


def format_for(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The export format for ``path``: ``fmt`` if given (it must match the suffix), else the
    one its suffix names."""
    suffix = Path(path).suffix.lower()
    by_suffix = {v: k for k, v in FORMATS.items()}
    if fmt is None:
        if suffix not in by_suffix:
            raise ExportError(
                f"{path}: cannot tell the format from the suffix {suffix or '(none)'}; "
                f"use one of {', '.join(by_suffix)} or --format"
            )
        return by_suffix[suffix]
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if suffix != FORMATS[fmt]:
        raise ExportError(f"{path}: a {fmt} export should end in {FORMATS[fmt]}")
    return fmt


def _example(size: tuple[int, int], seed: int, batch: int = 1) -> Tensor:
    """A check image: smooth colour gradients plus noise, so it looks a little like a photo."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy = torch.linspace(0, 1, h)[:, None].expand(h, w)
    xx = torch.linspace(0, 1, w)[None, :].expand(h, w)
    base = torch.stack([yy, xx, (yy + xx) / 2])[None].repeat(batch, 1, 1, 1)
    return (0.7 * base + 0.3 * torch.rand(batch, 3, h, w, generator=g)).clamp(0, 1)


def trace(protector: Protector, example_size: tuple[int, int] = EXAMPLE_SIZE):
    """The protector as a TorchScript module (traced; every shape stays symbolic)."""
    x = _example(example_size, 0)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing is deprecated upstream, and torch's own argument checks inside group_norm
        # warn; the reload check below is what tells whether the trace generalises.
        warnings.simplefilter("ignore")
        return torch.jit.trace(protector.eval(), x, check_trace=False)


def export_program(protector: Protector, example_size: tuple[int, int] = EXAMPLE_SIZE):
    """The protector as a ``torch.export`` program with dynamic batch, height and width
    (traced on a batch of two: a dimension of size one would be fixed at one)."""
    x = _example(example_size, 0, batch=2)
    b = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    h = torch.export.Dim("height", min=1, max=MAX_SIDE)
    w = torch.export.Dim("width", min=1, max=MAX_SIDE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shapes = {"x": {0: b, 2: h, 3: w}}
        return torch.export.export(protector.eval(), (x,), dynamic_shapes=shapes)


def load_exported(
    path: str | os.PathLike, fmt: str | None = None, optimize: bool = False
) -> Callable[[Tensor], Tensor]:
    """Load an exported graph as a callable ``images -> protected images``.

    Args:
        path: the exported file.
        fmt: ``torchscript``, ``lite`` or ``pt2``; default: the one the suffix names.
        optimize: TorchScript on the CPU only: freeze the graph and apply
            ``torch.jit.optimize_for_inference`` (oneDNN convolutions) after loading. The
            file itself stays portable (such a graph cannot be saved and reloaded).
    """
    if fmt is None:
        fmt = format_for(path)
    elif fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    path = str(path)
    with warnings.catch_warnings():
        # TorchScript and the lite interpreter are deprecated upstream (docs/embedding.md).
        warnings.simplefilter("ignore", FutureWarning)
        if fmt == "torchscript":
            graph = torch.jit.load(path, map_location="cpu").eval()
            if optimize:
                graph = torch.jit.optimize_for_inference(torch.jit.freeze(graph))
            return graph
        if fmt == "lite":
            from torch.jit.mobile import _load_for_lite_interpreter

            return _load_for_lite_interpreter(path)
        return torch.export.load(path).module()


def _write(protector: Protector, tmp: Path, fmt: str, example_size: tuple[int, int]) -> None:
    if fmt == "pt2":
        torch.export.save(export_program(protector, example_size), str(tmp))
        return
    graph = trace(protector, example_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "torchscript":
            torch.jit.save(graph, str(tmp))
        else:
            graph._save_for_lite_interpreter(str(tmp))


def compare(
    protector: Protector,
    graph: Callable[[Tensor], Tensor],
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
) -> dict[tuple[int, int], float]:
    """Max absolute difference between ``graph`` and the eager module, per image size (at
    the first size on a batch of two, the second image grey)."""
    out = {}
    with torch.no_grad():
        for i, size in enumerate(sizes):
            x = _example(size, i + 1, batch=2 if i == 0 else 1)
            if i == 0:
                x[1] = x[1].mean(0, keepdim=True)
            out[tuple(size)] = (graph(x) - protector(x)).abs().max().item()
    return out


def export_protector(
    protector: Protector,
    out: str | os.PathLike,
    fmt: str | None = None,
    overwrite: bool = False,
    example_size: tuple[int, int] = EXAMPLE_SIZE,
    check_sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
) -> ExportReport:
    """Export ``protector`` to ``out``, reload it and check it against the eager module.

    Args:
        protector: the inference module (moved to the CPU for export).
        out: destination; its suffix names the format unless ``fmt`` is given.
        fmt: ``torchscript`` (``.pt``), ``lite`` (``.ptl``) or ``pt2`` (``.pt2``).
        overwrite: replace an existing ``out``; otherwise refuse.
        example_size: the trace input size (any size works).
        check_sizes: image sizes the reloaded graph must match the eager module on.

    Raises:
        ExportError: the file exists, export failed, or the reloaded graph differs from the
            eager module by more than ``1/255``; no file is left behind.
    """
    out = Path(out)
    fmt = format_for(out, fmt)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; choose another name or remove it")
    protector = protector.cpu().eval()
    report = ExportReport(out, fmt)
    try:
        with atomic_output(out, overwrite=overwrite, keep_suffix=True) as tmp:
            _write(protector, tmp, fmt, example_size)
            report.max_abs_diff = compare(protector, load_exported(tmp, fmt), check_sizes)
            worst = max(report.max_abs_diff.values())
            if not worst <= TOLERANCE:
                raise ExportError(
                    f"{out}: the reloaded {fmt} graph differs from the eager module by "
                    f"{worst:.3g} > 1/255 ({report.max_abs_diff}); nothing written"
                )
    except FileExistsError as e:
        if not Path(out).parent.is_dir():  # a file where the output's folder should be
            raise ExportError(f"{Path(out).parent} is a file, not a folder") from e
        raise ExportError(f"{out} exists; choose another name or remove it") from e
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - tracing/exporting raises many kinds
        raise ExportError(f"{out}: {fmt} export failed: {type(e).__name__}: {e}") from e
    return report
