"""Exceptions raised by novelty.

Every error a user can trigger is a subclass of :class:`NoveltyError`, so a service can catch one type.
Image errors carry the offending ``source`` (a path or a short description) and a ``reason``.
"""

from __future__ import annotations

from typing import Any


class NoveltyError(Exception):
    """Base class of every exception raised by novelty."""


# --- images ---------------------------------------------------------------------------------------
class ImageError(NoveltyError, ValueError):
    """An input could not be turned into an RGB image. ``source`` names it, ``reason`` says why."""

    reason_code = "unreadable"

    def __init__(self, source: Any, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class ImageNotFoundError(ImageError, FileNotFoundError):
    reason_code = "not_found"


class EmptyImageError(ImageError):
    reason_code = "empty"


class NotAnImageError(ImageError):
    reason_code = "not_an_image"


class TruncatedImageError(ImageError):
    reason_code = "truncated"


class CorruptImageError(ImageError):
    reason_code = "corrupt"


class ImageTooLargeError(ImageError):
    reason_code = "too_large"


class UnsupportedImageError(ImageError):
    reason_code = "unsupported"


# --- weights / models -----------------------------------------------------------------------------
class WeightsError(NoveltyError):
    """Pretrained weights could not be found, read or mapped onto the architecture."""


class WeightsNotInstalledError(WeightsError, ImportError):
    """The package that ships a backbone's weights is not installed; the message says what to install."""


class UnknownNameError(NoveltyError, KeyError):
    """A registry lookup failed; the message lists the names that exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# --- arrays / fitting -----------------------------------------------------------------------------
class NotFittedError(NoveltyError, RuntimeError, AttributeError):
    """A method or fitted attribute (``index_``, ``calibrator_``…) was used before ``fit``.

    Also an ``AttributeError``, as in scikit-learn, so ``hasattr(detector, "index_")`` is ``False`` before
    fitting instead of raising.
    """


class DimensionMismatchError(NoveltyError, ValueError):
    """Embeddings do not have the dimension the index or scorer was built for."""


class InvalidInputError(NoveltyError, ValueError):
    """An argument has the wrong type, shape, dtype or value."""


class CalibrationError(NoveltyError, ValueError):
    """Calibration data is missing or too small for the requested significance level."""


# --- artifacts ------------------------------------------------------------------------------------
class ArtifactError(NoveltyError):
    """A saved detector could not be read."""


class ArtifactIntegrityError(ArtifactError):
    """A file of a saved detector is missing, unexpected or does not match its recorded sha256."""


class ArtifactVersionError(ArtifactError):
    """A saved detector was written by an incompatible format or backbone."""


class ArtifactChangedError(ArtifactError):
    """A saved detector was replaced or removed while it was being read; reading it again usually succeeds."""


class ImagePermissionError(ImageError, PermissionError):
    """The file exists but this process may not read it (file mode, ACL, or a folder on its path)."""

    reason_code = "permission_denied"
