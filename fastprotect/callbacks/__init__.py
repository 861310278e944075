"""Training callbacks, one per file; side effects happen on rank zero only (except RankDigest)."""

from .image_panel import ImagePanel
from .rank_digest import RankDigest

__all__ = ["ImagePanel", "RankDigest"]
