"""Destination secrets encrypted at rest: Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`.

The key comes from `COMPOSABLE_SECRET_KEY` (one or more Fernet keys, comma-separated: the
first encrypts, every one decrypts) or, when that is unset, from `$COMPOSABLE_HOME/secret.key`,
created with mode 0600 the first time it is needed. Rotation: put the new key first in
`COMPOSABLE_SECRET_KEY` (`new,old`), run `composable secrets rotate` (re-encrypts every stored
secret with the new key), then drop the old one.

A sealed value is the Fernet token of a JSON list of `[path, value]` pairs, `path` being the
config path of the secret (`["headers", "Authorization"]`, `["url", "#password"]`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from composable_dagster.errors import DomainError
from composable_dagster.private_files import create_private_file_once, ensure_private_file
from composable_dagster.settings import Settings

SecretPath = tuple[str, ...]


class SecretKeyError(DomainError):
    """The secret key is missing, malformed, or not the one the catalog was sealed with."""


class SecretBox:
    """Seals and opens the secrets of one destination config."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no secret key configured")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as err:
            raise SecretKeyError(
                "COMPOSABLE_SECRET_KEY: not a Fernet key (32 url-safe base64 bytes; make one "
                'with `python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`)'
            ) from err

    def seal(self, secrets: Mapping[SecretPath, str]) -> str | None:
        """The ciphertext of `secrets` (None when there are none)."""
        if not secrets:
            return None
        plain = json.dumps([[list(path), value] for path, value in sorted(secrets.items())])
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def open(self, sealed: str | None) -> dict[SecretPath, str]:
        """The secrets in `sealed` (nothing for None)."""
        if not sealed:
            return {}
        plain = _unsealed(self._fernet.decrypt, sealed)
        return {tuple(path): value for path, value in json.loads(plain)}

    def rotate(self, sealed: str | None) -> str | None:
        """`sealed` re-encrypted with the first key."""
        return _unsealed(self._fernet.rotate, sealed).decode("ascii") if sealed else None


def _unsealed(operation: Callable[[bytes], bytes], sealed: str) -> bytes:
    try:
        return operation(sealed.encode("ascii"))
    except InvalidToken as err:
        raise SecretKeyError(
            "a stored secret cannot be decrypted with COMPOSABLE_SECRET_KEY (or "
            "$COMPOSABLE_HOME/secret.key): the key changed without `composable secrets "
            "rotate`; restore the old key (as a second key) or re-enter the secret"
        ) from err


def load_secret_box(*, keys: str | None, key_file: Path) -> SecretBox:
    """The box for `keys` (comma-separated Fernet keys), or for the key file, created if
    missing (mode 0600)."""
    if keys:
        return SecretBox([k.strip().encode("ascii") for k in keys.split(",") if k.strip()])
    if not key_file.exists():
        create_private_file_once(key_file, Fernet.generate_key().decode("ascii") + "\n")
    ensure_private_file(key_file)  # an older, wider mode is tightened
    key = key_file.read_text().strip()
    if not key:
        raise SecretKeyError(f"{key_file} is empty; delete it to have a new key generated")
    return SecretBox([key.encode("ascii")])


def secret_box_for(settings: Settings) -> SecretBox:
    """The box of `settings` (one per key and key file per process)."""
    keys = settings.secret_key.get_secret_value() if settings.secret_key else None
    return _cached_box(keys, settings.secret_key_file)


@lru_cache(maxsize=8)
def _cached_box(keys: str | None, key_file: Path) -> SecretBox:
    return load_secret_box(keys=keys, key_file=key_file)
