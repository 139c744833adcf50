"""Pseudonymous user ids for the analysts' warehouse.

Analysts see `user_key = HMAC-SHA256(secret, user_id)` (hex, truncated), never the raw id.
A keyed hash, not a plain sha256: user ids are guessable (emails, sequential numbers), and
anyone can hash a guess; without the secret a pseudonym cannot be linked back to an id.

Where the secret comes from:
  * `RECSYS_PSEUDONYM_KEY` (environment): production sets it (from a secret store). The same
    key must be used every night, or pseudonyms change and cross-night analyses break.
  * otherwise, unless `RECSYS_PSEUDONYM_MODE=required`, a random key generated once per
    artifacts directory in `ART/state/pseudonym.key` (mode 0600): fine for dev, demos and
    tests, stable across nights of the same ART.
  * with `RECSYS_PSEUDONYM_MODE=required` and no env key, publishing fails with a message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from shared.errors import RecsysError

KEY_ENV = "RECSYS_PSEUDONYM_KEY"
MODE_ENV = "RECSYS_PSEUDONYM_MODE"
KEY_FILE = Path("state") / "pseudonym.key"
# 16 hex chars = 64 bits: collision odds for 10M users are ~3e-6, and shorter keys are
# easier to read in query results.
KEY_HEX_CHARS = 16


class PseudonymKeyMissing(RecsysError):
    """RECSYS_PSEUDONYM_MODE=required but RECSYS_PSEUDONYM_KEY is not set."""


def load_key(artifacts: Path) -> bytes:
    """The pseudonymisation secret for this artifacts directory (see module docstring)."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return env.encode()
    if os.environ.get(MODE_ENV, "").strip().lower() == "required":
        raise PseudonymKeyMissing(
            f"{MODE_ENV}=required but {KEY_ENV} is not set: set it to the production "
            "pseudonymisation secret (the same value every night) before publishing"
        )
    path = artifacts / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 from the start (not chmod'ed after): never readable by others.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
    try:
        os.link(tmp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


def pseudonym(key: bytes, user_id: str) -> str:
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:KEY_HEX_CHARS]


def pseudonyms(key: bytes, user_ids: Iterable[str | None]) -> list[str | None]:
    """Pseudonyms of many ids; None stays None (anonymous requests, missing ids)."""
    return [None if u is None else pseudonym(key, u) for u in user_ids]
