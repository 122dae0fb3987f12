"""``runtime="auto"``: the fastest registered runtime, measured on the machine at hand, recorded with what was
measured and the CPU it saw; on load, only among runtimes that may stand in for the calibration's."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest
import torch
from own_process import run_in_own_process, skip_unless_own_process  # tests/own_process.py
from skimage import data

import novelty
import novelty.runtimes as rts
from novelty.errors import InvalidInputError, NoveltyError
from novelty.machine import cpu_flags, has_bf16
from novelty.runtimes import (
    AUTO,
    RUNTIMES,
    BackboneRuntime,
    RuntimeInfo,
    RuntimeNotInstalledError,
    choose_runtime,
    runtimes_agree,
)


class Sleeper(BackboneRuntime):
    """A runtime that takes ``seconds`` per batch."""

    def __init__(self, name: str, seconds: float):
        self.info = RuntimeInfo(name, name, None, None, 1.0)
        self.seconds = seconds

    def run(self, batch, threads=None):
        time.sleep(self.seconds)
        return torch.zeros((batch.shape[0], 4))


def _choose(monkeypatch, speeds: dict[str, float | Exception], infos: dict[str, RuntimeInfo] | None = None):
    def build(name, model, **kwargs):
        v = speeds[name]
        if isinstance(v, Exception):
            raise v
        return Sleeper(name, v)

    monkeypatch.setattr(rts, "build_runtime", build)
    if infos is not None:
        monkeypatch.setattr(rts, "RUNTIMES", infos)
    return choose_runtime(
        torch.nn.Identity(), device=torch.device("cpu"), input_size=(3, 8, 8), among=list(speeds)
    )


def test_auto_keeps_the_fastest_measured(monkeypatch):
    infos = {n: RuntimeInfo(n, n, None, None, 1.0) for n in ("torch", "openvino")}
    choice, rt = _choose(monkeypatch, {"torch": 0.03, "openvino": 0.005}, infos)
    assert choice.chosen == "openvino" and rt.info.name == "openvino"
    assert choice.img_s["openvino"] > 3 * choice.img_s["torch"]
    choice, _ = _choose(monkeypatch, {"torch": 0.005, "openvino": 0.03}, infos)
    assert choice.chosen == "torch"
    assert choice.cpu_flags == tuple(cpu_flags()) and choice.bf16 == has_bf16()
    assert "native bf16: " in choice.describe() and choice.to_meta()["chosen"] == "torch"


def test_auto_leaves_out_what_cannot_run_here_and_says_why(monkeypatch):
    infos = {
        "torch": RuntimeInfo("torch", "t", None, None, 1.0),
        "openvino": RuntimeInfo("openvino", "o", "openvino", "openvino", 0.9999),
        "bf16": RuntimeInfo("bf16", "b", None, None, 0.98, cpu_flags=("no_such_flag_bf16",)),
        "gpu-only": RuntimeInfo("gpu-only", "g", None, None, 1.0, devices=("cuda",)),
    }
    missing = RuntimeNotInstalledError(
        "runtime 'openvino' needs the 'openvino' package: pip install 'novelty[openvino]'"
    )
    choice, _ = _choose(
        monkeypatch, {"torch": 0.01, "openvino": missing, "bf16": 0.0, "gpu-only": 0.0}, infos
    )
    assert choice.chosen == "torch" and list(choice.img_s) == ["torch"]
    assert "novelty[openvino]" in choice.skipped["openvino"]
    assert "no_such_flag_bf16" in choice.skipped["bf16"]
    assert "not cpu" in choice.skipped["gpu-only"]
    with pytest.raises(NoveltyError, match="no runtime can run here"):
        _choose(monkeypatch, {"openvino": missing}, infos)


def test_the_names_auto_accepts_are_checked():
    with pytest.raises(InvalidInputError, match="runtime='auto' only"):
        novelty.Embedder(runtime="torch", runtimes=["torch"])
    with pytest.raises(InvalidInputError, match="nothing to choose among"):
        novelty.Embedder(runtime=AUTO, runtimes=[])
    with pytest.raises(novelty.errors.UnknownNameError, match="or 'auto'"):
        novelty.NoveltyDetector(runtime="fastest")


def test_inner_stages_and_autocast_choose_torch():
    e = novelty.Embedder(device="cpu", runtime=AUTO, layers="final+s16")
    assert e.runtime == "torch" and list(e.runtime_choice.img_s) == ["torch"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("auto")
    out = []
    bases = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for i in range(40):
        img = Image.fromarray(bases[i % 4]).rotate(3 * i).resize((320, 240))
        img.save(folder / f"p{i:02d}.jpg", quality=90)
        out.append(str(folder / f"p{i:02d}.jpg"))
    return out


_OWN_PROCESS = "NOVELTY_TEST_AUTO_IN_OWN_PROCESS"


@pytest.mark.slow
def test_auto_detectors_in_a_process_of_their_own():
    """The detector test below builds OpenVINO several times and discards some; in the full suite, the pytest
    process then died of a segmentation fault at its next fork (``subprocess.run`` in a later test), which this
    test alone or beside ``test_runtimes.py`` never showed: it runs in a child process of its own."""
    r = run_in_own_process(__file__, _OWN_PROCESS, "-k", "records_the_choice", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout, r.stdout[-2000:]


def test_a_detector_fitted_with_auto_records_the_choice_and_loads_with_it(photos, tmp_path):
    skip_unless_own_process(_OWN_PROCESS, "test_auto_detectors_in_a_process_of_their_own")
    det = novelty.NoveltyDetector(runtime=AUTO, seed=0)
    assert det.runtime == AUTO  # chosen when the backbone loads
    det.fit(photos[:30])
    chosen = det.runtime
    assert chosen in RUNTIMES and det.embedder.runtime_choice.chosen == chosen
    if any(importlib.util.find_spec(i.module) for i in RUNTIMES.values() if i.module):
        assert len(det.embedder.runtime_choice.img_s) >= 2  # an optional engine is installed: both measured
    det.save(tmp_path / "d")
    rt = json.loads((tmp_path / "d" / "manifest.json").read_text())["runtime"]
    assert rt["name"] == chosen and rt["auto"]["chosen"] == chosen and rt["auto"]["cpu_flags"] == cpu_flags()
    back = novelty.load(tmp_path / "d")
    assert back.runtime == chosen
    again = novelty.load(tmp_path / "d", runtime=AUTO)
    assert runtimes_agree(again.runtime, chosen)
    a, b = det.score_batch(photos[30:]), again.score_batch(photos[30:])
    np.testing.assert_allclose(b.scores["knn"], a.scores["knn"], rtol=0, atol=2e-3)
