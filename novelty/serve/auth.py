"""Bearer tokens: where they come from and how a presented one is checked.

Tokens come from files (one per line; blank lines and ``#`` comments ignored) and from environment variables
(comma-separated): ``NOVELTY_API_TOKENS`` for scoring and flagging, ``NOVELTY_ADMIN_TOKENS`` for the admin
endpoints. A presented token is compared with every configured one by ``hmac.compare_digest`` on their
sha256 digests: the time taken depends neither on where the first differing byte is nor on which token (if
any) matched, nor on the tokens' lengths. Tokens never appear in logs or error messages.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

from novelty.errors import InvalidInputError

__all__ = ["ADMIN_ENV", "API_ENV", "TokenSet", "read_tokens"]

API_ENV = "NOVELTY_API_TOKENS"
ADMIN_ENV = "NOVELTY_ADMIN_TOKENS"
MIN_TOKEN_LENGTH = 16


def read_tokens(files: Iterable[str | os.PathLike[str]] = (), env: str | None = None) -> list[str]:
    """Tokens from ``files`` and the comma-separated environment variable ``env``."""
    tokens: list[str] = []
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidInputError(f"cannot read the token file {f}: {e.strerror or e}") from None
        tokens += [t.strip() for t in text.splitlines() if t.strip() and not t.lstrip().startswith("#")]
    if env:
        tokens += [t.strip() for t in os.environ.get(env, "").split(",") if t.strip()]
    for t in tokens:
        if len(t) < MIN_TOKEN_LENGTH or any(c.isspace() for c in t):
            raise InvalidInputError(
                f"a configured token is shorter than {MIN_TOKEN_LENGTH} characters or contains whitespace; "
                "use long random tokens, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    return list(dict.fromkeys(tokens))


class TokenSet:
    """A set of accepted bearer tokens; only their sha256 digests are kept."""

    def __init__(self, tokens: Iterable[str]):
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens]

    def __len__(self) -> int:
        return len(self._digests)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the tokens (constant time over all of them)."""
        if presented is None:
            return False
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        ok = False
        for d in self._digests:  # no early exit: every token is compared
            ok |= hmac.compare_digest(digest, d)
        return ok
