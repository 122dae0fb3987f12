"""The JSON the service answers with, as pydantic models: they document the API (``docs/openapi.json``);
the handlers build plain dicts of the same shape (tests validate real answers against these models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "BatchOut",
    "DetectorOut",
    "ErrorBody",
    "ErrorOut",
    "FlagList",
    "FlagOut",
    "NeighborOut",
    "ReloadOut",
    "VerdictOut",
]


class ErrorBody(BaseModel):
    code: str = Field(
        description="machine-readable: unauthorized, forbidden, too_large, request_timeout, timeout, "
        "unsupported_media_type, invalid_request, overloaded, not_ready, not_found, reload_failed, "
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
        None, description="the prediction is trusted only when the image is not novel"
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
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "the encoded image (JPEG, PNG, WebP, …) as the raw body, or a multipart form with one file",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }
            },
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["images"],
                }
            }
        },
    }
}
FLAG_FIELDS = {
    "image": {"type": "string", "format": "binary"},
    "prediction": {"type": "string", "description": "what the production model predicted"},
    "report": {"type": "string", "description": "what the user reported"},
    "source": {
        "type": "string",
        "description": "the camera / car / device; with the image's hash it identifies the flag",
    },
    "captured_at": {"type": "string", "format": "date-time"},
    "metadata": {"type": "string", "description": "a JSON object (at most 16 KiB)"},
}
FLAG_BODY = {
    "requestBody": {
        "required": True,
        "description": "multipart form with the image and the fields, or the raw image with the fields as query "
        "parameters",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": FLAG_FIELDS, "required": ["image"]}
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
