"""Normalise-then-SHA-256 of personal identifiers, as customer-match destinations require.

Ad platforms match uploaded identifiers against their users by comparing SHA-256 digests, so
the digest of `" John.Doe@Gmail.com"` must equal theirs of `"johndoe@gmail.com"`. The rules:

- Email (Google Ads / Campaign Manager 360 "normalization and hashing"): trim surrounding
  whitespace, lowercase, and for `gmail.com` / `googlemail.com` remove every period of the
  local part. Google's documentation asks for nothing more; in particular it does not strip a
  `+tag`, so neither do we (a digest that differs from Google's own normalisation would
  never match). The domain is kept as given (`googlemail.com` is not rewritten).
- Phone: E.164, i.e. `+` followed by 8 to 15 digits (the country code first). Spaces,
  dashes, dots, slashes and parentheses are removed; a leading international prefix `00` is
  read as `+`. A number without `+`/`00` is read as already carrying its country code unless
  `default_country_code` is given, in which case it is a national number: one leading trunk
  `0` is dropped and the country code prefixed. A value that cannot be made E.164 (letters,
  too few or too many digits, a national number without a default country) normalises to
  None, so no digest of garbage ever reaches a destination.
- Values that already are SHA-256 hex digests (64 hex characters) are never hashed again;
  they are only lowercased, the form every platform expects.

Unicode: values are NFKC-normalised first (full-width digits and plus sign become ASCII), and
surrounding whitespace includes non-breaking and zero-width spaces.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Literal

import pyarrow as pa

PiiKind = Literal["email", "phone"]

# Destination field names that mean "SHA-256 of a normalised identifier" (the seed example
# of a customer-match destination uses the camelCase names).
HASHED_FIELDS: Mapping[str, PiiKind] = {
    "hashedEmail": "email",
    "hashed_email": "email",
    "hashedPhoneNumber": "phone",
    "hashed_phone_number": "phone",
    "hashedPhone": "phone",
    "hashed_phone": "phone",
}

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# Characters people put between digits of a phone number.
_PHONE_SEPARATORS = re.compile(r"[\s\-./()]")
_E164_DIGITS = re.compile(r"[1-9][0-9]{7,14}")
# str.strip() already covers Unicode spaces (NBSP, ideographic space); these are not spaces.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def _trim(value: str) -> str:
    return value.strip().strip(_INVISIBLE).strip()


def is_sha256_hex(value: str) -> bool:
    """True when `value` (surrounding whitespace ignored) is a SHA-256 hex digest."""
    return _SHA256_HEX.fullmatch(_trim(value)) is not None


def sha256_hex(value: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of `value` (no normalisation)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def normalize_email(value: str) -> str | None:
    """Trimmed, lowercased email; periods of Gmail local parts removed. None when empty."""
    email = _trim(unicodedata.normalize("NFKC", value)).lower()
    if not email:
        return None
    local, at, domain = email.rpartition("@")
    if at and domain in _GMAIL_DOMAINS:
        email = f"{local.replace('.', '')}@{domain}"
    return email


def normalize_phone(value: str, *, default_country_code: str | None = None) -> str | None:
    """The E.164 form of `value` (`+` and 8-15 digits), or None when it cannot be derived.

    Args:
        value: A phone number as people write it. A `(0)` (the optional trunk prefix in
            `+44 (0)20 7946 0958`) is removed, since it is never dialled after a country code.
        default_country_code: Country calling code (`"44"` or `"+44"`) for numbers written
            without `+` or `00`; those are then national numbers whose single leading `0`
            (trunk prefix) is dropped. Without it, such numbers must start with their
            country code.
    """
    text = _trim(unicodedata.normalize("NFKC", value)).replace("(0)", "")
    text = _PHONE_SEPARATORS.sub("", text)
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    elif default_country_code is not None:
        country = default_country_code.lstrip("+")
        digits = country + (text[1:] if text.startswith("0") else text)
    else:
        digits = text
    if not digits.isascii() or _E164_DIGITS.fullmatch(digits) is None:
        return None
    return f"+{digits}"


def _hash(value: str | None, normalize: Callable[[str], str | None]) -> str | None:
    if value is None:
        return None
    if is_sha256_hex(value):
        return _trim(value).lower()
    normalized = normalize(value)
    return None if normalized is None else sha256_hex(normalized)


def hash_email(value: str | None) -> str | None:
    """SHA-256 hex of the normalised email; digests pass through lowercased; None stays None."""
    return _hash(value, normalize_email)


def hash_phone(value: str | None, *, default_country_code: str | None = None) -> str | None:
    """SHA-256 hex of the E.164 phone (None if it has none); digests pass through lowercased."""
    return _hash(value, lambda v: normalize_phone(v, default_country_code=default_country_code))


def apply_pii(
    table: pa.Table,
    hashing: Mapping[str, PiiKind],
    *,
    default_country_code: str | None = None,
) -> pa.Table:
    """`table` with each column named in `hashing` replaced by its normalised SHA-256 digests.

    Columns keep their position and become `string`; nulls stay null. Non-string values (a
    phone stored as an integer) are hashed from their decimal text.

    Raises:
        KeyError: a column in `hashing` is not in `table`.
    """
    hashers: dict[PiiKind, Callable[[str | None], str | None]] = {
        "email": hash_email,
        "phone": lambda v: hash_phone(v, default_country_code=default_country_code),
    }
    for name, kind in hashing.items():
        index = table.schema.get_field_index(name)
        if index < 0:
            raise KeyError(f"column {name!r} to hash ({kind}) is not in the table")
        hasher = hashers[kind]
        values = table.column(index).to_pylist()
        hashed = pa.array([hasher(None if v is None else str(v)) for v in values], type=pa.string())
        table = table.set_column(index, pa.field(name, pa.string()), hashed)
    return table
