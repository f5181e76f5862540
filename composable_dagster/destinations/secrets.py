"""Secrets in destination configs: which values they are, and the config without them.

A destination type declares where its secrets are (no per-type code here):
- `DestinationType.secret_fields`: config keys whose value is a secret (`signing_secret`),
  or every value of a mapping (`headers.*`);
- `DestinationType.url_fields`: config keys holding a URL whose password
  (`scheme://user:PASSWORD@host`) and secret-looking query parameters (`?password=`,
  `?token=`, `?api_key=`, ...) are secrets; `DestinationType.url_syntax` says how the
  consumer of the URL splits it (`rfc3986`, like HTTP clients and fsspec; `sqlalchemy`,
  whose password runs to the first `@`, slashes included), so the mask covers exactly what
  the consumer will read as the password.

`split_secrets` turns a config into its public form (each secret replaced by `MASK`) and the
secrets by path; the catalog stores the first as the destination's `config` (what the API
shows and what Dagster may see) and the second encrypted (catalog/secret_box.py).
`join_secrets` puts them back together for a connection test or a run. Both work on the
URL's raw text, so a URL split and joined again is byte for byte what was entered.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MASK = "********"
SecretPath = tuple[str, ...]
PASSWORD_PART = "#password"  # path element of a URL's password
QUERY_PART = "?"  # prefix of a path element naming a URL query parameter
# Query parameters whose value is a credential (libpq's `password`, `sslpassword`; API
# tokens, signatures and keys in webhook URLs).
_SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|key|sig|auth|credential|session|code", re.IGNORECASE
)


# SQLAlchemy's own reading of a URL's start (sqlalchemy.engine.url._parse_url).
_SQLALCHEMY_USERINFO = re.compile(r"[\w+]+://(?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?")


class SecretLayout(Protocol):
    secret_fields: tuple[str, ...]
    url_fields: tuple[str, ...]
    url_syntax: str


@dataclass(frozen=True, slots=True)
class _Url:
    """A URL in raw pieces: `head` + `password` + `middle` + `?query` + `#fragment`."""

    head: str  # up to the password: "scheme://user:" (or "scheme://" with no password)
    password: str | None
    middle: str  # "@host:port/path" (or "host:port/path"), up to the query
    query: list[tuple[str, str | None]]  # raw (name, value) pairs; value None: no "="
    fragment: str | None

    @classmethod
    def parse(cls, url: str, syntax: str) -> _Url | None:
        if syntax == "sqlalchemy":
            return cls._parse_sqlalchemy(url)
        scheme_end = url.find("://")
        if scheme_end < 0:
            return None
        authority = scheme_end + 3
        slash = url.find("/", authority)
        at = url.rfind("@", authority, slash if slash >= 0 else len(url))
        # The userinfo ends at the host's "@", so a password may hold "?" or "#".
        colon = url.find(":", authority, at) if at >= 0 else -1
        if colon >= 0:
            head, password, tail = url[: colon + 1], url[colon + 1 : at], url[at:]
        else:
            head, password, tail = url[:authority], None, url[authority:]
        tail, _, fragment = tail.partition("#") if "#" in tail else (tail, "", None)
        middle, has_query, query = tail.partition("?")
        return cls(head, password, middle, _pairs(query) if has_query else [], fragment)

    @classmethod
    def _parse_sqlalchemy(cls, url: str) -> _Url | None:
        match = _SQLALCHEMY_USERINFO.match(url)
        if match is None:
            return None
        if match.group("password") is not None:
            head, password = url[: match.start("password")], match.group("password")
            tail = url[match.end("password") :]
        else:
            head, password, tail = url[: match.end()], None, url[match.end() :]
        # SQLAlchemy has no fragment: a "#" after the password belongs to the query.
        middle, has_query, query = tail.partition("?")
        return cls(head, password, middle, _pairs(query) if has_query else [], None)

    def render(self) -> str:
        url = self.head + (self.password or "") + self.middle
        if self.query:
            url += "?" + "&".join(n if v is None else f"{n}={v}" for n, v in self.query)
        return url if self.fragment is None else f"{url}#{self.fragment}"


def _pairs(query: str) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        pairs.append((name, value if eq else None))
    return pairs


def _url_secrets(url: str, syntax: str) -> Iterator[tuple[str, str]]:
    """(part, raw value) of each secret of `url`: its password, its secret parameters
    (named as the consumer decodes them: `?p%61ssword=` is a password too)."""
    parsed = _Url.parse(url, syntax)
    if parsed is None:
        return
    if parsed.password:
        yield PASSWORD_PART, parsed.password
    for name, value in parsed.query:
        if value and _SECRET_PARAMETER.search(urllib.parse.unquote_plus(name)):
            yield QUERY_PART + name, value


def _replace_url_parts(url: str, values: Mapping[str, str], syntax: str) -> str:
    """`url` with the parts in `values` (as named by `_url_secrets`) set to those values."""
    parsed = _Url.parse(url, syntax)
    if parsed is None:
        return url
    password = values.get(PASSWORD_PART, parsed.password) if parsed.password else None
    query = [
        (name, values.get(QUERY_PART + name, value) if value else value)
        for name, value in parsed.query
    ]
    return _Url(parsed.head, password, parsed.middle, query, parsed.fragment).render()


def iter_secrets(
    layout: SecretLayout, config: Mapping[str, Any]
) -> Iterator[tuple[SecretPath, str]]:
    """Every secret value of `config` with its path (masks included)."""
    for field in layout.secret_fields:
        name, _, rest = field.partition(".")
        value = config.get(name)
        if rest == "*":
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if isinstance(item, str) and item:
                        yield (name, str(key)), item
        elif isinstance(value, str) and value:
            yield (name,), value
    for field in layout.url_fields:
        value = config.get(field)
        if isinstance(value, str):
            for part, secret in _url_secrets(value, layout.url_syntax):
                yield (field, part), secret


def _with_values(
    layout: SecretLayout, config: Mapping[str, Any], values: Mapping[SecretPath, str]
) -> dict[str, Any]:
    """`config` with each secret at a path of `values` replaced by that value."""
    out = dict(config)
    for path, value in values.items():
        if len(path) == 1:
            out[path[0]] = value
        elif path[0] in layout.url_fields:
            out[path[0]] = _replace_url_parts(out[path[0]], {path[1]: value}, layout.url_syntax)
        else:
            out[path[0]] = {**out[path[0]], path[1]: value}
    return out


def split_secrets(
    layout: SecretLayout, config: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[SecretPath, str]]:
    """(public config, secrets): the config with every secret masked, and the secrets.

    Idempotent: a value that is already the mask is kept as a mask and is no secret.
    """
    secrets = {path: value for path, value in iter_secrets(layout, config) if value != MASK}
    return _with_values(layout, config, dict.fromkeys(secrets, MASK)), secrets


def public_config(layout: SecretLayout, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the API shows it and Dagster may see it: every secret masked."""
    return split_secrets(layout, config)[0]


def join_secrets(
    layout: SecretLayout, config: Mapping[str, Any], secrets: Mapping[SecretPath, str]
) -> tuple[dict[str, Any], list[SecretPath]]:
    """(config, paths filled in): each masked value of `config` replaced by the secret stored
    at its path. A mask with no stored secret is left as is (the caller refuses it)."""
    masked = [path for path, value in iter_secrets(layout, config) if value == MASK]
    filled = {path: secrets[path] for path in masked if path in secrets}
    return _with_values(layout, config, filled), list(filled)


def masked_paths(layout: SecretLayout, config: Mapping[str, Any]) -> list[SecretPath]:
    """Paths where `config` holds the mask instead of a secret."""
    return [path for path, value in iter_secrets(layout, config) if value == MASK]


def describe_path(path: SecretPath) -> str:
    """`config.headers.Authorization`, `config.url (password)`, `config.url (?token)`."""
    if len(path) == 2 and path[1] == PASSWORD_PART:
        return f"config.{path[0]} (password)"
    if len(path) == 2 and path[1].startswith(QUERY_PART):
        return f"config.{path[0]} ({path[1]})"
    return "config." + ".".join(path)
