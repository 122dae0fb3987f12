"""The JSON the service answers with, as pydantic models: they document the API (``docs/openapi.json``);
the handlers build plain dicts of the same shape (tests validate real answers against these models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from novelty.flags.base import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_PREDICTION,
    MAX_REPORT,
    MAX_SOURCE,
)

__all__ = [
    "TIME_SCHEMA",
    "BatchOut",
    "DetectorOut",
    "ErrorBody",
    "ErrorOut",
    "FlagList",
    "FlagOut",
    "NeighborOut",
    "ReloadOut",
    "VerdictOut",
    "batch_body",
]


class ErrorBody(BaseModel):
    code: str = Field(
        description="machine-readable: unauthorized, forbidden, too_large, request_timeout, timeout, "
        "unsupported_media_type, invalid_request, overloaded, not_ready, not_found, image_missing, "
        "method_not_allowed, store_unavailable, reload_failed, "
        "internal, or an image error code of novelty.errors (empty, not_an_image, truncated, corrupt, "
        "too_large, unsupported, unreadable)"
    )
    message: str
    status: int


class ErrorOut(BaseModel):
    error: ErrorBody
    detector_version: str | None = None


class NeighborOut(BaseModel):
    id: str = Field(description="the training image's id (its path when fitted from files)")
    distance: float = Field(description="Euclidean distance between L2-normalised embeddings")


class ImageInfo(BaseModel):
    sha256: str
    bytes: int
    width: int
    height: int
    format: str | None = None


class VerdictOut(BaseModel):
    detector_version: str = Field(description="sha256 of the detector's manifest.json")
    novelty: float = Field(description="1 - p_value")
    p_value: float = Field(description="conformal p-value against held-out in-distribution images")
    is_novel: bool = Field(description="p_value < alpha")
    alpha: float
    score: float = Field(description="raw score behind p_value; higher = more novel")
    scores: dict[str, float] = Field(description="raw score of each scorer (higher = more novel)")
    p_values: dict[str, float] = Field(description="conformal p-value of each scorer")
    prediction: Any = Field(None, description="the condition head's class (null without a head)")
    probability: float | None = Field(None, description="its calibrated probability")
    trusted: bool | None = Field(
        None,
        description="the prediction may be acted on: the image is not novel and the head is competent here "
        "(competence ≥ the threshold that keeps at most `risk` of trusted predictions wrong)",
    )
    competence: float | None = Field(
        None,
        description="the trust rule's score (higher = the head more likely right); null for the legacy rule",
    )
    trust_rule: str | None = Field(
        None, description="how trust was decided; 'not-novel' for detectors saved before the trust decision"
    )
    neighbors: list[NeighborOut]
    image: ImageInfo


class BatchItemError(BaseModel):
    index: int
    error: ErrorBody


class BatchOut(BaseModel):
    detector_version: str
    results: list[dict[str, Any]] = Field(
        description="one entry per image, in order: a verdict (as /v1/score, plus 'index') or "
        "{'index', 'error'} for an unreadable image"
    )


class FlagOut(BaseModel):
    id: str = Field(
        description="derived from sha256 and source: the same image from the same source has one id"
    )
    sha256: str
    source: str
    size: int
    received_at: str
    prediction: str | None = None
    report: str | None = None
    captured_at: str | None = None
    detector_version: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created: bool | None = Field(None, description="POST /v1/flag only: false when it was stored before")


class FlagList(BaseModel):
    flags: list[FlagOut]
    next_after: str | None = Field(description="pass as ?after= to get the next page; null on the last page")
    detector_version: str | None = None


class DetectorOut(BaseModel):
    detector_version: str
    directory: str
    backbone: str
    runtime: str
    scorers: list[str]
    alpha: float
    classes: list[Any] | None
    n_train: int
    n_calibration: int


class ReloadOut(BaseModel):
    detector_version: str
    previous: str | None
    switched: bool


# --- request bodies, for the OpenAPI spec (the handlers read them by hand, within the limits) ---------------
# A binary part or body must be an encoded image (JPEG, PNG, WebP, …): JSON Schema cannot say so, the media
# types and descriptions do; anything else is answered 422 with an image error code (not_an_image, …).
_IMAGE = {"type": "string", "format": "binary", "minLength": 1}  # an empty body is refused (422 empty)


def _image_part(name: str) -> dict[str, Any]:
    """The encoding of a multipart image field: an image, sent as a file (a part with a filename)."""
    disposition = f'form-data; name="{name}"; filename="{name}.jpg"'
    return {
        "contentType": "image/*",
        "headers": {
            "Content-Disposition": {
                "description": "a file part: it names a filename",
                "schema": {"type": "string"},
                "example": disposition,
            }
        },
    }


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "the encoded image (JPEG, PNG, WebP, …) as the raw body, or a multipart form with one file",
        "content": {
            "image/*": {"schema": _IMAGE},
            "application/octet-stream": {"schema": _IMAGE},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": _IMAGE}, "required": ["image"]},
                "encoding": {"image": _image_part("image")},
            },
        },
    }
}


def batch_body(max_images: int) -> dict[str, Any]:
    """The request body of ``POST /v1/score:batch``: 1 to ``max_images`` image files (more: 413)."""
    # an item that is not a readable image (even an empty one) gets its error in the answer's results
    item = {"type": "string", "format": "binary"}
    images = {"type": "array", "items": item, "minItems": 1, "maxItems": max_images}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"images": images}, "required": ["images"]},
                    "encoding": {"images": _image_part("images")},
                }
            },
        }
    }


#: a time a user sends (``?since=``, ``captured_at``): RFC 3339 with a year from 1900 to 2199 (the range of
#: :func:`novelty.clock.parse_time`, which checks it in UTC), or empty for none
TIME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time", "pattern": "^(19|2[01])[0-9]{2}-"},
        {"type": "string", "maxLength": 0},
    ]
}
_NO_NUL = "^[^\\u0000]*$"  # a store cannot keep NUL characters
FLAG_FIELDS = {
    "image": _IMAGE,
    "prediction": {
        "type": "string",
        "maxLength": MAX_PREDICTION,
        "pattern": _NO_NUL,
        "description": "what the production model predicted",
    },
    "report": {
        "type": "string",
        "maxLength": MAX_REPORT,
        "pattern": _NO_NUL,
        "description": "what the user reported",
    },
    "source": {
        "type": "string",
        "maxLength": MAX_SOURCE,
        "pattern": _NO_NUL,
        "description": "the camera / car / device; with the image's hash it identifies the flag",
    },
    "captured_at": {
        **TIME_SCHEMA,
        "description": "when the image was taken: ISO 8601, from 1900-01-01 to 2199-12-31 UTC; empty: unknown",
    },
    "metadata": {
        "type": "object",
        "description": f"a JSON object: at most {MAX_METADATA_BYTES} bytes of JSON, nested at most "
        f"{MAX_METADATA_DEPTH} levels deep, valid Unicode",
    },
}
FLAG_BODY = {
    "requestBody": {
        "required": True,
        "description": "multipart form with the image and the fields, or the raw image with the fields as query "
        "parameters",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": FLAG_FIELDS, "required": ["image"]},
                "encoding": {"image": _image_part("image"), "metadata": {"contentType": "application/json"}},
            },
            "image/*": {"schema": _IMAGE},
            "application/octet-stream": {"schema": _IMAGE},
        },
    }
}
