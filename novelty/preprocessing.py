"""Decoding and preprocessing for the embedder: one source → the model's input, errors as records.

:class:`Preprocessor` is the backbone's eval transform split so that batches stay cheap (one PIL call resizes and
crops; conversion and normalisation run once per batch). :class:`ImageDataset` decodes one source in a
``DataLoader`` worker and sends an unreadable one back as a plain error record (picklable), never an exception
that stops the batch; :func:`decode_ahead` decodes the next batch in a thread while the model runs this one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from novelty import errors as E
from novelty.errors import ImageError, InvalidInputError
from novelty.images import describe_source, load_image

__all__ = ["ERROR_TYPES", "ImageDataset", "Preprocessor", "collate", "decode_ahead"]


ERROR_TYPES: dict[str, type[ImageError]] = {
    cls.__name__: cls
    for cls in (
        E.ImageError,
        E.ImageNotFoundError,
        E.EmptyImageError,
        E.NotAnImageError,
        E.TruncatedImageError,
        E.CorruptImageError,
        E.ImageTooLargeError,
        E.UnsupportedImageError,
        E.ImagePermissionError,
    )
}


class ImageDataset(torch.utils.data.Dataset):
    """Decodes and transforms one source; errors travel back as plain tuples (picklable)."""

    def __init__(
        self,
        sources: Sequence[Any],
        preprocess: Preprocessor,
        min_size: int | None,
        max_pixels: int | None,
    ):
        self.sources = sources
        self.preprocess = preprocess
        self.min_size = min_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[Any, int, tuple[str, str, str] | None, tuple[int, int]]:
        info: dict[str, Any] = {}
        try:
            img = load_image(self.sources[i], min_size=self.min_size, max_pixels=self.max_pixels, info=info)
            return self.preprocess(img), i, None, (int(info["width"]), int(info["height"]))
        except ImageError as e:
            return self.preprocess.blank(), i, (type(e).__name__, e.source, e.reason), (-1, -1)
        except InvalidInputError as e:
            return (
                self.preprocess.blank(),
                i,
                ("ImageError", describe_source(self.sources[i]), str(e)),
                (-1, -1),
            )


class Preprocessor:
    """The model's eval transform, split so that batches stay cheap.

    ``__call__`` turns one decoded image into the model's input; ``batch`` stacks those into a float32
    ``(n, 3, H, W)`` channels-last tensor. For timm's usual eval transform (shortest side resized, centre
    crop, to tensor, normalise) the resize and the crop are one PIL call (``resize(box=...)``: only the
    pixels the crop keeps are computed, in PIL's fixed-point arithmetic) that yields ``uint8`` ``H×W×3``,
    and conversion and normalisation run once per batch, vectorised; the result equals the transform's to
    float rounding (tested). Any other transform is applied as it is, image by image.
    """

    def __init__(self, transform: Any, input_size: tuple[int, int, int]):
        self.transform = transform
        self.input_size = input_size
        self.fast = _fast_plan(transform)
        if self.fast is not None:
            mean, std = self.fast["mean"], self.fast["std"]
            self._scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1)
            self._offset = (mean / std).reshape(1, 3, 1, 1)

    def __call__(self, img: Any) -> Any:
        plan = self.fast
        if plan is None:
            return self.transform(img)
        w, h = img.size
        short, long_ = (w, h) if w <= h else (h, w)
        size = plan["size"]
        new_long = int(size * long_ / short)  # torchvision's rounding of the long side
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        ch, cw = plan["crop"]
        if new_w < cw or new_h < ch or new_w > w or new_h > h:
            # a crop that pads, or an enlargement (where PIL's box resampling differs from the full
            # resize near the edges): the transform itself, back to uint8 exactly
            return _to_uint8_hwc(self.transform(img), plan)
        top, left = int(round((new_h - ch) / 2.0)), int(round((new_w - cw) / 2.0))
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
        return np.asarray(img.resize((cw, ch), plan["resample"], box=box), dtype=np.uint8)

    def blank(self) -> Any:
        """The placeholder of an unreadable image (its row is never used)."""
        if self.fast is None:
            return torch.zeros(self.input_size)
        return np.zeros((*self.input_size[1:], 3), dtype=np.uint8)

    def batch(self, items: Sequence[Any], device: torch.device | None = None) -> torch.Tensor:
        """Stack preprocessed images into the model's input, on ``device`` (CUDA: the uint8 pixels travel
        from pinned memory, four times fewer bytes than floats, and are normalised there)."""
        if self.fast is None:
            x = torch.stack(list(items))
            if device is not None and device.type == "cuda":
                return x.pin_memory().to(device, non_blocking=True)
            return x
        u8 = torch.from_numpy(np.stack(items))
        scale, offset = self._scale, self._offset
        if device is not None and device.type == "cuda":
            u8 = u8.pin_memory().to(device, non_blocking=True)
            scale, offset = scale.to(device), offset.to(device)
        x = u8.permute(0, 3, 1, 2)  # a channels-last view, no copy
        return (x.float() * scale).sub_(offset)


def _fast_plan(transform: Any) -> dict[str, Any] | None:
    """Resize size, crop, resample filter, mean and std when ``transform`` is timm's usual eval transform."""
    from PIL import Image
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    if len(steps) != 4:
        return None
    resize, crop, to_tensor, norm = steps
    resample = {
        T.InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
        T.InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
    }
    size = resize.size if isinstance(getattr(resize, "size", None), int) else None
    if isinstance(getattr(resize, "size", None), (list, tuple)) and len(resize.size) == 1:
        size = int(resize.size[0])
    if (
        type(resize) is not T.Resize
        or size is None
        or resize.max_size is not None
        or resize.interpolation not in resample
        or type(crop) is not T.CenterCrop
        or type(to_tensor).__name__ not in ("ToTensor", "MaybeToTensor")
        or type(norm) is not T.Normalize
    ):
        return None
    return {
        "size": size,
        "crop": tuple(int(c) for c in crop.size),
        "resample": resample[resize.interpolation],
        "mean": torch.as_tensor(norm.mean, dtype=torch.float32),
        "std": torch.as_tensor(norm.std, dtype=torch.float32),
    }


