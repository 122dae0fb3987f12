"""Write the service's OpenAPI spec: ``python -m novelty.serve.openapi docs/openapi.json`` (``make openapi``).

The spec depends on the code only (no detector is loaded); a test checks that the committed file is current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["openapi_spec"]


def openapi_spec() -> dict[str, Any]:
    from novelty.serve.app import ServeConfig, create_app  # lazy: fastapi is optional

    return create_app(ServeConfig("DETECTOR_DIR", auth=False)).openapi()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = json.dumps(openapi_spec(), indent=2, ensure_ascii=False) + "\n"
    if not args or args[0] == "-":
        sys.stdout.write(text)
    else:
        Path(args[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(args[0]).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
