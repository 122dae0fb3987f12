"""Where the backbone's forward pass runs: PyTorch (the reference) or a faster optional engine.

    Embedder(runtime="openvino")          # or NoveltyDetector(runtime=...), novelty score --runtime ...

A runtime takes a preprocessed ``(n, 3, H, W)`` float32 batch and returns the backbone's pooled features
``(n, d)`` as float32 (the :class:`~novelty.embedder.Embedder` normalises them). Every runtime but
``"torch"`` changes the arithmetic, so its embeddings differ slightly from fp32 PyTorch: each entry states
the smallest cosine to fp32 it is held to (``min_cosine``, checked in the tests and measured in
``benchmarks/RESULTS.md``, "Runtimes"). A detector records the runtime it was fitted with
(:mod:`novelty.persistence`), because scores — and so its calibration — belong to one runtime.

Only runtimes that won the benchmark are registered here; those tried and dropped are listed with their
numbers in ``benchmarks/RESULTS.md``. The optional engines are imported when a runtime is built, never at
``import novelty``; a missing one raises :class:`RuntimeNotInstalledError` naming the extra to install.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from novelty.errors import NoveltyError, UnknownNameError
from novelty.machine import BF16_FLAGS, cpu_flags, cpu_model, has_bf16

log = logging.getLogger(__name__)

__all__ = [
    "AUTO",
    "CANDIDATES",
    "DEFAULT_RUNTIME",
    "RUNTIMES",
    "BackboneRuntime",
    "RuntimeChoice",
    "RuntimeInfo",
    "RuntimeMismatchError",
    "RuntimeMismatchWarning",
    "RuntimeNotInstalledError",
    "build_runtime",
    "check_runtime",
    "choose_runtime",
    "runtime_info",
    "runtimes_agree",
    "why_not_here",
]

DEFAULT_RUNTIME = "torch"
#: ``runtime="auto"``: the fastest registered runtime on the machine at hand, measured (:func:`choose_runtime`)
AUTO = "auto"
#: the file of a saved detector that holds an int8 runtime's quantised backbone (ONNX)
RUNTIME_FILE = "runtime_int8.onnx"


class RuntimeNotInstalledError(NoveltyError, ImportError):
    """The engine a runtime needs is not installed; the message names the extra to install."""


class RuntimeMismatchWarning(UserWarning):
    """A detector scores with another runtime than the one it was calibrated with (within the tolerance)."""


class RuntimeMismatchError(NoveltyError):
    """A detector would score with a runtime whose embeddings differ from its calibration's beyond the
    tolerance; recalibrate it (``load(..., recalibrate=images)``) or use the recorded runtime."""


#: Runtimes whose embeddings agree with fp32 PyTorch at least this well (smallest cosine, tested) may replace
#: one another with a warning; any other change of runtime needs the calibration redone.
AGREEMENT_TOLERANCE = 0.9999


@dataclass(frozen=True)
class RuntimeInfo:
    """What the registry knows about a runtime before building it."""

    name: str
    description: str
    module: str | None  # the optional engine's import name (None: PyTorch itself)
    extra: str | None  # pip extra that installs it
    min_cosine: float  # the embeddings' smallest cosine to fp32 PyTorch that this runtime is held to
    needs_calibration: bool = False  # int8: quantised from the detector's own training images
    devices: tuple[str, ...] = ("cpu",)
    cpu_flags: tuple[str, ...] = ()  # any one of these CPU flags is needed (bf16: avx512_bf16 or amx_bf16)
    # how long `novelty serve`'s micro-batcher waits, by default, for images still decoding to join a batch:
    # a fast forward pass leaves batches small unless it waits longer (measured in benchmarks/RESULTS.md, "The
    # service with bf16"); a slow one gains nothing from waiting and loses latency
    serve_wait_ms: float = 5.0


class BackboneRuntime:
    """A built runtime: ``run(batch)`` → features. ``state()`` holds what a saved detector must keep
    (the quantised model of an int8 runtime), ``None`` when rebuilding from the backbone is enough."""

    info: RuntimeInfo

    def prepare(self, batch: torch.Tensor) -> Any:
        """``batch`` in the memory layout :meth:`run` computes on. :meth:`run` prepares what it is given, and
        preparing twice costs nothing, so a decode thread may do this part ahead of the model."""
        return batch

    def run(self, batch: Any, threads: int | None = None) -> torch.Tensor:
        """The features of ``batch`` (a preprocessed tensor, or what :meth:`prepare` made of one), computed
        with ``threads`` compute threads (``None``: the runtime's own count; :mod:`novelty.threads` chooses one
        per batch)."""
        raise NotImplementedError

    def state(self) -> bytes | None:
        return None


# --- PyTorch --------------------------------------------------------------------------------------
class TorchRuntime(BackboneRuntime):
    """Eager PyTorch, channels-last, optionally under autocast (``precision``)."""

    def __init__(self, model: nn.Module, device: torch.device, autocast: torch.dtype | None = None):
        self.model = model
        self.device = device
        self.autocast = autocast

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu":
            return batch
        return batch.contiguous(memory_format=torch.channels_last)

    def run(self, batch: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        # PyTorch's thread count is the process's: set for this pass only, then given back
        before = torch.get_num_threads()
        if threads is not None and threads != before and self.device.type == "cpu":
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                x = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                if self.autocast is not None:
                    with torch.autocast(device_type=self.device.type, dtype=self.autocast):
                        return self.model(x).float()
                return self.model(x).float()
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)


# --- export ---------------------------------------------------------------------------------------
def export_onnx(model: nn.Module, input_size: tuple[int, int, int]) -> bytes:
    """The backbone as ONNX bytes (batch dimension dynamic), via PyTorch's TorchScript exporter."""
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    buf: Any = io.BytesIO()  # the exporter writes to a file object too, though typed for paths only
    with warnings.catch_warnings():  # the exporter's deprecation notice: nothing a caller can act on
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros((1, *input_size)),),
            buf,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "n"}, "features": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def _require(module: str, runtime: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise RuntimeNotInstalledError(
            f"runtime {runtime!r} needs the {module!r} package: pip install 'novelty[{extra}]' ({e})"
        ) from None


def _threads() -> int:
    return max(1, torch.get_num_threads())


# --- OpenVINO -------------------------------------------------------------------------------------
_OV_CORE: Any = None
_OV_CORE_LOCK = threading.Lock()


def _ov_core(ov: Any) -> Any:
    """The process's one OpenVINO ``Core``, created on first use and never destroyed: every compiled model
    comes from it. A Core per runtime, destroyed with it (as ``runtime="auto"`` does with the runtimes it
    measured and did not keep), left the process to die of a segmentation fault later, in unrelated native
    code (scikit-learn's k-means, a fork), in the test suite."""
    global _OV_CORE
    with _OV_CORE_LOCK:
        if _OV_CORE is None:
            _OV_CORE = ov.Core()
        return _OV_CORE


def _contiguous_f32(batch: Any) -> np.ndarray:
    """A C-contiguous float32 NCHW array of ``batch`` (a tensor, or an array already in that form: no copy)."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    return np.ascontiguousarray(batch, dtype=np.float32)


class OpenVINORuntime(BackboneRuntime):
    """OpenVINO's CPU plugin. ``precision`` ``"f32"`` or ``"bf16"`` (AMX/AVX512-BF16 where the CPU has it).
    ``onnx``: the model to compile (the backbone exported, or its int8-quantised form)."""

    def __init__(self, onnx: bytes, info: RuntimeInfo, precision: str = "f32", threads: int | None = None):
        ov = _require("openvino", info.name, info.extra or "openvino")
        self.info = info
        self._onnx = onnx
        core = _ov_core(ov)
        with tempfile.TemporaryDirectory(prefix="novelty-ov-") as tmp:  # read_model takes a path for ONNX
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(onnx)
            self._model = core.read_model(path)
        self._core = core
        self._precision = precision
        self.threads = threads or _threads()
        # per thread count: the compiled model and its inference request, both kept alive together (a request
        # must never outlive the compiled model it runs)
        self._compiled: dict[int, tuple[Any, Any]] = {}
        self._request(self.threads)

    def _request(self, threads: int) -> Any:
        """An inference request of the model compiled for ``threads`` threads (compiled on first use: OpenVINO
        fixes the count at compile time)."""
        if threads not in self._compiled:
            config = {
                "INFERENCE_PRECISION_HINT": self._precision,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
            }
            compiled = self._core.compile_model(self._model, "CPU", config)
            self._compiled[threads] = (compiled, compiled.create_infer_request())
        return self._compiled[threads][1]

    def prepare(self, batch: Any) -> np.ndarray:
        return _contiguous_f32(batch)

    def run(self, batch: Any, threads: int | None = None) -> torch.Tensor:
        # the array is the request's input for this call only, read in place rather than copied
        out = self._request(threads or self.threads).infer({0: _contiguous_f32(batch)}, share_inputs=True)[0]
        return torch.from_numpy(np.array(out, dtype=np.float32))

    def state(self) -> bytes | None:
        return self._onnx if self.info.needs_calibration else None


# --- ONNX Runtime ---------------------------------------------------------------------------------
class OnnxRuntime(BackboneRuntime):
    def __init__(self, onnx: bytes, info: RuntimeInfo, threads: int | None = None):
        ort = _require("onnxruntime", info.name, info.extra or "onnxruntime")
        self.info = info
        self._onnx = onnx
        self._ort = ort
        self.threads = threads or _threads()
        self._sessions: dict[int, Any] = {}
        self._session(self.threads)

    def _session(self, threads: int) -> Any:
        if threads not in self._sessions:  # the count is fixed per session
            so = self._ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            self._sessions[threads] = self._ort.InferenceSession(
                self._onnx, so, providers=["CPUExecutionProvider"]
            )
        return self._sessions[threads]

    def prepare(self, batch: Any) -> np.ndarray:
        return _contiguous_f32(batch)

    def run(self, batch: Any, threads: int | None = None) -> torch.Tensor:
        out = self._session(threads or self.threads).run(None, {"images": _contiguous_f32(batch)})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def state(self) -> bytes | None:
        return self._onnx if self.info.needs_calibration else None


# --- int8 static quantisation -----------------------------------------------------------------------
def quantize_int8(onnx: bytes, calibration: Iterable[np.ndarray], runtime: str) -> bytes:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) of an ONNX backbone;
    activation ranges are calibrated on ``calibration`` batches — the detector's own training images."""
    _require("onnx", runtime, "runtimes")
    _require("onnxruntime", runtime, "runtimes")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise NoveltyError(f"runtime {runtime!r} needs calibration images to quantise the backbone")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._it, None)
            return None if b is None else {"images": b}

    with tempfile.TemporaryDirectory(prefix="novelty-int8-") as tmp:
        src, pre, dst = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        with open(src, "wb") as f:
            f.write(onnx)
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(
            pre,
            dst,
            _Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        with open(dst, "rb") as fr:
            return fr.read()


# --- the registry ---------------------------------------------------------------------------------
RUNTIMES: dict[str, RuntimeInfo] = {
    info.name: info
    for info in (
        RuntimeInfo(
            "torch",
            "PyTorch eager, fp32, channels-last (the reference)",
            None,
            None,
            1.0,
            devices=("cpu", "cuda"),
        ),
        RuntimeInfo("openvino", "OpenVINO CPU plugin, fp32", "openvino", "openvino", 0.9999),
        # judged by what the detector does, not by cosine (benchmarks/runtime_quality.py): fitted and calibrated
        # with its own embeddings it keeps every AUROC of the OOD benchmark within 0.005 of fp32's and false
        # alarms within 0.02, on all six scenarios at full size; its embeddings' cosine to fp32 goes down to
        # 0.979 (street), so it never stands in for an fp32 calibration (see runtimes_agree)
        RuntimeInfo(
            "openvino-bf16",
            "OpenVINO CPU plugin, bf16 (AVX512-BF16 / AMX)",
            "openvino",
            "openvino",
            0.97,
            cpu_flags=BF16_FLAGS,
            serve_wait_ms=20.0,
        ),
    )
}

#: Runtimes measured and dropped (numbers in benchmarks/RESULTS.md, "Runtimes"), with the reason. They are not
#: offered; ``NOVELTY_RUNTIME_CANDIDATES=1`` builds them for ``benchmarks/bench_runtimes.py`` and the tests.
CANDIDATES: dict[str, tuple[RuntimeInfo, str]] = {
    info.name: (info, why)
    for info, why in (
        (
            RuntimeInfo(
                "openvino-int8",
                "int8 static quantisation calibrated on the training images, run by OpenVINO",
                "openvino",
                "runtimes",
                0.9,
                needs_calibration=True,
            ),
            "AUROC moves by up to 0.016 against fp32 (street glare), beyond the 0.005 allowed; without VNNI its "
            "embeddings fall to a cosine of 0.34 and false alarms move by 0.29",
        ),
        (
            RuntimeInfo("onnxruntime", "ONNX Runtime CPU, fp32", "onnxruntime", "runtimes", 0.9999),
            "slower than 'openvino', with the same fp32 results",
        ),
    )
}


def _candidates_enabled() -> bool:
    return os.environ.get("NOVELTY_RUNTIME_CANDIDATES", "") == "1"


def check_runtime(name: object, *, auto: bool = False) -> str:
    """The runtime's name, or :class:`~novelty.errors.UnknownNameError` listing the registered ones (and
    saying why, for a runtime that was measured and dropped). ``auto``: :data:`AUTO` is accepted too."""
    if isinstance(name, str) and (name in RUNTIMES or (name in CANDIDATES and _candidates_enabled())):
        return name
    if auto and name == AUTO:
        return AUTO
    known = ", ".join(sorted(RUNTIMES)) + (f" (or {AUTO!r})" if auto else "")
    if isinstance(name, str) and name in CANDIDATES:
        raise UnknownNameError(
            f"runtime {name!r} was measured and dropped: {CANDIDATES[name][1]} (benchmarks/RESULTS.md, "
            f"'Runtimes'); registered: {known}"
        )
    raise UnknownNameError(f"unknown runtime {name!r}; registered: {known}")


@dataclass(frozen=True)
class RuntimeChoice:
    """What ``runtime="auto"`` measured and chose: each runtime's img/s on the model, why the others were not
    measured, and the CPU it ran on (model, SIMD flags, native bf16 or not)."""

    chosen: str
    img_s: dict[str, float]
    skipped: dict[str, str]
    cpu: str
    cpu_flags: tuple[str, ...]
    bf16: bool

    def describe(self) -> str:
        rates = ", ".join(f"{k} {v:.1f} img/s" for k, v in sorted(self.img_s.items(), key=lambda kv: -kv[1]))
        skipped = "; ".join(f"{k}: {v}" for k, v in self.skipped.items())
        return (
            f"runtime 'auto' chose {self.chosen!r} ({rates}) on {self.cpu} "
            f"[{' '.join(self.cpu_flags) or 'no SIMD flags read'}; native bf16: {'yes' if self.bf16 else 'no'}]"
            + (f"; not measured: {skipped}" if skipped else "")
        )

    def to_meta(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "img_s": {k: round(v, 1) for k, v in self.img_s.items()},
            "skipped": dict(self.skipped),
            "cpu": self.cpu,
            "cpu_flags": list(self.cpu_flags),
            "bf16": self.bf16,
        }


#: images per timed batch, and timed batches (after one warm-up) per runtime, when ``"auto"`` measures
CHOICE_BATCH = 8
CHOICE_REPEATS = 3


def choose_runtime(
    model: nn.Module,
    *,
    device: torch.device,
    input_size: tuple[int, int, int],
    among: Iterable[str] | None = None,
    threads: int | None = None,
) -> tuple[RuntimeChoice, BackboneRuntime]:
    """The fastest of ``among`` (default: every registered runtime) for ``model`` on this machine, measured on
    a batch of :data:`CHOICE_BATCH` images (median of :data:`CHOICE_REPEATS` after a warm-up), with the built
    runtime. A runtime is left out, with the reason, when it does not run on ``device``, its engine is not
    installed, or the CPU lacks the flags it needs; ``torch`` always qualifies."""
    flags = cpu_flags()
    names = list(RUNTIMES) if among is None else [check_runtime(n) for n in among]
    if not names:
        raise NoveltyError("runtime 'auto' has no runtime to choose among")
    x = torch.randn((CHOICE_BATCH, *input_size), generator=torch.Generator().manual_seed(0))
    built: dict[str, BackboneRuntime] = {}
    rates: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name in names:
        info = runtime_info(name)
        why = why_not_here(name, device)
        if why is not None:
            skipped[name] = why
            continue
        if info.needs_calibration:
            skipped[name] = "quantised from training images: name it explicitly"
            continue
        try:
            rt = build_runtime(name, model, device=device, input_size=input_size, threads=threads)
        except RuntimeNotInstalledError as e:
            skipped[name] = str(e)
            continue
        rt.run(x)  # warm-up: first-call allocations, lazy compilation
        times = []
        for _ in range(CHOICE_REPEATS):
            start = time.perf_counter()
            rt.run(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        built[name] = rt
        rates[name] = CHOICE_BATCH / sorted(times)[len(times) // 2]
    if not rates:
        raise NoveltyError(f"runtime 'auto': no runtime can run here ({'; '.join(skipped.values())})")
    chosen = max(rates, key=lambda n: (rates[n], n == DEFAULT_RUNTIME))
    choice = RuntimeChoice(chosen, rates, skipped, cpu_model(), tuple(flags), has_bf16())
    log.info("%s", choice.describe())
    return choice, built[chosen]


def why_not_here(name: str, device: torch.device) -> str | None:
    """Why runtime ``name`` cannot run on ``device`` of this machine (another device type, or CPU flags it
    needs and this CPU lacks: a bf16 engine without ``avx512_bf16`` or ``amx_bf16`` would compute in another
    arithmetic than the one it was judged in), or ``None`` when it can."""
    info = runtime_info(name)
    if device.type not in info.devices:
        return f"runs on {', '.join(info.devices)}, not {device.type}"
    if device.type == "cpu" and info.cpu_flags:
        flags = cpu_flags()
        if not set(info.cpu_flags) & set(flags):
            return (
                f"needs one of the CPU flags {', '.join(info.cpu_flags)}; this CPU ({cpu_model()}) has "
                f"{' '.join(flags) or 'no SIMD flags read'}"
            )
    return None


def runtime_info(name: str) -> RuntimeInfo:
    name = check_runtime(name)
    return RUNTIMES[name] if name in RUNTIMES else CANDIDATES[name][0]


def runtimes_agree(a: str, b: str) -> bool:
    """Whether runtime ``a``'s embeddings stand in for ``b``'s without redoing the calibration: the same
    runtime, or two whose embeddings both agree with fp32 PyTorch within :data:`AGREEMENT_TOLERANCE`."""
    if a == b:
        return True
    return min(runtime_info(a).min_cosine, runtime_info(b).min_cosine) >= AGREEMENT_TOLERANCE


def build_runtime(
    name: str,
    model: nn.Module,
    *,
    device: torch.device,
    input_size: tuple[int, int, int],
    autocast: torch.dtype | None = None,
    calibration: Callable[[], Iterable[np.ndarray]] | None = None,
    state: bytes | None = None,
    threads: int | None = None,
) -> BackboneRuntime:
    """Build runtime ``name`` for ``model``. An int8 runtime quantises from ``calibration()`` batches, or
    reuses ``state`` (the quantised model a saved detector kept)."""
    info = runtime_info(name)
    why = why_not_here(name, device)
    if why is not None:
        raise NoveltyError(f"runtime {name!r} cannot run here: it {why}")
    if name == "torch":
        rt = TorchRuntime(model, device, autocast)
        rt.info = info
        return rt
    if info.module is not None:
        _require(info.module, name, info.extra or info.module)
        _require("onnx", name, info.extra or info.module)  # PyTorch's ONNX export needs it
    if info.needs_calibration:
        if state is None:
            if calibration is None:
                raise NoveltyError(
                    f"runtime {name!r} quantises the backbone from the detector's training images: fit a detector "
                    "with it (NoveltyDetector(runtime=...).fit(images)), or load one that was"
                )
            state = quantize_int8(export_onnx(model, input_size), calibration(), name)
        onnx = state
    else:
        onnx = export_onnx(model, input_size)
    if name.startswith("openvino"):
        return OpenVINORuntime(
            onnx, info, precision="bf16" if name == "openvino-bf16" else "f32", threads=threads
        )
    return OnnxRuntime(onnx, info, threads=threads)