def _to_uint8_hwc(x: torch.Tensor, plan: dict[str, Any]) -> np.ndarray:
    """Undo to-tensor + normalise (the rare padded crop of a tiny image)."""
    px = (x * plan["std"].reshape(3, 1, 1) + plan["mean"].reshape(3, 1, 1)) * 255.0
    return px.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


Batch = tuple[list[Any], list[int], list, list]  # items, positions, error records, original sizes


def batch_loader(
    ds: ImageDataset, batch_size: int, workers: int, prepare: Callable[[list[Any]], Any] | None = None
) -> Iterable[Batch]:
    """Batches of ``ds`` in order: from ``workers`` decoding processes, or, with ``prepare`` and no workers, from
    a thread that decodes the next batch and makes its readable items into the model's input
    (``prepare(items)``, the batch's only item then) while the caller runs the model on this one."""
    if workers == 0 and prepare is not None:
        return decode_ahead(ds, batch_size, prepare)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def decode_ahead(
    ds: ImageDataset, batch_size: int, prepare: Callable[[list[Any]], Any] | None = None
) -> Iterator[Batch]:
    """Batches of ``ds`` in order, the next one decoded in a thread while the caller runs the model on this
    one (PIL decodes and resizes, NumPy and PyTorch stack and normalise, and the runtimes compute, with the GIL
    released). ``prepare``, when given, makes the readable items into the model's input in that thread too."""
    from concurrent.futures import ThreadPoolExecutor

    starts = range(0, len(ds), batch_size)

    def load(s: int) -> Batch:
        items, idx, errs, sizes = collate([ds[i] for i in range(s, min(s + batch_size, len(ds)))])
        if prepare is None:
            return items, idx, errs, sizes
        ok = [it for it, e in zip(items, errs, strict=True) if e is None]
        return ([prepare(ok)] if ok else []), idx, errs, sizes

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="novelty-decode") as pool:
        pending = pool.submit(load, starts[0])
        for s in starts[1:]:
            ready = pending.result()
            pending = pool.submit(load, s)
            yield ready
        yield pending.result()


def collate(items: list) -> tuple[list[Any], list[int], list, list]:
    return (
        [it[0] for it in items],
        [it[1] for it in items],
        [it[2] for it in items],
        [it[3] for it in items],
    )
