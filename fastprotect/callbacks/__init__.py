"""Training callbacks, one per file; side effects happen on rank zero only (except RankDigest)."""

from .export_graph import ExportGraph
from .image_panel import ImagePanel
from .rank_digest import RankDigest

__all__ = ["ExportGraph", "ImagePanel", "RankDigest"]
