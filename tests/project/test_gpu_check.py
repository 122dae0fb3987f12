"""benchmarks/gpu_check.py runs on a CPU-only machine: every CUDA part is skipped with its reason, the CPU
parts report numbers, and the JSON holds every part."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import gpu_check


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-check")
    rng = np.random.default_rng(0)
    for i in range(12):
        base = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((320, 240), Image.Resampling.BILINEAR)
        img.save(folder / (f"g_{i}.jpg" if i % 4 == 0 else f"n_{i}.jpg"), quality=90)
    return folder


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_the_gpu_parts_skipped(jpegs, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu_check.main([str(jpegs), "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    parts = (
        "cuda_precisions",
        "cuda_batch_sizes",
        "cuda_transfer",
        "cuda_decode",
        "faiss_gpu",
        "cpu_runtimes",
        "runtime_auto",
    )
    assert all(p in report for p in parts)
    assert not any(isinstance(report[p], dict) and "error" in report[p] for p in parts), report
    assert report["n_images"] == 12 and report["cpu_reference"]["img_s"] > 0
    if not torch.cuda.is_available():
        for p in ("cuda_precisions", "cuda_batch_sizes", "cuda_transfer", "cuda_decode"):
            assert "no CUDA device" in report[p]["skipped"]
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        assert "without GPU support" in report["faiss_gpu"]["skipped"]
    rows = {r["runtime"]: r for r in report["cpu_runtimes"]}
    assert rows["torch"]["min_cosine_vs_torch"] > 0.99999 and rows["torch"]["model_only_img_s"] > 0
    for r in rows.values():
        assert "skipped" in r or r["model_only_img_s"] > 0
    auto = report["runtime_auto"]
    assert auto["cpu"]["chosen"] in rows and auto["cpu"]["img_s"]["torch"] > 0
    if not torch.cuda.is_available():
        assert "no CUDA device" in auto["cuda"]["skipped"]


def test_gpu_check_require_gpu_exits_2_without_cuda(jpegs, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_check.main([str(jpegs), "--require-gpu"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_gpu_check_needs_images(tmp_path, capsys):
    assert gpu_check.main([str(tmp_path)]) == 2
    assert "need at least 8 JPEGs" in capsys.readouterr().err
