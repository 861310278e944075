"""Training callbacks, one per file; side effects happen on rank zero only."""

from .image_panel import ImagePanel

__all__ = ["ImagePanel"]
