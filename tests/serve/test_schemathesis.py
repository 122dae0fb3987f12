"""The service against its own OpenAPI spec: a bounded schemathesis run (slow tier).

Schemathesis generates requests from the spec the app serves (``/openapi.json``, the same as the committed
``docs/openapi.json``): valid ones must be accepted, invalid ones refused with a 4xx, no answer may be a 5xx,
and every answer must match its documented status, media type, headers and schema (all checks). The run is
bounded (``MAX_EXAMPLES`` per operation, about 30 s on two cores) and reports how many requests it made.

Two things JSON Schema cannot say are taught to the generator here, not loosened in the checks:
- a binary body or part is an *encoded image* (the spec says so in media types and words): image bodies are
  drawn as real PNG / JPEG files, of random size and colour;
- a request with more images than ``maxItems`` is refused with 413 (Content Too Large, documented), a status
  schemathesis does not count as a refusal unless told.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_support import REPO, tiny_detector

pytestmark = pytest.mark.slow

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402
from schemathesis.core.mutations import OperatorKind  # noqa: E402
from schemathesis.core.parameters import ParameterLocation  # noqa: E402
from schemathesis.specs.openapi.checks import negative_data_rejection  # noqa: E402

from novelty.serve.app import ServeConfig, create_app  # noqa: E402

TOKEN = "conformance-token-0123456789abcdef"
MAX_EXAMPLES = 50
#: what the run made and met, per operation (printed at the end of the module)
REQUESTS: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()


@st.composite
def _encoded_images(draw: st.DrawFn) -> bytes:
    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    colour = tuple(draw(st.integers(0, 255)) for _ in range(3))
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


for _media_type in ("image/png", "image/jpeg", "application/octet-stream"):
    schemathesis.openapi.media_type(_media_type, _encoded_images())


CONFIG = schemathesis.Config.from_dict(
    {
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": {
            "negative_data_rejection": {
                # schemathesis's default refusals, and 413: too many images (documented)
                "expected-statuses": [
                    *(
                        "400",
                        "401",
                        "403",
                        "404",
                        "405",
                        "406",
                        "409",
                        "413",
                        "415",
                        "422",
                        "428",
                        "429",
                        "5xx",
                    )
                ]
            }
        },
    }
)
# The app is built here (building it loads nothing) so that the schema can carry it: schemathesis's checks
# send their own probes through the schema's app. Its detector is fitted by the `service` fixture, before
# the first request starts the service; both live in ROOT, removed afterwards.
ROOT = Path(tempfile.gettempdir()) / f"novelty-conformance-{os.getpid()}"
APP = create_app(
    ServeConfig(
        ROOT / "tiny",
        flag_store=str(ROOT / "flags"),
        api_tokens=[TOKEN],
        admin_tokens=[TOKEN],  # one token for every operation, the admin reload included
        watch_interval_s=0,
        warmup=False,
    )
)
# the committed spec (tests/serve/test_serve_app.py checks that it is the one the app serves)
schema = schemathesis.openapi.from_dict(
    json.loads((REPO / "docs" / "openapi.json").read_text()), config=CONFIG
)
schema.app = APP


@pytest.fixture(scope="module")
def service() -> Iterator[None]:
    from schemathesis.python import asgi

    shutil.rmtree(ROOT, ignore_errors=True)
    tiny_detector(ROOT / "tiny")
    try:
        yield
    finally:
        asgi.shutdown_lifespans()  # stop the service (its threads) that schemathesis's ASGI client started
        shutil.rmtree(ROOT, ignore_errors=True)
        print(f"\nschemathesis: {sum(REQUESTS.values())} requests; statuses {dict(sorted(STATUSES.items()))}")


def _text_only_type_change(case) -> bool:
    """A multipart case made "invalid" only by giving text fields another JSON type: on the wire a part is
    text whatever its JSON type was (``{}`` is the text "{}"), so the request is a valid one and is accepted.
    Schemathesis counts it as invalid data accepted; its later versions skip such cases themselves."""
    meta = case.meta
    mutations = getattr(getattr(meta, "phase", None), "data", None)
    mutations = getattr(mutations, "mutations", None)
    if case.media_type != "multipart/form-data" or meta is None or not meta.generation.mode.is_negative:
        return False
    return bool(mutations) and all(
        m.operator == OperatorKind.CHANGE_TYPE
        and m.parameter_location == ParameterLocation.BODY
        and m.original_value == "string"
        for m in mutations
    )


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every run: CI judges what was measured here
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_the_service_conforms_to_its_openapi_spec(service, case) -> None:
    """No 5xx, and every conformance check of schemathesis passes, for every operation of the spec."""
    REQUESTS[f"{case.method} {case.path}"] += 1
    excluded = [negative_data_rejection] if _text_only_type_change(case) else []
    response = case.call_and_validate(excluded_checks=excluded)
    STATUSES[str(response.status_code)] += 1
    assert response.status_code < 500, response.text
