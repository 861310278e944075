"""Routing to targets and k-means++ groups: computed once per (encoder, data, settings), cached."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from sklearn.cluster import KMeans
from torch import Tensor
from tqdm import tqdm

from ..encoders import Encoder
from ..fileutil import atomic_output
from ..latents import nearest
from ..mop import MixtureOfPerturbations
from .files import NoImagesError


@dataclass
class Assignment:
    """Per training image: its routed target and its group under every target.

    Attributes:
        routes: ``N`` target index by the entropy rule.
        groups: ``NxT`` nearest-centroid group under each target's ``A_t``.
        centroids: ``TxKxD``.
        entropy: ``NxC`` latent entropies (for inspection).
    """

    routes: Tensor
    groups: Tensor
    centroids: Tensor
    entropy: Tensor

    def save(self, path: Path, meta: dict) -> None:
        tensors = {k: v.contiguous() for k, v in vars(self).items()}
        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})

    @classmethod
    def load(cls, path: Path) -> Assignment:
        return cls(**load_file(str(path)))


def file_digest(files: Sequence[Path]) -> str:
    """sha256 over the names and bytes of ``files`` (the data-content part of the cache key)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@torch.no_grad()
def encode_for_assignment(
    mop: MixtureOfPerturbations,
    encoder: Encoder,
    images: Sequence[Tensor],
    batch_size: int = 4,
    progress: bool = False,
) -> Tensor:
    """Latents of uint8 ``3xHxW`` images at the assignment resolution, ``NxCxhxw``."""
    device = next(encoder.parameters()).device
    out = []
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc="encoding for the assignment", unit="batch", disable=not progress):
        x = torch.cat(
            [
                mop.assignment_input(im[None].to(device).float() / 255)
                for im in images[i : i + batch_size]
            ]
        )
        out.append(encoder.latent(x).float().cpu())
    return torch.cat(out)


def fit_assignment(
    mop: MixtureOfPerturbations,
    latents: Tensor,
    routing: str = "entropy",
    seed: int = 0,
    grouping: str = "kmeans",
) -> Assignment:
    """Route each latent to a target and fit each target's k-means++ centroids.

    With ``routing="entropy"`` the centroids of target ``t`` are fitted on the images routed
    to ``t``; a target with fewer than ``K`` routed images is fitted on all images instead
    (with a warning), so that every group of every target has training data. With
    ``routing="all"`` every target is fitted on all images.

    ``grouping="random"`` is the "MoP without assignment" ablation: every image gets a
    random group (seeded) under every target, and each centroid is the mean reduced latent
    of its random group, so inference's nearest-centroid rule stays well defined but
    carries no learned content grouping.
    """
    k = mop.config.groups
    n = latents.shape[0]
    if n < max(k, 1):
        raise NoImagesError(f"need at least {max(k, 1)} training images for K={k}, found {n}")
    entropy = mop.entropy(latents)
    routes = mop.route(latents).cpu()
    feats = mop.reduce(latents).cpu()
    t_count = mop.num_targets
    centroids = torch.zeros(t_count, k, feats.shape[1])
    if grouping not in ("kmeans", "random"):
        raise ValueError(f"grouping must be 'kmeans' or 'random', got {grouping!r}")
    g = torch.Generator().manual_seed(seed)
    random_groups = torch.randint(0, max(k, 1), (n, t_count), generator=g)
    for t in range(t_count):
        members = routes == t if routing == "entropy" else torch.ones(n, dtype=torch.bool)
        if int(members.sum()) < k:
            warnings.warn(
                f"target {t} ({mop.config.targets[t]}) has {int(members.sum())} routed training "
                f"images, fewer than K={k}; fitting its groups on all {n} images",
                stacklevel=2,
            )
            members = torch.ones(n, dtype=torch.bool)
        if k > 0 and grouping == "random":
            labels = random_groups[:, t]
            for g in range(k):
                chosen = members & (labels == g)
                chosen = chosen if chosen.any() else members
                centroids[t, g] = feats[chosen].mean(0)
        elif k > 0:
            km = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed)
            km.fit(feats[members].double().numpy())
            centroids[t] = torch.from_numpy(km.cluster_centers_).float()
    if k == 0:
        groups = torch.zeros(n, t_count, dtype=torch.long)
    elif grouping == "random":
        groups = random_groups
    else:
        groups = torch.stack([nearest(feats, c) for c in centroids], 1)
    return Assignment(routes=routes, groups=groups, centroids=centroids, entropy=entropy.cpu())
