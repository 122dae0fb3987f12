"""Runtimes (novelty.runtimes): the registry, the fast preprocessing, agreement with fp32 PyTorch, and what a
detector records about the runtime it was calibrated with.

Runtimes whose engine is not installed are skipped with the extra that installs them."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from own_process import run_in_own_process, skip_unless_own_process  # tests/own_process.py
from PIL import Image

import novelty
from novelty.embedder import Preprocessor
from novelty.errors import InvalidInputError, NoveltyError, UnknownNameError
from novelty.runtimes import (
    AGREEMENT_TOLERANCE,
    AUTO,
    CANDIDATES,
    RUNTIME_FILE,
    RUNTIMES,
    RuntimeMismatchError,
    RuntimeMismatchWarning,
    RuntimeNotInstalledError,
    build_runtime,
    runtimes_agree,
    why_not_here,
)


def _info(name: str):
    return RUNTIMES[name] if name in RUNTIMES else CANDIDATES[name][0]


#: every runtime known: the registered ones and those measured and dropped
_KNOWN = {**{n: info for n, (info, _) in CANDIDATES.items()}, **RUNTIMES}


def _int8_runtime() -> str:
    """The runtime quantised on the training images (int8), kept or measured and dropped: there is one, and
    a registry that loses it fails here instead of skipping the checks below."""
    name = next((n for n, info in _KNOWN.items() if info.needs_calibration), None)
    assert name is not None, (
        f"no runtime that needs calibration (int8) is registered or measured: {sorted(_KNOWN)}"
    )
    return name


@pytest.fixture
def candidates(monkeypatch):
    """Build the runtimes that were measured and dropped (as the benchmark does)."""
    monkeypatch.setenv("NOVELTY_RUNTIME_CANDIDATES", "1")


def _installed(name: str) -> bool:
    info = _info(name)
    return info.module is None or importlib.util.find_spec(info.module) is not None


def _skip_unless_installed(name: str) -> None:
    info = _info(name)
    if not _installed(name):
        pytest.skip(f"runtime {name!r} needs {info.module!r}: pip install 'novelty[{info.extra}]'")
    if info.needs_calibration and importlib.util.find_spec("onnx") is None:
        pytest.skip(
            f"runtime {name!r} quantises with the 'onnx' package: pip install 'novelty[{info.extra}]'"
        )


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """48 photo-like JPEGs larger than the model's input (so resizing shrinks them, as in production)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    bases = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    out = []
    rng = np.random.default_rng(0)
    for i in range(48):
        img = Image.fromarray(bases[i % len(bases)])
        w, h = img.size
        left, top = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        img = img.crop((left, top, left + 3 * w // 4, top + 3 * h // 4)).resize((480, 360))
        if i % 3 == 1:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"p{i:02d}.jpg"
        img.save(path, quality=90)
        out.append(str(path))
    return out


@pytest.fixture(scope="module")
def fp32(photos) -> np.ndarray:
    return novelty.Embedder(device="cpu").embed(photos)


# --- the registry ---------------------------------------------------------------------------------------
def test_unknown_runtime_is_refused_with_the_list():
    with pytest.raises(UnknownNameError, match=r"registered: .*torch"):
        novelty.NoveltyDetector(runtime="tensorrt")
    with pytest.raises(UnknownNameError):
        novelty.Embedder(runtime="")


def test_a_dropped_runtime_is_refused_with_the_reason(monkeypatch):
    monkeypatch.delenv("NOVELTY_RUNTIME_CANDIDATES", raising=False)
    for name, (_, why) in CANDIDATES.items():
        assert name not in RUNTIMES
        with pytest.raises(UnknownNameError, match="measured and dropped"):
            novelty.NoveltyDetector(runtime=name)
        with pytest.raises(UnknownNameError, match=re.escape(why[:20])):
            novelty.Embedder(device="cpu", runtime=name)


def test_a_runtime_is_refused_on_a_cpu_without_the_flags_it_needs(monkeypatch):
    """A bf16 engine on a CPU without native bf16 would compute in another arithmetic than the one it was
    judged in: refused by name, with the flags it needs and the way out; ``auto`` leaves it out."""
    import novelty.runtimes as rts

    needy = {n: info for n, info in RUNTIMES.items() if info.cpu_flags}
    assert needy, f"no registered runtime needs CPU flags (the bf16 one): {sorted(RUNTIMES)}"
    monkeypatch.setattr(rts, "cpu_flags", lambda: ["sse2", "avx2"])
    cpu = torch.device("cpu")
    for name, info in needy.items():
        why = rts.why_not_here(name, cpu)
        assert why is not None and all(f in why for f in info.cpu_flags) and "avx2" in why
        with pytest.raises(InvalidInputError, match=rf"{re.escape(name)}.*cannot run here.*recalibrate"):
            novelty.Embedder(device="cpu", runtime=name)
        with pytest.raises(NoveltyError, match="cannot run here"):
            build_runtime(name, torch.nn.Identity(), device=cpu, input_size=(3, 8, 8))
    monkeypatch.setattr(rts, "cpu_flags", lambda: ["avx2", *next(iter(needy.values())).cpu_flags[:1]])
    assert rts.why_not_here(next(iter(needy)), cpu) is None
    assert rts.why_not_here("torch", cpu) is None


def test_openvino_runtimes_share_the_process_core():
    """Every OpenVINO runtime compiles from the process's one Core, which is never destroyed: a Core per runtime,
    destroyed with a runtime that ``auto`` measured and dropped, left the pytest process to die of a segmentation
    fault later in scikit-learn's k-means (reproduced with this file, test_trust.py and the drift tests)."""
    _skip_unless_installed("openvino")
    cpu = torch.device("cpu")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    a = build_runtime("openvino", net, device=cpu, input_size=(3, 16, 16))
    core = a._core
    del a
    b = build_runtime("openvino", net, device=cpu, input_size=(3, 16, 16))
    assert b._core is core
    assert b.run(torch.zeros((2, 3, 16, 16))).shape == (2, 4)


@pytest.mark.parametrize("name", ["torch", "openvino"])
def test_a_prepared_batch_runs_as_the_batch_itself(name):
    """A decode thread prepares the runtime's input ahead of the model: preparing what is prepared copies
    nothing, and the features are those of the plain batch."""
    _skip_unless_installed(name)
    cpu = torch.device("cpu")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    rt = build_runtime(name, net, device=cpu, input_size=(3, 16, 16))
    batch = torch.rand((2, 16, 16, 3)).permute(0, 3, 1, 2)  # channels-last, as preprocessing makes it
    ready = rt.prepare(batch)
    again = rt.prepare(ready)
    assert again is ready or again.data_ptr() == ready.data_ptr()
    torch.testing.assert_close(rt.run(ready), rt.run(batch), rtol=0, atol=0)


def test_precision_belongs_to_the_torch_runtime():
    others = [n for n in RUNTIMES if n != "torch"]
    assert others, f"only the torch runtime is registered: {sorted(RUNTIMES)}"
    for name in others:
        with pytest.raises(InvalidInputError, match="precision"):
            novelty.Embedder(device="cpu", runtime=name, precision="bf16")


def test_runtimes_agree_only_within_the_tolerance():
    for a, ia in RUNTIMES.items():
        assert runtimes_agree(a, a)
        for b, ib in RUNTIMES.items():
            expect = a == b or min(ia.min_cosine, ib.min_cosine) >= AGREEMENT_TOLERANCE
            assert runtimes_agree(a, b) is expect
    assert RUNTIMES["torch"].min_cosine == 1.0


def test_a_missing_engine_names_its_extra(monkeypatch):
    optional = {n: i for n, i in RUNTIMES.items() if i.module is not None and not i.needs_calibration}
    assert optional, f"no registered runtime has an optional engine: {sorted(RUNTIMES)}"
    missing: set[str] = set()
    real = importlib.import_module

    def fake(module: str, *args, **kwargs):
        if module in missing:
            raise ImportError(f"No module named {module!r}")
        return real(module, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    for name, info in optional.items():
        missing.clear()
        missing.add(str(info.module))
        with pytest.raises(RuntimeNotInstalledError, match=rf"novelty\[{info.extra}\]"):
            build_runtime(name, torch.nn.Identity(), device=torch.device("cpu"), input_size=(3, 8, 8))


def test_an_int8_runtime_without_calibration_says_how_to_get_one(candidates):
    name = _int8_runtime()
    _skip_unless_installed(name)
    with pytest.raises(NoveltyError, match="training images"):
        build_runtime(name, torch.nn.Identity(), device=torch.device("cpu"), input_size=(3, 8, 8))


# --- preprocessing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(768, 576), (576, 768), (300, 257), (1000, 999), (257, 2000)])
def test_fast_preprocessing_matches_the_timm_transform(size):
    """Resize + crop in one PIL call (box=) gives the transform's pixels to one 8-bit level at most."""
    emb = novelty.Embedder(device="cpu")
    pre = emb.preprocess
    assert pre.fast is not None  # the default backbone's transform is the usual one
    rng = np.random.default_rng(sum(size))
    base = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)  # smooth, like photos
    want = emb.transform(img)
    got = pre.batch([pre(img)])
    assert got.shape == (1, *want.shape) and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    levels = (got[0] - want).abs() * 255 * float(pre.fast["std"][0])
    assert float(levels.max()) <= 1.0 + 1e-4
    assert float((levels > 0.5).float().mean()) < 0.05  # and rarely even that


@pytest.mark.parametrize("size", [(30, 40), (100, 500), (250, 250), (224, 300)])
def test_enlarged_images_take_the_transform_exactly(size):
    emb = novelty.Embedder(device="cpu")
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    got = emb.preprocess.batch([emb.preprocess(img)])[0]
    torch.testing.assert_close(got, emb.transform(img), atol=1e-5, rtol=0)


def test_an_unusual_transform_is_applied_as_it_is():
    from torchvision import transforms as T

    tf = T.Compose([T.Resize((32, 32)), T.ToTensor()])
    pre = Preprocessor(tf, (3, 32, 32))
    assert pre.fast is None
    img = Image.new("RGB", (50, 40), (10, 20, 30))
    torch.testing.assert_close(pre.batch([pre(img)])[0], tf(img))
    assert pre.blank().shape == (3, 32, 32)


# --- agreement with fp32 PyTorch ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted([*(n for n in RUNTIMES if n != "torch"), *CANDIDATES]))
def test_runtime_embeddings_agree_with_fp32(name, photos, fp32, candidates):
    """Each runtime (kept or measured and dropped) agrees with fp32 PyTorch as well as it claims."""
    _skip_unless_installed(name)
    info = _info(name)
    if (why := why_not_here(name, torch.device("cpu"))) is not None:
        pytest.skip(f"{name}: {why}")
    if name.endswith("int8") and "vnni" not in Path("/proc/cpuinfo").read_text(errors="replace"):
        # the dropped int8 candidate's cosine was measured on CPUs with VNNI; without it the quantised kernels
        # take another path (measured on an AVX2-only AMD EPYC: below the recorded bound)
        pytest.skip(f"{name}: agreement recorded for CPUs with VNNI; this CPU has none")
    if info.needs_calibration:
        _quantised_in_own_process()
    emb = novelty.Embedder(device="cpu", runtime=name)
    if info.needs_calibration:
        emb.calibrate_runtime(photos[::2])
    out = emb.embed(photos)
    assert out.dtype == np.float32 and out.shape == fp32.shape
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cos = (out * fp32).sum(axis=1)
    assert cos.min() >= info.min_cosine, f"{name}: min cosine {cos.min():.6f} < {info.min_cosine}"
    if info.min_cosine < 1.0:  # not the reference itself: it really ran elsewhere
        assert not np.array_equal(out, fp32)


@pytest.mark.slow
def test_import_novelty_loads_no_runtime_engine():
    code = (
        "import sys, novelty; e = [m for m in ('openvino', 'onnxruntime', 'onnx') if m in sys.modules]; "
        "print(','.join(e))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- what a detector records -----------------------------------------------------------------------------
_OWN_PROCESS = "NOVELTY_TEST_QUANTISED_IN_OWN_PROCESS"


def _quantised_in_own_process() -> None:
    """Static quantisation (ONNX Runtime's tools) leaves the process in a state where later PyTorch inference
    can crash it (a segmentation fault seen in the full suite, in a test run after these): the tests that
    quantise run in a child process of their own (:func:`test_quantised_runtimes_in_a_process_of_their_own`)."""
    skip_unless_own_process(_OWN_PROCESS, "test_quantised_runtimes_in_a_process_of_their_own")


@pytest.mark.slow
def test_quantised_runtimes_in_a_process_of_their_own():
    r = run_in_own_process(__file__, _OWN_PROCESS, "-k", "int8", "-m", "slow")
    assert r.returncode in (0, 5), r.stdout[-4000:] + r.stderr[-2000:]  # 5: nothing installed to test


@pytest.mark.slow
def test_int8_detector_quantises_on_its_training_images_and_saves_the_model(photos, tmp_path, candidates):
    """The machinery of a runtime that needs calibration (int8, measured and dropped, built here as the
    benchmark builds it): quantised on the detector's own training images, saved in the artifact."""
    _quantised_in_own_process()
    name = _int8_runtime()
    _skip_unless_installed(name)
    train, held_out, test = photos[:30], photos[30:42], photos[42:]
    det = novelty.NoveltyDetector(runtime=name, seed=0).fit(train)
    assert det.calibrated_runtime_ == name and det.embedder.runtime_state() is not None
    det.save(tmp_path / "d")
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["runtime"] == {"name": name, "file": RUNTIME_FILE}
    assert manifest["backbone"]["runtime"] == name
    back = novelty.load(tmp_path / "d")
    assert back.runtime == name
    np.testing.assert_array_equal(back.score_batch(test).p_value, det.score_batch(test).p_value)
    # fp32 embeddings differ beyond the tolerance: refused, unless the calibration is redone
    with pytest.raises(RuntimeMismatchError, match="recalibrate"):
        novelty.load(tmp_path / "d", runtime="torch")
    redone = novelty.load(tmp_path / "d", runtime="torch", recalibrate=held_out)
    assert redone.runtime == "torch" and redone.calibrated_runtime_ == "torch"
    assert redone.calibrator_.n == len(held_out)
    with pytest.raises(InvalidInputError, match="training images"):
        redone.recalibrate(train[:12])


@pytest.mark.slow
def test_a_close_runtime_warns_and_the_manifest_records_torch(photos, tmp_path):
    close = next((n for n in RUNTIMES if n != "torch" and runtimes_agree(n, "torch")), None)
    assert close is not None, (
        f"no registered runtime agrees with fp32 within the tolerance: {sorted(RUNTIMES)}"
    )
    det = novelty.NoveltyDetector(seed=0).fit(photos[:30])
    det.save(tmp_path / "d")
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["runtime"] == {
        "name": "torch",
        "file": None,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeMismatchWarning)
        novelty.load(tmp_path / "d")  # the recorded runtime: no warning
    _skip_unless_installed(close)
    with pytest.warns(RuntimeMismatchWarning, match=f"scores with '{close}'"):
        back = novelty.load(tmp_path / "d", runtime=close)
    a, b = det.score_batch(photos[30:]), back.score_batch(photos[30:])
    np.testing.assert_allclose(b.scores["knn"], a.scores["knn"], rtol=0, atol=2e-3)


@pytest.mark.slow
def test_a_detector_fitted_where_its_runtime_runs_loads_elsewhere_only_recalibrated(
    photos, tmp_path, monkeypatch
):
    """A detector fitted with a runtime that needs CPU flags (bf16), moved to a CPU without them: refused
    before anything is built, with the way out; recalibrated, it scores with a runtime that runs there."""
    import novelty.runtimes as rts

    name = next((n for n, info in RUNTIMES.items() if info.cpu_flags), None)
    assert name is not None, f"no registered runtime needs CPU flags (the bf16 one): {sorted(RUNTIMES)}"
    _skip_unless_installed(name)
    if (why := why_not_here(name, torch.device("cpu"))) is not None:
        pytest.skip(f"{name} cannot be fitted here: it {why}")
    det = novelty.NoveltyDetector(runtime=name, seed=0, device="cpu").fit(photos[:30])
    det.save(tmp_path / "d")
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["runtime"]["name"] == name
    assert novelty.load(tmp_path / "d", device="cpu").runtime == name  # on its own CPU: as fitted

    monkeypatch.setattr(rts, "cpu_flags", lambda: ["avx2", "fma"])  # another CPU: no bf16 unit
    for runtime in (None, AUTO):
        with pytest.raises(RuntimeMismatchError, match=rf"calibrated with runtime '{name}'.*recalibrate="):
            novelty.load(tmp_path / "d", device="cpu", runtime=runtime)
    with pytest.raises(RuntimeMismatchError, match="recalibrate="):
        novelty.load(tmp_path / "d", device="cpu", runtime="torch")  # runs, but not with this calibration
    back = novelty.load(tmp_path / "d", device="cpu", runtime=AUTO, recalibrate=photos[30:42])
    assert back.runtime != name and back.calibrated_runtime_ == back.runtime
    assert np.isfinite(back.score_batch(photos[42:]).scores["knn"]).all()


def test_a_resumed_scoring_run_tells_runtimes_apart():
    """``novelty score`` resumes only the same run: the fitted fingerprint names a non-default runtime."""
    from novelty.identity import fitted_fingerprint

    x = np.random.default_rng(0).standard_normal((60, 1280)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    fps = {}
    for name in ("torch", "openvino"):
        det = novelty.NoveltyDetector(runtime=name, device="cpu").fit_embeddings(x)
        fps[name] = fitted_fingerprint(det)
    assert fps["torch"] != fps["openvino"]
