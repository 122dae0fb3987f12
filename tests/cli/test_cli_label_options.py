"""The label commands' options reach the library: import-labels --on-conflict, export --labelled, dataset
add-csv --on-conflict (the library functions themselves are tested in test_label_conflicts and test_labelling)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from novelty.cli import main


def test_import_labels_passes_on_conflict(monkeypatch, tmp_path):
    seen: dict[str, Any] = {}

    def fake(dataset, file, selection, **kw):
        seen.update(kw)
        return SimpleNamespace(summary=lambda: "ok", counts=lambda: {})

    monkeypatch.setattr("novelty.flywheel.labels.labelimport.import_labels", fake)
    args = [
        "import-labels",
        str(tmp_path / "ds"),
        str(tmp_path / "l.csv"),
        "--selection",
        str(tmp_path / "s"),
    ]
    assert main([*args, "--on-conflict", "latest"]) == 0 and seen["on_conflict"] == "latest"
    assert main(args) == 0 and seen["on_conflict"] == "fail"
    assert main([*args, "--on-conflict", "vote"]) == 2  # a usage error


def test_export_passes_the_labelled_datasets(monkeypatch, tmp_path):
    seen: dict[str, Any] = {}

    def fake(selection, out, **kw):
        seen.update(kw)
        return SimpleNamespace(
            n_exported=0, format="csv", out_dir=out, files=[], auto=[], audit_size=0, n_already_labelled=0
        )

    monkeypatch.setattr("novelty.flywheel.labels.labelling.export_selection", fake)
    argv = ["export", str(tmp_path / "s.json"), "--out", str(tmp_path / "x"), "--format", "csv"]
    main([*argv, "--labelled", str(tmp_path / "test"), "--labelled", str(tmp_path / "slice")])
    assert seen["labelled"] == [str(tmp_path / "test"), str(tmp_path / "slice")]
    main(argv)
    assert seen["labelled"] is None
