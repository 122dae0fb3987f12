"""The errors of the model registry, shared by every backend: each message says what is wrong and how to fix it."""

from __future__ import annotations

from novelty.errors import NoveltyError

__all__ = [
    "AliasError",
    "NotARegistryError",
    "PromotionRefusedError",
    "RegistryError",
    "RegistryNotFoundError",
    "RollbackError",
    "UnknownVersionError",
]


class RegistryError(NoveltyError):
    """Something about a model registry is wrong; the message says what and how to fix it."""


class RegistryNotFoundError(RegistryError, FileNotFoundError):
    """No registry at the path given."""


class NotARegistryError(RegistryError):
    """The path exists but is not a novelty registry (or its marker file is damaged)."""


class UnknownVersionError(RegistryError, KeyError):
    """No such version (or alias) in the registry; the message lists what exists."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AliasError(RegistryError):
    """An alias name is invalid, or an alias points nowhere (a dangling or foreign symlink)."""


class PromotionRefusedError(RegistryError):
    """``promote`` without a passing comparison of this challenger against the current champion."""


class RollbackError(RegistryError):
    """``rollback`` with no earlier champion to go back to."""
