"""Workspaces and their API keys.

A key looks like `cdk_<8 hex prefix>_<43 url-safe chars>`; only its SHA-256 is stored and the
raw value is returned once, at creation.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from composable_dagster.catalog.common import Name, Spec, get_owned, list_owned, slugify
from composable_dagster.catalog.tables import ApiKey, Workspace
from composable_dagster.destinations.base import WORKSPACE_SLUG
from composable_dagster.errors import ConflictError, InvalidInputError

KEY_SCHEME = "cdk"


class ApiKeyCreate(Spec):
    name: Name


@dataclass(frozen=True, slots=True)
class IssuedKey:
    row: ApiKey
    raw_key: str


def create_workspace(session: Session, *, name: str, slug: str | None = None) -> Workspace:
    slug = slug or slugify(name)
    if not WORKSPACE_SLUG.fullmatch(slug):
        raise InvalidInputError(
            "slug", f"{slug!r}: use 1-64 lower-case letters, digits, '_' or '-', not first"
        )
    if session.scalar(sa.select(Workspace.id).where(Workspace.slug == slug)) is not None:
        raise ConflictError(f"slug: a workspace with slug {slug!r} already exists")
    workspace = Workspace(name=name, slug=slug)
    session.add(workspace)
    session.flush()
    return workspace


def workspace_by_slug(session: Session, slug: str) -> Workspace | None:
    return session.scalar(sa.select(Workspace).where(Workspace.slug == slug))


def all_workspaces(session: Session) -> list[Workspace]:
    return list(session.scalars(sa.select(Workspace).order_by(Workspace.created_at)))


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def issue_api_key(
    session: Session, *, workspace_id: str, spec: ApiKeyCreate, created_by: str | None
) -> IssuedKey:
    prefix = secrets.token_hex(4)
    raw_key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        workspace_id=workspace_id,
        name=spec.name,
        key_prefix=f"{KEY_SCHEME}_{prefix}",
        key_hash=hash_key(raw_key),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return IssuedKey(row=row, raw_key=raw_key)


def find_active_key(session: Session, raw_key: str) -> ApiKey | None:
    return session.scalar(
        sa.select(ApiKey).where(ApiKey.key_hash == hash_key(raw_key), ApiKey.status == "active")
    )


def list_api_keys(session: Session, *, workspace_id: str) -> list[ApiKey]:
    return list_owned(session, ApiKey, workspace_id=workspace_id)


def delete_api_key(session: Session, *, workspace_id: str, key_id: str) -> None:
    session.delete(get_owned(session, ApiKey, workspace_id=workspace_id, row_id=key_id))
