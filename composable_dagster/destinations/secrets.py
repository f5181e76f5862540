"""Secrets in destination configs are write-only: masked when shown, kept when a client
sends the mask back (clients commonly PUT back the object they read)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

MASK = "********"
URL_MASK = "***"  # what SQLAlchemy shows for a hidden password


def mask_config(destination_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the API shows it."""
    shown = dict(config)
    if destination_type == "webhook":
        shown["headers"] = {k: MASK for k in (config.get("headers") or {})}
        if config.get("signing_secret"):
            shown["signing_secret"] = MASK
    elif destination_type == "postgres" and config.get("url"):
        shown["url"] = sa.make_url(config["url"]).render_as_string(hide_password=True)
    return shown


def unmask_config(
    destination_type: str, new: Mapping[str, Any], stored: Mapping[str, Any]
) -> dict[str, Any]:
    """`new` with every masked value replaced by the stored secret it stands for."""
    merged = dict(new)
    if destination_type == "webhook":
        headers = dict(merged.get("headers") or {})
        old_headers = stored.get("headers") or {}
        for name, value in headers.items():
            if value == MASK and name in old_headers:
                headers[name] = old_headers[name]
        merged["headers"] = headers
        if merged.get("signing_secret") == MASK:
            merged["signing_secret"] = stored.get("signing_secret")
    elif destination_type == "postgres" and isinstance(merged.get("url"), str):
        url = sa.make_url(merged["url"])
        if url.password == URL_MASK and stored.get("url"):
            password = sa.make_url(stored["url"]).password
            merged["url"] = url.set(password=password).render_as_string(hide_password=False)
    return merged
