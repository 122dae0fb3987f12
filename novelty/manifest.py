"""Typed access to a manifest read from untrusted JSON (a detector artifact's ``manifest.json``).

A hand-edited manifest with a missing key or a value of the wrong type gives an
:class:`~novelty.errors.ArtifactError` that names the key and the type expected — never a ``KeyError``,
``TypeError`` or ``AttributeError`` from deep inside the loader.
"""

from __future__ import annotations

import math
from typing import Any

from novelty.errors import ArtifactError

__all__ = ["ManifestReader", "json_type"]

_KINDS: dict[str, tuple[Any, str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "a finite number",
    ),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "null": (lambda v: v is None, "null"),
}
_REQUIRED: Any = object()


def json_type(value: object) -> str:
    for kind in ("null", "bool", "str", "int", "number", "list", "dict"):
        if _KINDS[kind][0](value):
            return {"str": "a string", "int": "an integer", "number": "a number"}.get(kind, _KINDS[kind][1])
    return f"{type(value).__name__} {value!r}"


class ManifestReader:
    """Typed access to a manifest loaded from untrusted JSON: every missing key or wrong type becomes an
    :class:`ArtifactError` naming the key and the expected type (never ``KeyError`` / ``TypeError``)."""

    def __init__(self, source: str):
        self.source = source  # e.g. "detectors/x/manifest.json", the start of every message

    def get(
        self, section: Any, key: str | int, kind: str, *, where: str = "", default: Any = _REQUIRED
    ) -> Any:
        """``section[key]`` checked against ``kind`` (``"int"``, ``"str|null"``…); ``default`` when absent."""
        path = f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else key)
        kinds = kind.split("|")
        expected = " or ".join(_KINDS[k][1] for k in kinds)
        if isinstance(key, int):
            if not isinstance(section, list):
                raise ArtifactError(f"{self.source}: {where!r} must be a list, got {json_type(section)}")
            present = 0 <= key < len(section)
        else:
            if not isinstance(section, dict):
                raise ArtifactError(
                    f"{self.source}: {where or 'the manifest'!r} must be an object, got {json_type(section)}"
                )
            present = key in section
        if not present:
            if default is not _REQUIRED:
                return default
            raise ArtifactError(f"{self.source}: the key {path!r} is missing (expected {expected})")
        value = section[key]
        if not any(_KINDS[k][0](value) for k in kinds):
            raise ArtifactError(
                f"{self.source}: {path!r} must be {expected}, got {json_type(value)}; "
                "the manifest was edited or written by another program"
            )
        return value

    def section(self, parent: Any, key: str | int, *, where: str = "", optional: bool = False) -> Any:
        """A nested object (``dict``); ``None`` when ``optional`` and absent or null."""
        if optional:
            return self.get(parent, key, "dict|null", where=where, default=None)
        return self.get(parent, key, "dict", where=where)
