"""Patch-level kNN scorer (PatchCore: Roth et al., 2022, "Towards total recall in industrial anomaly detection").

An image-level embedding barely moves when a small part of the image is flawed. This scorer works on the
backbone's **spatial** features instead (:class:`~novelty.patches.PatchExtractor`: intermediate stages, 3×3
local averaging): the training images' patch features, subsampled by greedy k-center coreset
(:func:`~novelty.patches.greedy_coreset`), form a memory bank; a patch's score is the Euclidean distance to its
nearest memory-bank feature (FAISS, exact), divided by that position's typical distance on training images
kept out of the bank (``position_scale``: border cells are noisier than the middle, and would otherwise win
every maximum); an image's score is the largest patch score (``aggregate="max"``)
or that score re-weighted as PatchCore does (``"reweight"``: lowered when the nearest bank feature sits in a
dense part of the bank). The patch scores, upsampled and smoothed, are the image's **anomaly map**
(:meth:`PatchKNNScorer.score_maps`). **Higher = more novel**, patch by patch and image by image.

Inputs are patch features ``(n, h, w, c)``; a 2-D ``(n, d)`` array counts as a grid of one patch per image.
A :class:`~novelty.detector.NoveltyDetector` computes the patch features itself (a second pass through the same
backbone, only when a patch scorer is used) and hands them to ``fit`` / ``score``.
State saved with a detector: the memory bank (``bank``, float32), the patch grid it was fitted on and the
per-cell scale (``cell_scale``). Defaults (stage 1 of the backbone at 512 px, stride 4) were chosen on the
textile scenario's small local defects; how they were chosen and what else was tried: benchmarks/RESULTS.md,
"Patch-level scoring".
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from novelty.errors import InvalidInputError
from novelty.params import check_bool, check_choice, check_int, check_real
from novelty.patches import anomaly_maps, check_layers, greedy_coreset
from novelty.scorers.base import Scorer

__all__ = ["PatchKNNScorer", "as_patch_features"]

_AGGREGATES = ("max", "reweight")
_SEARCH_ROWS = 65536  # patch queries per FAISS call (bounds the distance buffers)


def as_patch_features(features: Any, dim: int | None = None) -> np.ndarray:
    """``(n, h, w, c)`` float32, C-contiguous and finite; ``(n, d)`` becomes ``(n, 1, 1, d)``."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, None, None, :]
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[-1] == 0:
        raise InvalidInputError(
            f"patch features must be a non-empty (n, h, w, c) array (or (n, d)), got shape {x.shape}"
        )
    if dim is not None and x.shape[-1] != dim:
        raise InvalidInputError(f"patch features have {x.shape[-1]} channels, the scorer was fitted on {dim}")
    if not np.isfinite(x).all():
        raise InvalidInputError("patch features contain NaN or infinite values")
    return np.ascontiguousarray(x)


