"""Spatial patch features from intermediate stages of an embedder's backbone, and the numerics around them.

The image-level path (:class:`~novelty.embedder.Embedder`) pools the last stage into one vector per image, so a
small local flaw barely moves it. :class:`PatchExtractor` runs the **same backbone module with the same
weights** (``timm``'s ``forward_intermediates``; nothing is loaded again, nothing downloads) and returns, for each
image, a grid of patch features: each chosen stage is averaged over its 3×3 neighbourhood (PatchCore's local
aggregation), the coarser stages are upsampled to the finest one's grid, and the stages are concatenated.

Preprocessing here is not the embedder's resize-and-centre-crop: the **whole image** is resized to
``image_size × image_size`` (no crop, so a flaw near the border stays in view and a map covers the whole
image), then normalised with the backbone's own mean and std.

Also here: :func:`greedy_coreset` (greedy k-center subsampling of a memory bank, on a random projection) and
:func:`anomaly_maps` (patch scores → maps upsampled to the input resolution and Gaussian-smoothed).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from novelty.coreset import SqEuclidean, farthest_points
from novelty.errors import ImageError, InvalidInputError, NoveltyError
from novelty.images import describe_source, load_image
from novelty.params import check_int, check_real

if TYPE_CHECKING:
    from PIL import Image

    from novelty.embedder import Embedder

__all__ = [
    "PatchExtractor",
    "PatchResult",
    "anomaly_maps",
    "check_layers",
    "gaussian_blur",
    "greedy_coreset",
    "local_average",
]


def check_layers(layers: Any) -> tuple[int, ...]:
    """Stage indices (into the backbone's ``feature_info``): a non-empty, strictly increasing list of ints ≥ 0."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (tuple, list)) or not layers:
        raise InvalidInputError(
            f"layers must be a list of backbone stage indices such as [2, 3], got {layers!r}"
        )
    out = tuple(check_int(v, "each layer index", minimum=0) for v in layers)
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise InvalidInputError(f"layers must be strictly increasing, got {list(out)}")
    return out


def local_average(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """PatchCore's local aggregation: each position becomes the mean of its ``size × size`` neighbourhood
    (``(n, c, h, w)`` → same shape; at the borders only the positions inside the map count)."""
    if size <= 1:
        return x
    return F.avg_pool2d(x, kernel_size=size, stride=1, padding=size // 2, count_include_pad=False)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(4.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(n, H, W)`` maps (reflected borders); ``sigma`` in pixels, 0 = none."""
    if sigma <= 0:
        return maps
    k = _gaussian_kernel(sigma)
    r = k.shape[0] // 2
    x = maps[:, None]
    h, w = x.shape[-2:]
    if r >= h or r >= w:  # reflection needs a pad smaller than the map: fall back to replication
        x = F.pad(x, (r, r, r, r), mode="replicate")
    else:
        x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def anomaly_maps(patch_scores: np.ndarray, size: int | tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """Patch scores ``(n, h, w)`` → anomaly maps ``(n, H, W)`` float32: bilinear upsampling to ``size``
    (the patch pass's input resolution, which covers the whole image), then Gaussian smoothing with ``sigma``
    pixels (PatchCore uses 4 at 224 px). Higher = more novel, like every score here."""
    s = np.asarray(patch_scores, dtype=np.float32)
    if s.ndim != 3:
        raise InvalidInputError(f"patch scores must be (n, h, w), got shape {s.shape}")
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if s.shape[0] == 0:
        return np.zeros((0, *hw), dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(s))[:, None]
    up = F.interpolate(t, size=hw, mode="bilinear", align_corners=False)[:, 0]
    return gaussian_blur(up, float(sigma)).numpy().astype(np.float32, copy=False)


def _greedy(z: torch.Tensor, n_select: int, starts: np.ndarray) -> np.ndarray:
    """Farthest-point selection (exact) in each of the ``c`` chunks ``z`` ``(c, l, p)`` at once, chunk ``i``
    starting from its row ``starts[i]``: indices ``(c, n_select)`` within each chunk."""
    return farthest_points(SqEuclidean(z), n_select, start=starts)[0]


def greedy_coreset(
    x: np.ndarray,
    n_select: int,
    *,
    projection_dim: int | None = 128,
    seed: int = 0,
    chunk_rows: int | None = 16384,
) -> np.ndarray:
    """Indices of ``n_select`` rows of ``x`` chosen by greedy k-center (farthest-point) selection.

    Start from a random row; repeatedly add the row farthest (Euclidean) from everything selected so far
    (Sener & Savarese, 2018; PatchCore's memory-bank subsampling). The selected rows cover ``x`` within a
    radius at most twice the optimal one. With ``projection_dim`` smaller than ``x``'s width, distances are
    measured on a Gaussian random projection to that many dimensions (Johnson–Lindenstrauss: distances are
    kept approximately, the selection is much faster). Returns int64 indices, distinct.

    Each step reads every row, so one pass costs ``n · n_select`` distances. With ``chunk_rows`` and more than
    four chunks of rows, selection runs in two stages: greedy k-center inside every chunk of ``chunk_rows``
    consecutive rows at once keeps ``4 · n_select / n`` of each chunk, then greedy k-center over those
    candidates picks ``n_select``. Every row then lies within ``r1 + r2`` of the selection (the two stages'
    radii), for about a quarter of the distances; ``chunk_rows=None`` selects in one stage.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidInputError(f"coreset input must be a non-empty (n, d) array, got shape {x.shape}")
    n = x.shape[0]
    n_select = check_int(n_select, "n_select", minimum=1)
    if chunk_rows is not None:
        chunk_rows = check_int(chunk_rows, "chunk_rows", minimum=2)
    if n_select >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    z = torch.from_numpy(np.ascontiguousarray(x))
    if projection_dim is not None and projection_dim < x.shape[1]:
        proj = rng.standard_normal((x.shape[1], projection_dim)).astype(np.float32) / math.sqrt(
            projection_dim
        )
        z = z @ torch.from_numpy(proj)
    keep = 4.0 * n_select / n
    if chunk_rows is None or n <= 4 * chunk_rows or keep >= 0.5:
        return _greedy(z[None], n_select, rng.integers(n, size=1))[0]
    n_chunks = -(-n // chunk_rows)
    pad = n_chunks * chunk_rows - n  # the last chunk is filled with repeats of its own rows (harmless)
    pos = np.concatenate([np.arange(n), n - 1 - (np.arange(pad) % (n - (n_chunks - 1) * chunk_rows))])
    chunks = z[torch.from_numpy(pos)].reshape(n_chunks, chunk_rows, -1)
    k = max(1, int(math.ceil(keep * chunk_rows)))
    local = _greedy(chunks, k, rng.integers(chunk_rows, size=n_chunks))
    cand = np.unique(pos[(np.arange(n_chunks)[:, None] * chunk_rows + local).ravel()])
    if cand.shape[0] <= n_select:
        return cand
    return cand[_greedy(z[torch.from_numpy(cand)][None], n_select, rng.integers(cand.shape[0], size=1))[0]]


@dataclass
class PatchResult:
    """Patch features of a list of images: ``features`` ``(n, h, w, c)`` float32 (NaN where unreadable),
    ``errors`` (``None`` or the :class:`~novelty.errors.ImageError` of each input), full-size ``sizes``
    ``(n, 2)`` (width, height; -1 where unreadable)."""

    features: np.ndarray
    errors: list[ImageError | None]
    sizes: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


class PatchExtractor:
    """Images → patch features ``(n, h, w, c)`` from stages ``layers`` of ``embedder``'s backbone.

    ``layers`` index the backbone's ``feature_info`` (for ``tf_efficientnet_lite0``: 0 → stride 2, 1 → 4,
    2 → 8 (40 channels), 3 → 16 (112), 4 → 32); the grid is that of the first (finest) layer, e.g. 32 × 32 for
    ``image_size=256`` and ``layers=(2, 3)``. The backbone module is the embedder's own (shared, not copied).
    """

    def __init__(
        self, embedder: Embedder, layers: Sequence[int] = (2, 3), image_size: int = 256, pad: int = 0
    ):
        self.embedder = embedder
        self.layers = check_layers(list(layers))
        self.image_size = check_int(image_size, "image_size", minimum=32)
        self.pad = check_int(pad, "pad", minimum=0)
        model = embedder.model
        info = getattr(model, "feature_info", None)
        if not hasattr(model, "forward_intermediates") or info is None:
            raise InvalidInputError(
                f"backbone {embedder.backbone_name!r} exposes no intermediate stages (timm forward_intermediates); "
                "patch scoring needs a convolutional timm backbone such as tf_efficientnet_lite0"
            )
        n_stages = len(info)
        if self.layers[-1] >= n_stages:
            raise InvalidInputError(
                f"layers {list(self.layers)} out of range: backbone {embedder.backbone_name!r} has {n_stages} "
                f"stages (0–{n_stages - 1}; strides {[f['reduction'] for f in info]})"
            )
        self.strides = [int(info[i]["reduction"]) for i in self.layers]
        self.channels = [int(info[i]["num_chs"]) for i in self.layers]
        cfg = embedder.data_config
        self.mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)
        if self.pad % max(self.strides) or self.pad >= self.image_size:
            raise InvalidInputError(
                f"pad={self.pad} must be a multiple of the coarsest stride {max(self.strides)} of layers "
                f"{list(self.layers)} and smaller than image_size"
            )
        self.grid = (self.image_size // self.strides[0], self.image_size // self.strides[0])

    @property
    def dim(self) -> int:
        return sum(self.channels)

    def to_tensor(self, img: Image.Image) -> torch.Tensor:
        """The whole image resized to ``image_size²`` (no crop), as a ``(3, S, S)`` float tensor in [0, 1]."""
        from PIL import Image

        im = img.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def features_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Patch features of a ``(n, 3, S, S)`` batch in [0, 1]: ``(n, h, w, c)`` float32."""
        emb = self.embedder
        with torch.inference_mode():
            x = (batch - self.mean) / self.std
            if self.pad:  # the network sees the texture continued past the border, not zeros
                x = F.pad(x, (self.pad,) * 4, mode="reflect")
            x = x.to(emb.device).contiguous(memory_format=torch.channels_last)
            feats = emb.model.forward_intermediates(  # type: ignore[operator]
                x, indices=list(self.layers), intermediates_only=True, stop_early=True
            )
            feats = [local_average(f.float(), 3) for f in feats]  # before the crop: full 3 × 3 at the border
            if self.pad:  # back to the image's own cells
                feats = [
                    f[
                        ...,
                        self.pad // st : f.shape[-2] - self.pad // st,
                        self.pad // st : f.shape[-1] - self.pad // st,
                    ]
                    for f, st in zip(feats, self.strides, strict=True)
                ]
            grid = feats[0].shape[-2:]
            parts = []
            for f in feats:
                if f.shape[-2:] != grid:
                    f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
                parts.append(f)
            out = torch.cat(parts, dim=1).permute(0, 2, 3, 1).contiguous()
        arr = out.cpu().numpy().astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise NoveltyError("the backbone produced non-finite patch features; check the weights")
        return arr

    def extract_with_errors(self, sources: Sequence[Any], *, batch_size: int | None = None) -> PatchResult:
        """Patch features of every readable source; unreadable ones get NaN features and their error."""
        bs = check_int(batch_size or self.embedder.batch_size, "batch_size", minimum=1)
        n = len(sources)
        h, w = self.grid
        out = np.full((n, h, w, self.dim), np.nan, dtype=np.float32)
        errors: list[ImageError | None] = [None] * n
        sizes = np.full((n, 2), -1, dtype=np.int64)
        min_size = self.image_size if self.embedder.draft else None
        for start in range(0, n, bs):
            tensors, where = [], []
            for i in range(start, min(n, start + bs)):
                info: dict[str, Any] = {}
                try:
                    img = load_image(
                        sources[i], min_size=min_size, max_pixels=self.embedder.max_pixels, info=info
                    )
                except ImageError as e:
                    errors[i] = e
                    continue
                except InvalidInputError as e:
                    errors[i] = ImageError(describe_source(sources[i]), str(e))
                    continue
                sizes[i] = (int(info["width"]), int(info["height"]))
                tensors.append(self.to_tensor(img))
                where.append(i)
            if tensors:
                feats = self.features_tensor(torch.stack(tensors))
                if feats.shape[1:3] != (h, w):  # odd strides: take the grid the backbone gives
                    raise NoveltyError(
                        f"patch grid {feats.shape[1:3]} differs from the expected {(h, w)} for image_size="
                        f"{self.image_size}; choose an image_size divisible by {self.strides[-1]}"
                    )
                out[where] = feats
        return PatchResult(out, errors, sizes)

    def extract(self, sources: Sequence[Any], *, batch_size: int | None = None) -> np.ndarray:
        """Patch features of every source; the first unreadable one raises its specific error."""
        res = self.extract_with_errors(sources, batch_size=batch_size)
        for i, err in enumerate(res.errors):
            if err is not None:
                raise type(err)(err.source, f"{err.reason} (input #{i})")
        return res.features


def check_sigma(sigma: Any) -> float:
    return check_real(sigma, "sigma", low=0.0)
