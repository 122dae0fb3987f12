"""AutoencoderScorer on real embeddings, the combined p-value, and inference without Lightning."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import novelty
from novelty.metrics import auroc

pytestmark = pytest.mark.slow  # trains autoencoders with Lightning on real embeddings


@pytest.fixture(scope="module")
def ae_detector(textile_embeddings):
    x = textile_embeddings["nominal"]
    labels = np.where(np.arange(700) % 2 == 0, "even", "odd")  # arbitrary labels: exercises the head path
    return novelty.NoveltyDetector(scorers=("knn", "autoencoder"), calibration_fraction=0.3).fit_embeddings(
        x[:700], labels
    )


def test_autoencoder_finds_global_defects(ae_detector, textile_embeddings):
    nominal = ae_detector.score_embeddings(textile_embeddings["nominal"][700:])
    glob = ae_detector.score_embeddings(textile_embeddings["global"])
    au = {k: auroc(nominal.scores[k], glob.scores[k]) for k in ("knn", "autoencoder")}
    au["combined"] = auroc(1 - nominal.p_value, 1 - glob.p_value)
    print("AUROC nominal vs global:", au)
    assert au["autoencoder"] >= 0.9
    assert au["combined"] >= 0.9
    # per-scorer p-values are reported beside the combined one, and the calibration still holds
    assert set(nominal.p_values) == {"knn", "autoencoder"}
    assert (nominal.p_value < 0.05).mean() <= 0.1


def test_autoencoder_state_round_trip(ae_detector, textile_embeddings):
    ae = next(s for s in ae_detector.scorers_ if s.name == "autoencoder")
    back = type(ae).from_state(ae.get_params(), ae.state_arrays())
    q = textile_embeddings["local"][:50]
    np.testing.assert_array_equal(ae.score(q), back.score(q))


@pytest.mark.slow
def test_import_load_and_score_without_lightning(ae_detector, textile_embeddings, textile_paths, tmp_path):
    """`import novelty`, loading a detector with an autoencoder and a head, and scoring need no Lightning."""
    out = ae_detector.save(tmp_path / "det")
    np.save(tmp_path / "q.npy", textile_embeddings["global"][:20])
    expected = ae_detector.score_embeddings(textile_embeddings["global"][:20])
    np.save(tmp_path / "expected.npy", np.stack([expected.p_value, expected.scores["autoencoder"]]))
    code = textwrap.dedent(
        f"""
        import sys, importlib.abc

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric") or (
                    name.startswith("novelty.training")
                ):
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        import numpy as np
        import novelty
        det = novelty.load({str(out)!r})
        res = det.score_embeddings(np.load({str(tmp_path / "q.npy")!r}))
        exp = np.load({str(tmp_path / "expected.npy")!r})
        np.testing.assert_allclose(res.p_value, exp[0])
        np.testing.assert_allclose(res.scores["autoencoder"], exp[1], rtol=1e-6)
        v = det.score({str(textile_paths["global"][0])!r})
        assert v.prediction in ("even", "odd") and v.trusted is not None
        assert not any(m.split(".")[0] in ("pytorch_lightning", "lightning") for m in sys.modules)
        assert not any(m.startswith("novelty.training") for m in sys.modules)
        print("ok without lightning")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ok without lightning" in r.stdout


def test_verdicts_carry_prediction_and_trust(ae_detector, textile_embeddings):
    res = ae_detector.score_embeddings(
        np.concatenate([textile_embeddings["nominal"][700:710], textile_embeddings["global"][:10]])
    )
    assert res.classes == ["even", "odd"] and len(res.predictions) == 20
    # trusted: not novel and competent (novelty.trust), never a novel image
    expected = ~res.is_novel & (res.competence >= res.trust_threshold)
    np.testing.assert_array_equal(res.trusted, expected)
    assert not (res.trusted & res.is_novel).any()
    v = res[15]
    assert v.prediction in ("even", "odd") and 0.5 <= v.probability <= 1.0
    assert v.trusted == bool(expected[15]) and v.trust_rule == ae_detector.trust
    rec = res.to_records()[0]
    assert {"prediction", "probability", "trusted"} <= set(rec)
