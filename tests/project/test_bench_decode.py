"""The decoding benchmark decodes its candidates at the scale of today's reader (PIL's JPEG draft mode)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_decode import draft_scale
from novelty.images import load_image


@pytest.mark.parametrize(
    "size",
    [(768, 576), (576, 768), (500, 400), (1100, 900), (2048, 1536), (3000, 2000), (259, 194), (1025, 1025)],
)
def test_draft_scale_is_the_scale_of_the_reader(size: tuple[int, int]) -> None:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buf, format="JPEG", quality=90)
    s = draft_scale(size, 256)
    assert load_image(buf.getvalue(), min_size=256).size == tuple(-(-side // s) for side in size)


def test_simplejpeg_at_the_draft_scale_gives_the_readers_pixels() -> None:
    simplejpeg = pytest.importorskip("simplejpeg")
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (73, 97, 3), dtype=np.uint8)).resize((768, 576))
    buf = io.BytesIO()
    smooth.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    s = draft_scale((768, 576), 256)
    got = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-576 // s), min_width=-(-768 // s))
    np.testing.assert_array_equal(got, np.asarray(load_image(data, min_size=256)))