class PatchKNNScorer(Scorer):
    """Patch-level kNN (PatchCore): the largest distance of an image's patches to a coreset memory bank.

    Higher = more novel. Parameters: ``layers`` (backbone stages, see :class:`~novelty.patches.PatchExtractor`),
    ``image_size`` (the whole image is resized to it) and ``pad`` (reflect padding in pixels, cropped off
    again) say which features a detector extracts;
    ``coreset_fraction`` of the training patches are kept in the memory bank (greedy k-center on a random
    projection to ``projection_dim`` dimensions); ``aggregate`` turns patch scores into the image score
    (``"max"`` or PatchCore's ``"reweight"`` over ``reweight_neighbors`` bank neighbours); ``sigma``: Gaussian
    smoothing of the anomaly maps in pixels of ``image_size``; ``position_scale``: divide each cell's distance
    by its mean over ``reference_fraction`` of the training images, kept out of the memory bank; ``seed``: that
    choice, the coreset's start and its projection.
    """

    name = "patch-knn"
    input_kind: ClassVar[str] = "patches"

    def __init__(
        self,
        layers: tuple[int, ...] | list[int] = (1,),
        image_size: int = 512,
        pad: int = 16,
        coreset_fraction: float = 0.0025,
        projection_dim: int = 128,
        aggregate: str = "max",
        reweight_neighbors: int = 9,
        sigma: float = 4.0,
        position_scale: bool = True,
        reference_fraction: float = 0.1,
        seed: int = 0,
    ):
        self.layers = check_layers(layers)
        self.image_size = check_int(image_size, "image_size", minimum=32)
        self.pad = check_int(pad, "pad", minimum=0)
        self.position_scale = check_bool(position_scale, "position_scale")
        self.reference_fraction = check_real(
            reference_fraction, "reference_fraction", low=0.0, high=0.5, low_open=True
        )
        self.coreset_fraction = check_real(
            coreset_fraction, "coreset_fraction", low=0.0, high=1.0, low_open=True
        )
        self.projection_dim = check_int(projection_dim, "projection_dim", minimum=1)
        self.aggregate = check_choice(aggregate, "aggregate", _AGGREGATES)
        self.reweight_neighbors = check_int(reweight_neighbors, "reweight_neighbors", minimum=2)
        self.sigma = check_real(sigma, "sigma", low=0.0)
        self.seed = check_int(seed, "seed", minimum=0)

    def get_params(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "image_size": self.image_size,
            "pad": self.pad,
            "coreset_fraction": self.coreset_fraction,
            "projection_dim": self.projection_dim,
            "aggregate": self.aggregate,
            "reweight_neighbors": self.reweight_neighbors,
            "sigma": self.sigma,
            "position_scale": self.position_scale,
            "reference_fraction": self.reference_fraction,
            "seed": self.seed,
        }

    # --- fitting ------------------------------------------------------------------------------------
    def fit(
        self, embeddings: np.ndarray, labels: np.ndarray | None = None, *, index: Any = None
    ) -> PatchKNNScorer:
        """Fit the memory bank on training patch features ``(n, h, w, c)`` (``embeddings`` by the interface's
        name; a 2-D array is one patch per image)."""
        x = as_patch_features(embeddings)
        n, grid = x.shape[0], (int(x.shape[1]), int(x.shape[2]))
        n_ref = int(round(self.reference_fraction * n)) if self.position_scale and n >= 2 else 0
        n_ref = min(max(n_ref, 1 if self.position_scale and n >= 2 else 0), n - 1)
        order = np.random.default_rng(self.seed).permutation(n)
        ref, bank_idx = np.sort(order[:n_ref]), np.sort(order[n_ref:])
        flat = x[bank_idx].reshape(-1, x.shape[-1])
        m = max(1, int(math.ceil(self.coreset_fraction * flat.shape[0])))
        if m < flat.shape[0]:
            sel = greedy_coreset(flat, m, projection_dim=self.projection_dim, seed=self.seed)
            bank = flat[np.sort(sel)]
        else:
            bank = flat.copy()
        self._set_bank(np.ascontiguousarray(bank, dtype=np.float32), grid, np.ones(grid, np.float32))
        if n_ref:  # each cell's typical distance on training images kept out of the bank
            d = self.patch_scores(x[ref])
            self.cell_scale_ = np.maximum(d.mean(axis=0), 1e-6 * max(float(d.mean()), 1e-12)).astype(
                np.float32
            )
        self.n_train_ = int(n)
        self.n_patches_ = int(flat.shape[0])
        return self

    def _set_bank(self, bank: np.ndarray, grid: tuple[int, int], cell_scale: np.ndarray) -> None:
        import faiss

        index = faiss.IndexFlatL2(int(bank.shape[1]))
        index.add(bank)
        self.bank_ = bank
        self.grid_ = grid
        self.cell_scale_ = cell_scale
        self.faiss_ = index
        self.fitted_ = True

    @property
    def dim_(self) -> int:
        self._check_fitted()
        return int(self.bank_.shape[1])

    @property
    def memory_bytes_(self) -> int:
        """Bytes held by the memory bank (the FAISS flat index holds one more copy of the same size)."""
        self._check_fitted()
        return int(self.bank_.nbytes)

    # --- scoring ------------------------------------------------------------------------------------
    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist = np.empty((q.shape[0], k), dtype=np.float32)
        ids = np.empty((q.shape[0], k), dtype=np.int64)
        for s in range(0, q.shape[0], _SEARCH_ROWS):
            d, i = self.faiss_.search(q[s : s + _SEARCH_ROWS], k)
            dist[s : s + _SEARCH_ROWS], ids[s : s + _SEARCH_ROWS] = d, i
        return np.sqrt(np.maximum(dist, 0.0)), ids  # METRIC_L2 is squared

    def patch_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Each patch's distance to its nearest memory-bank feature, divided by that cell's typical distance on
        training images (``position_scale``; borders and corners are noisier than the middle): ``(n, h, w)``."""
        self._check_fitted()
        x = as_patch_features(embeddings, self.dim_)
        if x.shape[1:3] != self.grid_:
            raise InvalidInputError(
                f"patch features on a {x.shape[1]}×{x.shape[2]} grid; the scorer was fitted on {self.grid_[0]}×"
                f"{self.grid_[1]} (the same layers and image_size are needed)"
            )
        d, _ = self._search(x.reshape(-1, x.shape[-1]), 1)
        return d[:, 0].reshape(x.shape[:3]) / self.cell_scale_

    def _image_scores(self, x: np.ndarray, patch: np.ndarray) -> np.ndarray:
        flat = patch.reshape(patch.shape[0], -1)
        worst = flat.argmax(axis=1)
        s_max = flat[np.arange(flat.shape[0]), worst].astype(np.float64)
        if self.aggregate == "max" or self.bank_.shape[0] < 2:
            return s_max
        # PatchCore's re-weighting: w = 1 − softmax over the b bank neighbours of m* (the worst patch's nearest
        # bank feature) of the worst patch's distances to them, taken at m* itself
        q = x.reshape(x.shape[0], -1, x.shape[-1])[np.arange(x.shape[0]), worst]
        _, nearest = self._search(q, 1)
        b = min(self.reweight_neighbors, self.bank_.shape[0])
        _, nb = self._search(np.ascontiguousarray(self.bank_[nearest[:, 0]]), b)
        d = np.linalg.norm(self.bank_[nb].astype(np.float64) - q[:, None, :].astype(np.float64), axis=2)
        d = d - d.max(axis=1, keepdims=True)  # stable softmax; the ratio is unchanged
        e = np.exp(d)
        w = 1.0 - e[:, 0] / e.sum(axis=1)
        return w * s_max

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Image scores ``(n,)`` float64: the largest patch distance (optionally re-weighted)."""
        self._check_fitted()
        x = as_patch_features(embeddings, self.dim_)
        return self._image_scores(x, self.patch_scores(x))

    def score_maps(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(n,)`` and anomaly maps ``(n, image_size, image_size)`` float32: the patch scores
        upsampled bilinearly to the patch pass's input resolution (which covers the whole image: resize them
        to an image's own size to overlay) and smoothed with a Gaussian of ``sigma`` pixels."""
        self._check_fitted()
        x = as_patch_features(embeddings, self.dim_)
        patch = self.patch_scores(x)
        return self._image_scores(x, patch), anomaly_maps(patch, self.image_size, self.sigma)

    # --- state --------------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {
            "bank": self.bank_,
            "grid": np.asarray(self.grid_, dtype=np.int64),
            "cell_scale": self.cell_scale_,
        }

    @classmethod
    def from_state(
        cls, params: dict[str, Any], arrays: dict[str, np.ndarray], *, index: Any = None
    ) -> PatchKNNScorer:
        self = cls(**params)
        bank = arrays.get("bank")
        grid = arrays.get("grid")
        if bank is None or np.ndim(bank) != 2 or np.shape(bank)[0] < 1 or np.shape(bank)[1] < 1:
            raise InvalidInputError("patch-knn state lacks its 2-D memory bank ('bank')")
        if grid is None or np.shape(grid) != (2,):
            raise InvalidInputError("patch-knn state lacks its patch grid ('grid': rows, columns)")
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if not np.isfinite(bank).all():
            raise InvalidInputError("patch-knn memory bank holds NaN or infinite values")
        g = (int(grid[0]), int(grid[1]))
        scale = np.asarray(arrays.get("cell_scale", np.ones(g, np.float32)), dtype=np.float32)
        if scale.shape != g or not (np.isfinite(scale).all() and (scale > 0).all()):
            raise InvalidInputError(f"patch-knn cell_scale must be positive and finite on the {g} grid")
        self._set_bank(bank, g, scale)
        return self
